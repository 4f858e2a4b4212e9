package app

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/callgoose/buildkite-sqibs/internal/config"
	"github.com/callgoose/buildkite-sqibs/internal/testkit/moto"
)

func TestMain(m *testing.M) { os.Exit(moto.Run(m)) }

// A secret-backed token whose refresh fails keeps serving the last good
// value and says so through the function's JSON logger (Token's log),
// never through slog.Default, which would print plain text in Lambda.
func TestTokenWarnsThroughTheFunctionsLogger(t *testing.T) {
	srv := moto.Start(t)
	cfg := srv.AWSConfig(t)
	sm := secretsmanager.NewFromConfig(cfg)
	ctx := context.Background()
	out, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("webhook"), SecretString: aws.String("tok-1")})
	if err != nil {
		t.Fatal(err)
	}

	var logs, stray bytes.Buffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&stray, nil)))
	t.Cleanup(func() { slog.SetDefault(old) })

	r := config.NewReader(config.Map(map[string]string{"WEBHOOK_TOKEN_SECRET_ARN": aws.ToString(out.ARN)}))
	src, err := Token(r, WebhookTokenVars, time.Millisecond, func() (aws.Config, error) { return cfg, nil },
		slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil || src == nil {
		t.Fatalf("Token = %v, %v", src, err)
	}
	if v, err := src.Get(ctx); err != nil || v != "tok-1" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	if _, err := sm.DeleteSecret(ctx, &secretsmanager.DeleteSecretInput{SecretId: out.ARN, ForceDeleteWithoutRecovery: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond) // past the 1 ms TTL
	if v, err := src.Get(ctx); err != nil || v != "tok-1" {
		t.Fatalf("Get after the secret is gone = %q, %v; want the last good value", v, err)
	}
	if !strings.Contains(logs.String(), `"msg":"secret refresh failed; serving the last good value"`) {
		t.Errorf("no JSON warning through Token's log:\n%s", logs.String())
	}
	if stray.Len() > 0 {
		t.Errorf("logged through slog.Default:\n%s", stray.String())
	}
	if strings.Contains(logs.String(), "tok-1") {
		t.Errorf("the token is in the log:\n%s", logs.String())
	}
}

// The Buildkite API token is optional: unset, Token says "off" (nil) and
// needs no AWS; a literal wins over the secret.
func TestBuildkiteAPIToken(t *testing.T) {
	noAWS := func() (aws.Config, error) { t.Fatal("AWS config loaded"); return aws.Config{}, nil }
	for _, tc := range []struct {
		env  map[string]string
		want string // "" = off
	}{
		{nil, ""},
		{map[string]string{"BUILDKITE_API_TOKEN": " bkua_x \n"}, "bkua_x"},
		{map[string]string{"BUILDKITE_API_TOKEN": "bkua_x", "BUILDKITE_API_TOKEN_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:1:secret:bk"}, "bkua_x"},
	} {
		src, err := Token(config.NewReader(config.Map(tc.env)), BuildkiteAPITokenVars, time.Minute, noAWS, nil)
		if err != nil {
			t.Fatal(err)
		}
		if (src == nil) != (tc.want == "") {
			t.Fatalf("%v: source %v", tc.env, src)
		}
		if src != nil {
			if v, _ := src.Get(context.Background()); v != tc.want {
				t.Errorf("%v: token %q", tc.env, v)
			}
		}
	}
}
