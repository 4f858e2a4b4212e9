package main

import (
	"testing"

	"github.com/callgoose/buildkite-sqibs/internal/testkit"
)

func TestBadConfigStopsWithOneLine(t *testing.T) {
	bin := testkit.BuildMain(t, ".")
	ok := []string{"STATE_TABLE=incidents", "QUEUE_URL=https://sqs.us-east-1.amazonaws.com/1/q.fifo", "BUILDKITE_API_TOKEN=bkua_x", "AWS_REGION=us-east-1"}
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{ok[1:], "STATE_TABLE is required"},
		{[]string{ok[0], ok[2], ok[3]}, "QUEUE_URL is required"},
		{[]string{ok[0], ok[1], ok[3]}, "BUILDKITE_API_TOKEN_SECRET_ARN or BUILDKITE_API_TOKEN is required"},
		{append(ok, "SECRET_TTL=soon"), "SECRET_TTL"},
		{append(ok, "BUILDKITE_API_URL=ftp://api.example"), "BUILDKITE_API_URL"},
		{append(ok, "BUILDKITE_API_URL=https://user:bkua_secret@api.example"), "BUILDKITE_API_URL"},
	} {
		t.Run(tc.want, func(t *testing.T) { testkit.ExpectConfigExit(t, bin, tc.env, tc.want) })
	}
}
