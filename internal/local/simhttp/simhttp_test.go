package simhttp

import (
	"net/http/httptest"
	"testing"
)

func TestBearer(t *testing.T) {
	for h, want := range map[string]string{
		"Bearer abc": "abc", "bearer  abc ": "abc", " Bearer x y": "x y",
		"Basic abc": "", "Bearer": "", "": "", "abc": "",
	} {
		if got := Bearer(h); got != want {
			t.Errorf("Bearer(%q) = %q, want %q", h, got, want)
		}
	}
}

func TestWriteJSON(t *testing.T) {
	w := httptest.NewRecorder()
	WriteJSON(w, 404, map[string]string{"message": "No build found"}, `{}`)
	if w.Code != 404 || w.Body.String() != "{\"message\":\"No build found\"}\n" || w.Header().Get("Content-Type") != "application/json" {
		t.Errorf("%d %q %v", w.Code, w.Body, w.Header())
	}
	w = httptest.NewRecorder()
	WriteJSON(w, 200, func() {}, `{"error":"internal error"}`)
	if w.Code != 500 || w.Body.String() != "{\"error\":\"internal error\"}\n" {
		t.Errorf("unencodable: %d %q", w.Code, w.Body)
	}
}

func TestToken(t *testing.T) {
	tok := NewToken("s3cret")
	for _, c := range []struct {
		offered []string
		want    bool
	}{
		{[]string{"s3cret"}, true},
		{[]string{"", "s3cret"}, true}, // the second place (a query token) counts
		{[]string{"wrong", "s3cret"}, true},
		{[]string{"s3cre"}, false},
		{[]string{"s3cret "}, false},
		{[]string{"", ""}, false},
		{nil, false},
	} {
		if got := tok.Matches(c.offered...); got != c.want {
			t.Errorf("Matches(%q) = %v, want %v", c.offered, got, c.want)
		}
	}
	if NewToken("").Matches("", "x") {
		t.Error("an empty token matched")
	}
}
