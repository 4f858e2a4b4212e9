package buildtags

import (
	"os"
	"regexp"
	"testing"
)

// The Makefile builds what deploys; everything else must build the same.
func TestMakefileUsesTheSameTags(t *testing.T) {
	mk, err := os.ReadFile("../../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^GOFLAGS_BUILD\s*:=.*-tags\s+(\S+)`).FindSubmatch(mk)
	if m == nil {
		t.Fatal("Makefile: no GOFLAGS_BUILD line with -tags")
	}
	got := string(m[1])
	if got == "$(GOTAGS)" { // the tags are named once, for make build and make vulncheck
		v := regexp.MustCompile(`(?m)^GOTAGS\s*:=\s*(\S+)`).FindSubmatch(mk)
		if v == nil {
			t.Fatal("Makefile: GOFLAGS_BUILD uses $(GOTAGS), which is not set")
		}
		got = string(v[1])
	}
	if got != Lambda {
		t.Errorf("Makefile GOFLAGS_BUILD -tags %s, buildtags.Lambda %s", got, Lambda)
	}
}
