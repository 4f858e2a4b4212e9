package metrics

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// Each record is one JSON line in the EMF shape CloudWatch parses.
func TestEmitEMF(t *testing.T) {
	var buf bytes.Buffer
	e := New(&buf, "bridge-Dispatcher-abc")
	e.now = func() time.Time { return time.UnixMilli(1722859200123) }
	e.Count(Delivered)
	e.Emit(SQIBSLatencyMS, Milliseconds, 12.5)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines: %q", len(lines), buf.String())
	}
	type rec struct {
		AWS struct {
			Timestamp         int64
			CloudWatchMetrics []struct {
				Namespace  string
				Dimensions [][]string
				Metrics    []struct{ Name, Unit string }
			}
		} `json:"_aws"`
		Service, FunctionName string
	}
	for i, want := range []struct {
		name, unit string
		value      float64
	}{{Delivered, Count, 1}, {SQIBSLatencyMS, Milliseconds, 12.5}} {
		var r rec
		if err := json.Unmarshal([]byte(lines[i]), &r); err != nil {
			t.Fatalf("line %d: %v: %s", i, err, lines[i])
		}
		var all map[string]any
		_ = json.Unmarshal([]byte(lines[i]), &all)
		m := r.AWS.CloudWatchMetrics
		if r.AWS.Timestamp != 1722859200123 || len(m) != 1 || m[0].Namespace != Namespace ||
			len(m[0].Dimensions) != 1 || strings.Join(m[0].Dimensions[0], ",") != "Service,FunctionName" ||
			m[0].Metrics[0].Name != want.name || m[0].Metrics[0].Unit != want.unit {
			t.Errorf("line %d: %+v", i, r)
		}
		if r.Service != "buildkite-sqibs" || r.FunctionName != "bridge-Dispatcher-abc" || all[want.name] != want.value {
			t.Errorf("line %d: dimensions %q %q value %v", i, r.Service, r.FunctionName, all[want.name])
		}
	}
}

func TestNilEmitterIsSilent(t *testing.T) {
	var e *Emitter
	e.Count(Queued) // must not panic
	if New(nil, "").function != "local" {
		t.Error("empty function name should default")
	}
}

func TestEmitPipeline(t *testing.T) {
	var buf bytes.Buffer
	e := New(&buf, "fn")
	e.EmitPipeline(TimeToRecoveryS, Seconds, 90, "deploy-\x01api\"")
	var r struct {
		AWS struct {
			CloudWatchMetrics []struct {
				Dimensions [][]string
				Metrics    []struct{ Name, Unit string }
			}
		} `json:"_aws"`
		FunctionName, Pipeline string
		Value                  float64 `json:"time_to_recovery_s"`
	}
	if err := json.Unmarshal(buf.Bytes(), &r); err != nil {
		t.Fatalf("%v: %s", err, buf.String())
	}
	m := r.AWS.CloudWatchMetrics
	if len(m) != 1 || len(m[0].Dimensions) != 1 || strings.Join(m[0].Dimensions[0], ",") != "Service,FunctionName,Pipeline" ||
		m[0].Metrics[0].Name != TimeToRecoveryS || m[0].Metrics[0].Unit != Seconds {
		t.Errorf("record %+v", r)
	}
	if r.FunctionName != "fn" || r.Pipeline != "deploy-\x01api\"" || r.Value != 90 {
		t.Errorf("dimensions %q %q value %v", r.FunctionName, r.Pipeline, r.Value)
	}
}
