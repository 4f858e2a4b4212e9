// Command vulncheck builds a local copy of the Go vulnerability database for
// `make vulncheck` (scripts/vulncheck/vulncheck.sh), from the
// golang.org/x/vulndb module as the Go module proxy serves it: this project's
// machines reach the module proxy but not vuln.go.dev.
//
//	go -C scripts/vulncheck run . -cache ../../bin/vulndb [-version latest|v0.0.0-...]
//
// It prints a summary line on stderr and the database's file:// URL, the
// argument of govulncheck's -db flag, on stdout.
//
// The module's data/osv/GO-*.json are the OSV entries the public database is
// made of. The database written is the v1 layout that govulncheck's file://
// client reads (golang.org/x/vuln/internal/client), built the way
// golang.org/x/vulndb/internal/database (cmd/indexdb) builds it:
//
//	index/db.json       {"modified": ...}
//	index/modules.json  [{"path", "vulns": [{"id", "modified", "fixed"}]}], by path, vulns by id
//	index/vulns.json    [{"id", "modified", "aliases"}], by id
//	ID/GO-YYYY-NNNN.json  each entry, as in data/osv (compacted)
//
// One difference: the module zip has no git history, and upstream fills each
// entry's modified (and a missing published) time from the commit dates of
// its file, so in the zip every "modified" is 0001-01-01. The entries are
// kept as they are; index/db.json says the time of the vulndb commit (the
// pseudo-version's timestamp), which no entry's change can be later than.
// The entry dates printed come from data/reports/GO-*.yaml, source.created:
// when the report was made. For vulndb v0.0.0-20261105234957-e22db6528018
// index/modules.json and index/vulns.json came out byte for byte as
// cmd/indexdb writes them, and every ID/ entry decodes to the same JSON.
//
// Each database lives in <cache>/<version>/ with a meta.json beside index/
// and ID/; it is built in a temporary directory and renamed into place, so
// a cached one is always whole. Building a new version removes the older
// ones this command made.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/mod/semver"
)

const vulndbModule = "golang.org/x/vulndb"

func main() {
	version := flag.String("version", "latest", "version of "+vulndbModule+": latest, or a pseudo-version to reproduce a past run")
	cache := flag.String("cache", "", "directory that holds the built databases, one per version (required)")
	goCmd := flag.String("go", "go", "the go command")
	flag.Parse()
	if *cache == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: vulncheck -cache DIR [-version latest|VERSION] [-go GO]")
		os.Exit(2)
	}
	dbURL, summary, err := run(*goCmd, *version, *cache)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vulncheck:", err)
		os.Exit(1)
	}
	fmt.Fprintln(os.Stderr, summary)
	fmt.Println(dbURL)
}

// Meta is <cache>/<version>/meta.json: what the database was built from.
type Meta struct {
	Module        string    `json:"module"`
	Version       string    `json:"version"`
	CommitTime    time.Time `json:"commit_time"`
	Entries       int       `json:"entries"`
	NewestID      string    `json:"newest_id"`
	NewestCreated time.Time `json:"newest_created"`
}

func (m Meta) summary(dir string, cached bool) string {
	how := "built"
	if cached {
		how = "cached"
	}
	return fmt.Sprintf("vulndb: %s %s (commit %s), %d entries, newest %s created %s; %s in %s",
		m.Module, m.Version, m.CommitTime.UTC().Format(time.RFC3339), m.Entries,
		m.NewestID, m.NewestCreated.UTC().Format(time.RFC3339), how, dir)
}

func run(goCmd, version, cache string) (dbURL, summary string, err error) {
	mod, err := download(goCmd, version)
	if err != nil {
		return "", "", err
	}
	cache, err = filepath.Abs(cache)
	if err != nil {
		return "", "", err
	}
	dest := filepath.Join(cache, mod.Version)
	u := (&url.URL{Scheme: "file", Path: filepath.ToSlash(dest)}).String()
	if m, err := readMeta(dest); err == nil && m.Version == mod.Version {
		return u, m.summary(dest, true), nil
	}

	info, err := readInfo(mod.Info)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", "", err
	}
	tmp, err := os.MkdirTemp(cache, ".build-")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(tmp) // after a successful rename there is nothing left here
	d, m, err := build(mod.Dir, tmp)
	if err != nil {
		return "", "", err
	}
	m.Module, m.Version, m.CommitTime = vulndbModule, mod.Version, info.Time
	if err := writeDB(d, m); err != nil {
		return "", "", err
	}
	if err := os.RemoveAll(dest); err != nil { // a leftover without a readable meta.json
		return "", "", err
	}
	if err := os.Rename(tmp, dest); err != nil {
		return "", "", err
	}
	pruneOthers(cache, mod.Version)
	return u, m.summary(dest, false), nil
}

