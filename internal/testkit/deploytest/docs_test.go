package deploytest

// Every relative link in the project's Markdown (README.md, CONTRIBUTING.md,
// events/README.md, docs/*.md) must lead somewhere: the file must exist and,
// where the link names an anchor, the target file must have a heading with
// that anchor under GitHub's rules. The README is the front door and its
// depth lives in docs/, so a heading renamed on one side must not leave a
// dead link on the other.

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"
)

func TestDocLinks(t *testing.T) {
	root := docRoot(t)
	files := []string{"README.md", "CONTRIBUTING.md", filepath.Join("events", "README.md")}
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		rel, _ := filepath.Rel(root, d)
		files = append(files, rel)
	}
	if len(docs) == 0 {
		t.Fatal("no docs/*.md found: the link check would check nothing there")
	}
	links := 0
	for _, f := range files {
		n, problems := checkDocLinks(root, f)
		links += n
		for _, p := range problems {
			t.Errorf("%s: %s", f, p)
		}
	}
	if links < 20 {
		t.Errorf("only %d relative links found in %d files: is the parser broken?", links, len(files))
	}
}

// The checker itself, on a small tree with one good and several dead links,
// so TestDocLinks cannot pass by finding nothing.
func TestDocLinksFindsDeadLinks(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("docs/ops.md", "# Ops\n\n## Retry policy\n\n## moto's limits\n\n## Retry policy\n")
	write("README.md", strings.Join([]string{
		"# Top",
		"## Quick start",
		"[ok](docs/ops.md#retry-policy) [ok](docs/ops.md#retry-policy-1) [ok](docs/ops.md#motos-limits)",
		"[ok](#quick-start) [ok](docs/ops.md) [ok](https://example.com/x#y) ![ok](docs/ops.md)",
		"`[not a link](missing.md)`",
		"```",
		"[not a link](missing.md)",
		"```",
		"[dead file](docs/missing.md)",
		"[dead anchor](docs/ops.md#retry)",
		"[dead self anchor](#quick-start-1)",
		"![dead image](docs/missing.png)",
		"a [wrapped",
		"dead link](docs/ops.md#wrapped) and `a wrapped",
		"code span [not a link](missing.md)`",
	}, "\n"))
	n, problems := checkDocLinks(dir, "README.md")
	if n != 11 {
		t.Errorf("found %d relative links, want 11", n)
	}
	want := []string{
		`9: link "docs/missing.md": no such file`,
		`10: link "docs/ops.md#retry": docs/ops.md has no heading with anchor "retry"`,
		`11: link "#quick-start-1": README.md has no heading with anchor "quick-start-1"`,
		`12: link "docs/missing.png": no such file`,
		`13: link "docs/ops.md#wrapped": docs/ops.md has no heading with anchor "wrapped"`,
	}
	if !slices.Equal(problems, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(problems, "\n"), strings.Join(want, "\n"))
	}
}

func TestGitHubAnchor(t *testing.T) {
	for heading, want := range map[string]string{
		"Buildkite REST API (optional)":  "buildkite-rest-api-optional",
		"moto's limits":                  "motos-limits",
		"`make dev` in depth":            "make-dev-in-depth",
		"8. Figures `make bench` prints": "8-figures-make-bench-prints",
		"5b. Incident state (`STATE_TABLE`; an in-process store in `make dev`)": "5b-incident-state-state_table-an-in-process-store-in-make-dev",
		"The retry tail: what an SQIBS outage costs":                            "the-retry-tail-what-an-sqibs-outage-costs",
		"Design: Buildkite → Callgoose SQIBS bridge":                            "design-buildkite--callgoose-sqibs-bridge",
		"A [linked](x.md) **bold** heading":                                     "a-linked-bold-heading",
	} {
		if got := githubAnchor(heading); got != want {
			t.Errorf("githubAnchor(%q) = %q, want %q", heading, got, want)
		}
	}
}

// docRoot is the directory of go.mod above this package, wherever the
// package sits in the tree.
func docRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

