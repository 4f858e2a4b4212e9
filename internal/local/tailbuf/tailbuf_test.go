package tailbuf

import (
	"strings"
	"testing"
)

func TestBuffer(t *testing.T) {
	tests := []struct {
		name     string
		writes   []string
		want     string // String()
		wantLast string // LastLine(10)
	}{
		{name: "empty", want: "", wantLast: ""},
		{name: "lines", writes: []string{"one\n", "two\n\n"}, want: "one\ntwo", wantLast: "two"},
		{name: "long last line is cut", writes: []string{"a\n" + strings.Repeat("x", 20)}, want: "a\n" + strings.Repeat("x", 20), wantLast: strings.Repeat("x", 10) + "…"},
		{name: "keeps only the end", writes: []string{"head\n", strings.Repeat("y", Size-4), "\ntail"}, want: strings.Repeat("y", Size-5) + "\ntail", wantLast: "tail"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b Buffer
			for _, w := range tc.writes {
				if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if got := b.String(); got != tc.want {
				t.Errorf("String = %.40q…, want %.40q…", got, tc.want)
			}
			if got := b.LastLine(10); got != tc.wantLast {
				t.Errorf("LastLine = %q, want %q", got, tc.wantLast)
			}
		})
	}
}
