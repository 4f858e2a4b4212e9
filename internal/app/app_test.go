package app

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/callgoose/buildkite-sqibs/internal/config"
)

func noAWS() (aws.Config, error) { return aws.Config{}, errors.New("AWS must not be needed") }

func TestSQIBSToken(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string // from SQIBSToken
		getErr  error  // from Get
		want    string
	}{
		{name: "literal", env: map[string]string{"SQIBS_API_TOKEN": " tok\n"}, want: "tok"},
		{name: "literal wins over ARN", env: map[string]string{"SQIBS_API_TOKEN": "tok", "SQIBS_TOKEN_SECRET_ARN": "arn:x"}, want: "tok"},
		{name: "none configured", env: nil, wantErr: "SQIBS_TOKEN_SECRET_ARN or SQIBS_API_TOKEN is required"},
		{name: "placeholder refused", env: map[string]string{"SQIBS_API_TOKEN": PlaceholderToken}, getErr: ErrPlaceholder},
		{name: "ARN needs AWS", env: map[string]string{"SQIBS_TOKEN_SECRET_ARN": "arn:x"}, wantErr: "AWS must not be needed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src, err := SQIBSToken(config.NewReader(config.Map(tc.env)), 0, noAWS, nil)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, get := range []func(context.Context) (string, error){src.Get, src.Refresh} {
				v, err := get(context.Background())
				if !errors.Is(err, tc.getErr) || v != tc.want {
					t.Errorf("got %q, %v; want %q, %v", v, err, tc.want, tc.getErr)
				}
			}
		})
	}
}