var (
	// [text](target) and ![alt](target), with an optional "title".
	docLinkRe = regexp.MustCompile(`!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	// A code span: its content is not Markdown.
	docCodeSpanRe = regexp.MustCompile("`+[^`]*`+")
	// An ATX heading.
	docHeadingRe = regexp.MustCompile(`^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$`)
	// An explicit HTML anchor.
	docHTMLAnchorRe = regexp.MustCompile(`<a\s+(?:name|id)="([^"]+)"`)
	// Markdown that renders as its text.
	docInlineLinkRe = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)
	docSchemeRe     = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
)

// checkDocLinks reads root/file and returns how many relative links it has
// and what is wrong with them.
func checkDocLinks(root, file string) (int, []string) {
	body, err := os.ReadFile(filepath.Join(root, file))
	if err != nil {
		return 0, []string{err.Error()}
	}
	var problems []string
	n := 0
	for _, para := range docParagraphs(string(body)) {
		// Code spans are blanked, not removed, so offsets still give lines.
		text := docCodeSpanRe.ReplaceAllStringFunc(para.text, func(s string) string {
			return strings.Map(func(r rune) rune {
				if r == '\n' {
					return r
				}
				return ' '
			}, s)
		})
		for _, m := range docLinkRe.FindAllStringSubmatchIndex(text, -1) {
			target := text[m[2]:m[3]]
			line := docLine{para.n + strings.Count(text[:m[0]], "\n"), ""}
			if docSchemeRe.MatchString(target) || strings.HasPrefix(target, "//") {
				continue // absolute URL: not checked here
			}
			n++
			path, anchor, _ := strings.Cut(target, "#")
			dest := file // a bare #anchor is this file
			if path != "" {
				dest = filepath.Join(filepath.Dir(file), filepath.FromSlash(path))
				if _, err := os.Stat(filepath.Join(root, dest)); err != nil {
					problems = append(problems, fmt.Sprintf("%d: link %q: no such file", line.n, target))
					continue
				}
			}
			if anchor == "" {
				continue
			}
			if !strings.HasSuffix(dest, ".md") {
				problems = append(problems, fmt.Sprintf("%d: link %q: an anchor into a file that is not Markdown", line.n, target))
				continue
			}
			anchors, err := docAnchors(filepath.Join(root, dest))
			if err != nil {
				problems = append(problems, fmt.Sprintf("%d: link %q: %v", line.n, target, err))
				continue
			}
			if !anchors[strings.ToLower(anchor)] {
				problems = append(problems, fmt.Sprintf("%d: link %q: %s has no heading with anchor %q",
					line.n, target, filepath.ToSlash(dest), anchor))
			}
		}
	}
	return n, problems
}

// docParagraphs are the runs of consecutive non-blank prose lines, each
// joined by newlines and numbered by its first line: a link may wrap.
func docParagraphs(text string) []docLine {
	var out []docLine
	for _, l := range docProseLines(text) {
		if strings.TrimSpace(l.text) == "" {
			continue
		}
		if k := len(out) - 1; k >= 0 && out[k].n+strings.Count(out[k].text, "\n")+1 == l.n {
			out[k].text += "\n" + l.text
			continue
		}
		out = append(out, l)
	}
	return out
}

// docLine is one line of a Markdown file and its number.
type docLine struct {
	n    int
	text string
}

// docProseLines are the lines of a Markdown text outside fenced code blocks.
func docProseLines(text string) []docLine {
	var out []docLine
	fence := ""
	for i, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimLeft(line, " ")
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) && strings.Trim(trimmed, fence[:1]+" \t") == "" {
				fence = ""
			}
			continue
		}
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			fence = trimmed[:3]
			continue
		}
		out = append(out, docLine{i + 1, line})
	}
	return out
}

// docAnchors are the anchors GitHub gives the headings of a Markdown file,
// with the -1, -2 suffixes of repeated headings, plus explicit <a name>s.
func docAnchors(path string) (map[string]bool, error) {
	body, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	anchors := map[string]bool{}
	seen := map[string]int{}
	for _, line := range docProseLines(string(body)) {
		for _, m := range docHTMLAnchorRe.FindAllStringSubmatch(line.text, -1) {
			anchors[strings.ToLower(m[1])] = true
		}
		m := docHeadingRe.FindStringSubmatch(line.text)
		if m == nil {
			continue
		}
		a := githubAnchor(m[2])
		if k := seen[a]; k > 0 {
			anchors[fmt.Sprintf("%s-%d", a, k)] = true
		} else {
			anchors[a] = true
		}
		seen[a]++
	}
	return anchors, nil
}

// githubAnchor is the anchor GitHub makes of a heading: the rendered text
// lowercased, every character that is not a letter, digit, mark, '-', '_'
// or space dropped, and each space made a '-'.
func githubAnchor(heading string) string {
	text := docInlineLinkRe.ReplaceAllString(heading, "$1")
	text = strings.NewReplacer("`", "", "*", "").Replace(text)
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(text)) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.Is(unicode.Mn, r):
			b.WriteRune(r)
		}
	}
	return b.String()
}
