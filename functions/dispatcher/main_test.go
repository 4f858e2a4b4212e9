package main

import (
	"testing"

	"github.com/callgoose/buildkite-sqibs/internal/testkit"
)

func TestBadConfigStopsWithOneLine(t *testing.T) {
	bin := testkit.BuildMain(t, ".")
	ok := []string{"SQIBS_URL=https://sqibs.example/v1/process", "SQIBS_API_TOKEN=t", "AWS_REGION=us-east-1"}
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{[]string{"SQIBS_API_TOKEN=t"}, "SQIBS_URL is required"},
		{[]string{"SQIBS_URL=https://sqibs.example/v1/process", "AWS_REGION=us-east-1"}, "SQIBS_TOKEN_SECRET_ARN or SQIBS_API_TOKEN is required"},
		{append(ok, "SQIBS_AUTH=basic"), "SQIBS_AUTH"},
		{append(ok, "SQIBS_TIMEOUT=fast"), "SQIBS_TIMEOUT"},
		{append(ok, "JOB_INCIDENTS=2"), "JOB_INCIDENTS"},
		{append(ok, "ALERT_AFTER_FAILURES=0"), "ALERT_AFTER_FAILURES"},
		{[]string{"SQIBS_URL=not a url", "SQIBS_API_TOKEN=t", "AWS_REGION=us-east-1"}, "SQIBS_URL"},
		{append(ok, "BUILDKITE_API_TOKEN=bkua_x", "BUILDKITE_API_URL=ftp://api.example"), "BUILDKITE_API_URL"},
	} {
		t.Run(tc.want, func(t *testing.T) { testkit.ExpectConfigExit(t, bin, tc.env, tc.want) })
	}
}
