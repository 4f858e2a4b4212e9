package main

import (
	"testing"

	"github.com/callgoose/buildkite-sqibs/internal/testkit"
)

func TestBadConfigStopsWithOneLine(t *testing.T) {
	bin := testkit.BuildMain(t, ".")
	ok := []string{"QUEUE_URL=http://127.0.0.1:1/000000000000/q.fifo", "BUILDKITE_WEBHOOK_TOKEN=t", "AWS_REGION=us-east-1"}
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{[]string{"BUILDKITE_WEBHOOK_TOKEN=t"}, "QUEUE_URL is required"},
		{append(ok, "SIGNATURE_MAX_AGE=soon"), "SIGNATURE_MAX_AGE"},
		{append(ok, "MAX_BODY_BYTES=-5"), "MAX_BODY_BYTES"},
		{append(ok, "ALLOW_TOKEN_HEADER=perhaps"), "ALLOW_TOKEN_HEADER"},
		{append(ok, "SECRET_TTL=0s"), "SECRET_TTL"},
		{append(ok, "ALERT_ON_CANCELED=sometimes"), "ALERT_ON_CANCELED"},
		{append(ok, "SEVERITY=urgent"), "SEVERITY"},
	} {
		t.Run(tc.want, func(t *testing.T) { testkit.ExpectConfigExit(t, bin, tc.env, tc.want) })
	}
}
