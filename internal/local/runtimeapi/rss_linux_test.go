package runtimeapi

import "testing"

func TestParseVmHWM(t *testing.T) {
	tests := []struct {
		status string
		want   int64
	}{
		{"Name:\tbootstrap\nVmPeak:\t 1239004 kB\nVmHWM:\t    6508 kB\nVmRSS:\t    6508 kB\n", 6508 << 10},
		{"Name:\tzombie\nState:\tZ (zombie)\n", 0},
		{"VmHWM:\tlots kB\n", 0},
		{"VmHWM:\t12 MB\n", 0},
	}
	for _, tt := range tests {
		if got := parseVmHWM([]byte(tt.status)); got != tt.want {
			t.Errorf("parseVmHWM(%q) = %d, want %d", tt.status, got, tt.want)
		}
	}
}
