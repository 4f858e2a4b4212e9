package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// benchRuns maps a benchmark's name (without the -GOMAXPROCS suffix) to its
// metrics by unit ("ns/op", "allocs/op", ...), one value per run, in the
// order the runs appear.
type benchRuns map[string]map[string][]float64

var procsSuffix = regexp.MustCompile(`-\d+$`)

// parseGoBench reads `go test -bench` output. Lines that are not result
// lines (goos:, pkg:, PASS, ok ..., logs) are skipped; a result line is
// `BenchmarkName[-P] <iterations> (<value> <unit>)...`.
func parseGoBench(r io.Reader) (benchRuns, error) {
	runs := benchRuns{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") || len(f)%2 != 0 {
			continue
		}
		if _, err := strconv.ParseInt(f[1], 10, 64); err != nil {
			continue // e.g. a log line that starts with a benchmark's name
		}
		metrics := map[string]float64{}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("line %d: %q is not a number (%q)", line, f[i], sc.Text())
			}
			metrics[f[i+1]] = v
		}
		name := procsSuffix.ReplaceAllString(f[0], "")
		if runs[name] == nil {
			runs[name] = map[string][]float64{}
		}
		for unit, v := range metrics {
			runs[name][unit] = append(runs[name][unit], v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read benchmark output: %w", err)
	}
	return runs, nil
}

// medianOf is the median of one benchmark's metric over its runs.
func (b benchRuns) medianOf(name, unit string) (float64, error) {
	vs := b[name][unit]
	if len(vs) == 0 {
		return 0, fmt.Errorf("no %s result for %s in the benchmark output", unit, name)
	}
	return median(vs), nil
}

// goFigures fills the figures that come from the Go benchmarks.
func goFigures(path string, res *Results) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("go benchmarks: %w", err)
	}
	defer f.Close()
	runs, err := parseGoBench(f)
	if err != nil {
		return fmt.Errorf("go benchmarks %s: %w", path, err)
	}
	var errs []error
	for _, m := range []struct{ figure, bench, unit string }{
		{"receiver_ns_op", "BenchmarkReceiver", "ns/op"},
		{"receiver_allocs_op", "BenchmarkReceiver", "allocs/op"},
		{"dispatcher_map_ns_op", "BenchmarkMap", "ns/op"},
	} {
		v, err := runs.medianOf(m.bench, m.unit)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m.figure, err))
			continue
		}
		res.set(m.figure, v)
		res.note("%s: median of %d runs of %s", m.figure, len(runs[m.bench][m.unit]), m.bench)
	}
	return errors.Join(errs...)
}
