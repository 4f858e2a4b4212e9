//go:build unix

package sqibssim

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var screenshotOut = flag.String("screenshot", "", "TestBrowser also writes its screenshot of the populated page to this file (docs/sqibs-simulator.png: go test ./internal/local/sqibssim -run TestBrowser -screenshot=$PWD/docs/sqibs-simulator.png)")

// chromiumPath finds Debian's chromium (or $CHROMIUM), or skips: CI
// machines may have none. REQUIRE_CHROMIUM=1 makes its absence a failure.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("REQUIRE_CHROMIUM") == "1" {
		t.Fatal("chromium is not on PATH but REQUIRE_CHROMIUM=1 (apt-get install chromium)")
	}
	t.Skip("chromium is not on PATH: the simulator page's headless-browser check is skipped (apt-get install chromium, or CHROMIUM=/path/to/chrome; REQUIRE_CHROMIUM=1 makes this a failure)")
	return ""
}

// headless runs chromium once on u with args and returns what it printed
// on stdout (the DOM, with --dump-dom).
func headless(t *testing.T, bin, u string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	argv := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--no-first-run", "--user-data-dir=" + t.TempDir(), // no shared profile: runs stay apart
	}, args...)
	cmd := exec.CommandContext(ctx, bin, append(argv, u)...)
	// Debian's chromium is a shell script that does not exec the browser:
	// on a timeout, end the whole process group, not the script alone.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s %s: %v\n%s", strings.Join(args, " "), u, err, lastLines(stderr.String(), 20))
	}
	return stdout.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// autoSubmit serves a page that POSTs a form to action as soon as it
