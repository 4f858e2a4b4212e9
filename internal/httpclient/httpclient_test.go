package httpclient

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestNoRedirects(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/moved" {
			http.Redirect(w, r, "/target", http.StatusFound)
			return
		}
		w.WriteHeader(http.StatusTeapot)
	}))
	defer srv.Close()
	mine := &http.Client{}
	for _, hc := range []*http.Client{NoRedirects(nil, 4), NoRedirects(mine, 4)} {
		resp, err := hc.Get(srv.URL + "/moved")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound {
			t.Errorf("status %d: the redirect was followed", resp.StatusCode)
		}
	}
	if mine.CheckRedirect != nil {
		t.Error("the caller's client was changed, not copied")
	}
	if tr := New(7).Transport.(*http.Transport); tr.MaxIdleConnsPerHost != 7 || tr.TLSHandshakeTimeout == 0 {
		t.Errorf("transport %+v", tr)
	}
}
