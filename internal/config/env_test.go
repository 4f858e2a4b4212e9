package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestReader(t *testing.T) {
	env := Map(map[string]string{
		"S": "  v  ", "BLANK": "   ", "B1": "yes", "B0": "OFF", "BX": "maybe",
		"D": "250ms", "DX": "5", "DN": "-1s", "I": "42", "IX": "4x", "IBIG": "99",
		"L": " a, ,b ,c", "LX": " , ", "O": "Header", "OX": "cookie", "EMPTY": "",
	})
	r := NewReader(env)
	if got := r.String("S", "d"); got != "v" {
		t.Errorf("String = %q", got)
	}
	if got := r.String("BLANK", "d"); got != "d" {
		t.Errorf("blank String = %q, want the default", got)
	}
	if got := r.Optional("EMPTY", "d"); got != "" {
		t.Errorf("Optional set-but-empty = %q, want empty", got)
	}
	if got := r.Optional("UNSET", "d"); got != "d" {
		t.Errorf("Optional unset = %q", got)
	}
	if !r.Bool("B1", false) || r.Bool("B0", true) || !r.Bool("UNSET", true) {
		t.Error("Bool")
	}
	if got := r.Duration("D", time.Second); got != 250*time.Millisecond {
		t.Errorf("Duration = %v", got)
	}
	if got := r.Int("I", 0, 0, 100); got != 42 {
		t.Errorf("Int = %d", got)
	}
	if got := r.List("L", nil); !reflect.DeepEqual(got, []string{"a", "b", "c"}) {
		t.Errorf("List = %q", got)
	}
	if got := r.OneOf("O", "x", "header", "query"); got != "header" {
		t.Errorf("OneOf = %q", got)
	}
	if !r.Has("S") || r.Has("BLANK") || r.Has("UNSET") {
		t.Error("Has")
	}
	if r.Err() != nil {
		t.Fatalf("unexpected error %v", r.Err())
	}
	if r.Required("UNSET"); r.Err() == nil || !strings.Contains(r.Err().Error(), "UNSET is required") {
		t.Errorf("Required: %v", r.Err())
	}

	// Each bad value names its variable; the first error is kept.
	for name, read := range map[string]func(*Reader){
		"BX":   func(r *Reader) { r.Bool("BX", false) },
		"DX":   func(r *Reader) { r.Duration("DX", 0) },
		"DN":   func(r *Reader) { r.Duration("DN", 0) },
		"IX":   func(r *Reader) { r.Int("IX", 0, 0, 100) },
		"IBIG": func(r *Reader) { r.Int("IBIG", 0, 0, 50) },
		"LX":   func(r *Reader) { r.List("LX", nil) },
		"OX":   func(r *Reader) { r.OneOf("OX", "", "header", "query") },
	} {
		r := NewReader(env)
		read(r)
		r.Bool("BX", false) // a second bad value must not replace the first
		if r.Err() == nil || !strings.Contains(r.Err().Error(), name+"=") {
			t.Errorf("%s: error %v does not name the variable first", name, r.Err())
		}
	}
}
