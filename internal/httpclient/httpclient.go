// Package httpclient builds the outbound HTTP client the functions' API
// clients (SQIBS, Buildkite) share the settings of.
package httpclient

import (
	"net"
	"net/http"
	"time"
)

// New keeps connections alive between Lambda invocations, up to perHost
// idle ones to a host, and bounds the connect and TLS phases; each request's
// context bounds the rest.
func New(perHost int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 64
	t.MaxIdleConnsPerHost = perHost
	t.IdleConnTimeout = 90 * time.Second
	t.TLSHandshakeTimeout = 5 * time.Second
	t.ExpectContinueTimeout = time.Second
	t.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	return &http.Client{Transport: t}
}

// NoRedirects returns a copy of hc (New(perHost) when nil) that answers a
// redirect with the 3xx itself instead of following it: the APIs called
// here answer directly, and a followed redirect would take the request, or
// turn a POST into a GET that looks like success, elsewhere.
func NoRedirects(hc *http.Client, perHost int) *http.Client {
	if hc == nil {
		hc = New(perHost)
	} else {
		cp := *hc
		hc = &cp
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return hc
}