type moduleDownload struct {
	Version string
	Info    string
	Dir     string
	Error   string
}

// download fetches the module (or finds it in the module cache: an exact
// version needs no network once downloaded) with the go command, which
// checks it against the checksum database.
func download(goCmd, version string) (*moduleDownload, error) {
	cmd := exec.Command(goCmd, "mod", "download", "-json", vulndbModule+"@"+version)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var mod moduleDownload
	if jerr := json.Unmarshal(out, &mod); jerr == nil && mod.Error != "" {
		return nil, fmt.Errorf("go mod download %s@%s: %s", vulndbModule, version, mod.Error)
	}
	if err != nil {
		return nil, fmt.Errorf("go mod download %s@%s: %v: %s", vulndbModule, version, err, strings.TrimSpace(stderr.String()))
	}
	if err := json.Unmarshal(out, &mod); err != nil {
		return nil, fmt.Errorf("go mod download %s@%s: %v", vulndbModule, version, err)
	}
	if mod.Dir == "" || mod.Info == "" || mod.Version == "" {
		return nil, fmt.Errorf("go mod download %s@%s: no Dir, Info or Version in %s", vulndbModule, version, out)
	}
	return &mod, nil
}

type moduleInfo struct {
	Version string
	Time    time.Time
}

func readInfo(path string) (*moduleInfo, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var info moduleInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if info.Time.IsZero() {
		return nil, fmt.Errorf("%s: no Time", path)
	}
	return &info, nil
}

func readMeta(dir string) (*Meta, error) {
	b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		return nil, err
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// pruneOthers removes the databases of other versions that this command
// built (those with a meta.json), and leaves anything else alone.
func pruneOthers(cache, keep string) {
	dirs, err := os.ReadDir(cache)
	if err != nil {
		return
	}
	for _, d := range dirs {
		if !d.IsDir() || d.Name() == keep || strings.HasPrefix(d.Name(), ".") {
			continue
		}
		if _, err := readMeta(filepath.Join(cache, d.Name())); err == nil {
			os.RemoveAll(filepath.Join(cache, d.Name()))
		}
	}
}

// osvTime marshals as upstream's osv.Time does: RFC 3339 in UTC, whole seconds.
type osvTime struct{ time.Time }

func (t osvTime) MarshalJSON() ([]byte, error) {
	return json.Marshal(t.UTC().Format(time.RFC3339))
}

// entry is the part of an OSV entry that the indexes need.
type entry struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Aliases  []string  `json:"aliases"`
	Affected []struct {
		Package struct {
			Name string `json:"name"` // the module path; "stdlib" and "toolchain" for Go itself
		} `json:"package"`
		Ranges []osvRange `json:"ranges"`
	} `json:"affected"`
}

type osvRange struct {
	Type   string `json:"type"`
	Events []struct {
		Introduced string `json:"introduced"`
		Fixed      string `json:"fixed"`
	} `json:"events"`
}

type moduleVuln struct {
	ID       string  `json:"id"`
	Modified osvTime `json:"modified"`
	Fixed    string  `json:"fixed,omitempty"`
}

type module struct {
	Path  string       `json:"path"`
	Vulns []moduleVuln `json:"vulns"`
}

type vuln struct {
	ID       string   `json:"id"`
	Modified osvTime  `json:"modified"`
	Aliases  []string `json:"aliases,omitempty"`
}

// db is the database being built in its temporary directory.
type db struct {
	dir      string
	modified time.Time
	modules  map[string]*module
	vulns    []vuln
}

// build writes ID/*.json into dir and returns what the indexes and
// meta.json need (the Meta without the module fields).
func build(moduleDir, dir string) (*db, Meta, error) {
	osvDir := filepath.Join(moduleDir, "data", "osv")
	files, err := filepath.Glob(filepath.Join(osvDir, "*.json"))
	if err != nil {
		return nil, Meta{}, err
	}
	if len(files) == 0 {
		return nil, Meta{}, fmt.Errorf("no OSV entries in %s", osvDir)
	}
	if err := os.MkdirAll(filepath.Join(dir, "ID"), 0o755); err != nil {
		return nil, Meta{}, err
	}
	d := &db{dir: dir, modules: map[string]*module{}}
	var m Meta
	seen := map[string]bool{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, Meta{}, err
		}
		var e entry
		if err := json.Unmarshal(raw, &e); err != nil {
			return nil, Meta{}, fmt.Errorf("%s: %v", f, err)
		}
		// govulncheck reads ID/<id>.json: the name must be the id.
		if e.ID == "" || filepath.Base(f) != e.ID+".json" {
			return nil, Meta{}, fmt.Errorf("%s: id %q does not match the file name", f, e.ID)
		}
		if seen[e.ID] {
			return nil, Meta{}, fmt.Errorf("%s: id %q appears twice", f, e.ID)
		}
		seen[e.ID] = true
		var compact bytes.Buffer
		if err := json.Compact(&compact, raw); err != nil {
			return nil, Meta{}, fmt.Errorf("%s: %v", f, err)
		}
		if err := os.WriteFile(filepath.Join(dir, "ID", e.ID+".json"), compact.Bytes(), 0o644); err != nil {
			return nil, Meta{}, err
		}
		d.add(e)
		m.Entries++

		created, err := reportCreated(filepath.Join(moduleDir, "data", "reports", e.ID+".yaml"))
		if err != nil {
			return nil, Meta{}, err
		}
		if created.After(m.NewestCreated) || created.Equal(m.NewestCreated) && e.ID > m.NewestID {
			m.NewestID, m.NewestCreated = e.ID, created
		}
	}
	if m.NewestID == "" {
		return nil, Meta{}, errors.New("no report in data/reports has a source.created date")
	}
	return d, m, nil
}

