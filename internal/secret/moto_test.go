package secret

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"

	"github.com/callgoose/buildkite-sqibs/internal/testkit/moto"
)

func TestMain(m *testing.M) { os.Exit(moto.Run(m)) }

// TestSecretsManager reads a real secret through the SDK client against
// moto_server: first read, TTL cache, Refresh after a rotation.
func TestSecretsManager(t *testing.T) {
	srv := moto.Start(t)
	sm := secretsmanager.NewFromConfig(srv.AWSConfig(t))
	ctx := context.Background()

	created, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{
		Name:         aws.String("buildkite-sqibs/webhook-token"),
		SecretString: aws.String("old-token\nnew-token\n"),
	})
	if err != nil {
		t.Fatalf("CreateSecret: %v", err)
	}
	arn := aws.ToString(created.ARN)

	for _, id := range []string{arn, "buildkite-sqibs/webhook-token"} {
		s := FromSecretsManager(sm, id, time.Hour)
		if s.Name() != id {
			t.Fatalf("Name = %q; want %q", s.Name(), id)
		}
		mustGet(t, s, "old-token\nnew-token") // inner newline kept, trailing one gone
	}

	s := FromSecretsManager(sm, arn, time.Hour)
	mustGet(t, s, "old-token\nnew-token")
	if _, err := sm.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{
		SecretId:     aws.String(arn),
		SecretString: aws.String("rotated-token"),
	}); err != nil {
		t.Fatalf("PutSecretValue: %v", err)
	}
	mustGet(t, s, "old-token\nnew-token") // still within the TTL: cached
	got, err := s.Refresh(ctx)
	if err != nil || got != "rotated-token" {
		t.Fatalf("Refresh = %q, %v; want rotated-token, nil", got, err)
	}
	mustGet(t, s, "rotated-token")
}

func TestSecretsManagerMissing(t *testing.T) {
	srv := moto.Start(t)
	sm := secretsmanager.NewFromConfig(srv.AWSConfig(t))

	id := "arn:aws:secretsmanager:us-east-1:123456789012:secret:does-not-exist-AbCdEf"
	_, err := FromSecretsManager(sm, id, time.Hour).Get(context.Background())
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Get = %v; want ErrUnavailable", err)
	}
	var nf *types.ResourceNotFoundException
	if !errors.As(err, &nf) {
		t.Fatalf("Get = %v; want a ResourceNotFoundException inside", err)
	}
	t.Logf("missing secret: %v", err)
}

func TestSecretsManagerBinary(t *testing.T) {
	srv := moto.Start(t)
	sm := secretsmanager.NewFromConfig(srv.AWSConfig(t))

	created, err := sm.CreateSecret(context.Background(), &secretsmanager.CreateSecretInput{
		Name:         aws.String("binary"),
		SecretBinary: []byte{0xde, 0xad, 0xbe, 0xef},
	})
	if err != nil {
		t.Fatalf("CreateSecret: %v", err)
	}
	_, err = FromSecretsManager(sm, aws.ToString(created.ARN), time.Hour).Get(context.Background())
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, errNotString) {
		t.Fatalf("Get = %v; want ErrUnavailable saying it is not a string", err)
	}
}
