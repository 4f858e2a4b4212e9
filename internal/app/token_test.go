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
	"github.com/callgoose/buildkite-sqibs/internal/testutil/moto"
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