// loads, as a user pressing a reset button would.
func autoSubmit(action string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><form method="post" action="%s"></form><script>document.forms[0].submit()</script>`, action)
	}
}

const xssTitle = `<script>document.body.setAttribute("data-xss","ran")</script>`

// populate sends what the screenshot shows through the process endpoint,
// as the bridge would: incidents open and resolved with their history (a
// simulated 503 the bridge retried among them), a resolve for an incident
// that never opened, and one dead letter.
func populate(t *testing.T, s *Server, base string) {
	t.Helper()
	at := time.Now().UTC().Add(-2 * time.Minute)
	s.SetDeadLetters(func() []DeadLetter {
		return []DeadLetter{{MessageID: "7f9c2d4e-51b3-4c8a-9e0f-3a6b1d2c8e47", Reason: "sqibs_rejected", IncidentID: "acme/infra/main",
			Event: "build.finished", Build: 77, Receives: 1, At: at}}
	})
	build := func(id, status, desc string, n int) string {
		pipeline := strings.Split(id, "/")[1]
		return evURL(id, status, desc, fmt.Sprintf("https://buildkite.com/acme/%s/builds/%d", pipeline, n), n)
	}
	var faultNext atomic.Bool
	s.SetFault(func(int, []byte) *Fault {
		if faultNext.Swap(false) {
			return &Fault{Status: http.StatusServiceUnavailable}
		}
		return nil
	})
	send := func(body string) {
		t.Helper()
		if r := post(t, base, "?from=Buildkite", body); r.code >= 300 && r.code != http.StatusServiceUnavailable {
			t.Fatalf("populate: status %d: %s", r.code, r.raw)
		}
	}
	send(build("acme/deploy-api/main", "FAILED", "deploy-api #1234 failed on main: Fix flaky test", 1234))
	send(build("acme/deploy-api/main", "FAILED", "deploy-api #1235 failed on main: Retry the flaky test", 1235))
	send(build("acme/deploy-api/main", "PASSED", "deploy-api #1236 passed on main: Quarantine the flaky test", 1236))
	send(build("acme/docs/main", "FAILED", "docs #310 failed on main: Link checker", 310))
	send(build("acme/docs/main", "PASSED", "docs #311 passed on main: Fix the broken link", 311))
	send(build("acme/web/main#e2e", "ERROR", "web #88 e2e timed out on main: Bump Playwright", 88))
	send(build("acme/payments/release", "FAILED", "payments #402 failed on release: Currency rounding", 402))
	faultNext.Store(true)
	send(build("acme/payments/release", "FAILED", "payments #403 failed on release: Round half even", 403)) // 503, then the retry:
	send(build("acme/payments/release", "FAILED", "payments #403 failed on release: Round half even", 403))
	send(build("acme/legacy/main", "PASSED", "legacy #9 passed on main: Nothing was open", 9))
	s.SetFault(nil)
}

// TestBrowser loads the page in headless Chromium: the DOM after load holds
// the incidents, their history rows, the dead letter and the reset button;
// a title holding a script is text, not run; a cross-site form cannot reset
// the simulator, the page's own form does. It also takes the screenshot
// that docs/sqibs-simulator.png is made from.
func TestBrowser(t *testing.T) {
	bin := chromiumPath(t)
	s := New(token)
	mux := http.NewServeMux()
	mux.Handle("/", s)
	mux.HandleFunc("GET /test/reset-from-here", autoSubmit("/reset"))
	ts := httptest.NewServer(mux)
	t.Cleanup(func() { s.Close(); ts.Close() })
	populate(t, s, ts.URL)

	t.Run("screenshot", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "page.png")
		headless(t, bin, ts.URL+"/", "--screenshot="+file, "--window-size=1200,900", "--hide-scrollbars")
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if sz := img.Bounds().Size(); sz.X != 1200 || sz.Y != 900 {
			t.Errorf("screenshot is %v, want 1200x900", sz)
		}
		// The open badges and the Reset button are #b00020: the styles applied.
		if n := countNear(img, 0xb0, 0x00, 0x20); n < 200 {
			t.Errorf("screenshot has %d pixels of the open red, want the page's styles rendered", n)
		}
		if *screenshotOut != "" {
			if err := os.WriteFile(*screenshotOut, b, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("wrote %s (%d bytes)", *screenshotOut, len(b))
		}
	})

	post(t, ts.URL, "", ev("acme/evil/main", "FAILED", xssTitle))
	h := s.History()
	wantCalls := len(h.Unmatched)
	for _, in := range h.Incidents {
		wantCalls += len(in.Calls)
	}

	t.Run("DOM after load", func(t *testing.T) {
		dom := headless(t, bin, ts.URL+"/", "--dump-dom")
		for _, want := range []string{
			"<title>SQIBS simulator (3 open)</title>",
			`<button type="submit" id="reset"`,
			`<a href="https://buildkite.com/acme/deploy-api/builds/1234" rel="noreferrer">#1234</a>`,
			">duplicate trigger<", ">simulated fault<", ">503<", ">nothing to resolve<",
			"Buildkite - payments #402 failed on release: Currency rounding",
			`<tr class="dead-letter">`, "7f9c2d4e-51b3-4c8a-9e0f-3a6b1d2c8e47", "sqibs_rejected", "acme/infra/main",
			`&lt;script&gt;document.body.setAttribute("data-xss","ran")&lt;/script&gt;`,
		} {
			if !strings.Contains(dom, want) {
				t.Errorf("DOM lacks %q", want)
			}
		}
		if n := strings.Count(dom, `<tr class="call">`); n != wantCalls {
			t.Errorf("DOM has %d call rows, want %d", n, wantCalls)
		}
		if strings.Contains(dom, "<script") {
			t.Error("the title's script became an element")
		}
		if regexp.MustCompile(`<body[^>]*data-xss`).MatchString(dom) {
			t.Error("the title's script ran")
		}
		// Open incidents first, newest first; then the resolved ones.
		order := []string{`id="open"`, "acme/evil/main", "acme/payments/release", "acme/web/main#e2e",
			`id="resolved"`, "acme/docs/main", "acme/deploy-api/main", `id="unmatched"`, "acme/legacy/main"}
		last := -1
		for _, w := range order {
			i := strings.Index(dom, w)
			if i < last {
				t.Errorf("%q is out of order (want %v)", w, order)
			}
			last = max(last, i)
		}
		if m := regexp.MustCompile(`(?s)<article class="incident open">.*?</article>`).FindAllString(dom, -1); len(m) != 3 || !strings.Contains(m[0], `<span class="badge">open</span>`) {
			t.Errorf("%d incidents marked open, want 3 with a badge", len(m))
		}
	})

	t.Run("a cross-site form cannot reset", func(t *testing.T) {
		// Another site (localhost is not 127.0.0.1) posting to the simulator.
		evil := httptest.NewServer(autoSubmit(ts.URL + "/reset"))
		defer evil.Close()
		dom := headless(t, bin, strings.Replace(evil.URL, "127.0.0.1", "localhost", 1)+"/", "--dump-dom")
		if !strings.Contains(dom, "cross-origin request refused") {
			t.Errorf("the browser did not get the 403: %s", dom)
		}
		if got := len(s.Incidents()); got != len(h.Incidents) {
			t.Fatalf("%d incidents after a refused reset, want %d", got, len(h.Incidents))
		}
	})

	t.Run("the page's reset empties it", func(t *testing.T) {
		dom := headless(t, bin, ts.URL+"/test/reset-from-here", "--dump-dom") // POST /reset, 303, GET /
		if len(s.Incidents()) != 0 || s.Calls() != 0 {
			t.Fatalf("after reset: %d incidents, %d calls", len(s.Incidents()), s.Calls())
		}
		for _, want := range []string{"<title>SQIBS simulator (0 open)</title>", "0 open, 0 resolved, 0 calls processed, 0 dead letters",
			"1 older dead letters are hidden", `id="reset"`} {
			if !strings.Contains(dom, want) {
				t.Errorf("DOM after reset lacks %q", want)
			}
		}
		for _, gone := range []string{`<tr class="call">`, `<article`, "acme/", `<tr class="dead-letter">`} {
			if strings.Contains(dom, gone) {
				t.Errorf("DOM after reset still has %q", gone)
			}
		}
	})
}

// countNear counts the pixels within a small distance of the colour r, g, b.
func countNear(img image.Image, r, g, b uint8) int {
	n := 0
	near := func(a uint32, want uint8) bool { d := int(a>>8) - int(want); return d > -24 && d < 24 }
	bounds := img.Bounds()
	for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
		for x := bounds.Min.X; x < bounds.Max.X; x++ {
			pr, pg, pb, _ := img.At(x, y).RGBA()
			if near(pr, r) && near(pg, g) && near(pb, b) {
				n++
			}
		}
	}
	return n
}