// add indexes e as upstream's Database.Add does: one module vuln for each
// affected module, in the order of the entry.
func (d *db) add(e entry) {
	if e.Modified.After(d.modified) {
		d.modified = e.Modified
	}
	for _, a := range e.Affected {
		mod := d.modules[a.Package.Name]
		if mod == nil {
			mod = &module{Path: a.Package.Name, Vulns: []moduleVuln{}}
			d.modules[a.Package.Name] = mod
		}
		mod.Vulns = append(mod.Vulns, moduleVuln{ID: e.ID, Modified: osvTime{e.Modified}, Fixed: latestFixed(a.Ranges)})
	}
	d.vulns = append(d.vulns, vuln{ID: e.ID, Modified: osvTime{e.Modified}, Aliases: e.Aliases})
}

// latestFixed is upstream's osvutils.LatestFixed: the highest fixed version
// of the SEMVER ranges, or "" when a range re-introduces the vulnerability
// after it. govulncheck skips an entry for a module version at or above it
// without reading the entry, so it must never be too low.
func latestFixed(ranges []osvRange) string {
	var latest string
	for _, r := range ranges {
		if r.Type != "SEMVER" {
			continue
		}
		for _, e := range r.Events {
			if e.Fixed != "" && before(latest, e.Fixed) {
				latest = e.Fixed
			}
		}
		for _, e := range r.Events {
			if e.Introduced != "" && e.Introduced != "0" && before(latest, e.Introduced) {
				latest = ""
				break
			}
		}
	}
	return latest
}

// before reports whether v < v2 for unprefixed semantic versions.
func before(v, v2 string) bool { return semver.Compare("v"+v, "v"+v2) < 0 }

// reportCreated is the report's source.created: when it was made from its
// source (a CVE or a GitHub advisory). Hand-written reports have none.
func reportCreated(path string) (time.Time, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, err
	}
	var r struct {
		Source struct {
			Created time.Time `yaml:"created"`
		} `yaml:"source"`
	}
	if err := yaml.Unmarshal(b, &r); err != nil {
		return time.Time{}, fmt.Errorf("%s: %v", path, err)
	}
	return r.Source.Created, nil
}

// writeDB writes index/ and meta.json beside the ID/ that build wrote.
func writeDB(d *db, m Meta) error {
	// Upstream's db.json says the newest entry's modified time; in the
	// module zip that is 0001-01-01 (see the package comment), so this one
	// says the vulndb commit's, or a later entry's should one have a date.
	modified := m.CommitTime
	if d.modified.After(modified) {
		modified = d.modified
	}
	mods := make([]*module, 0, len(d.modules))
	for _, mod := range d.modules {
		slices.SortStableFunc(mod.Vulns, func(a, b moduleVuln) int { return strings.Compare(a.ID, b.ID) })
		mods = append(mods, mod)
	}
	slices.SortFunc(mods, func(a, b *module) int { return strings.Compare(a.Path, b.Path) })
	slices.SortFunc(d.vulns, func(a, b vuln) int { return strings.Compare(a.ID, b.ID) })

	if err := os.MkdirAll(filepath.Join(d.dir, "index"), 0o755); err != nil {
		return err
	}
	for name, v := range map[string]any{
		"index/db.json": struct {
			Modified osvTime `json:"modified"`
		}{osvTime{modified}},
		"index/modules.json": mods,
		"index/vulns.json":   d.vulns,
	} {
		if err := writeJSON(filepath.Join(d.dir, name), v); err != nil {
			return err
		}
	}
	// Last: a database with a meta.json is whole.
	return writeJSON(filepath.Join(d.dir, "meta.json"), m)
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
