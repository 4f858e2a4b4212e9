package awsenv

import (
	"context"
	"strings"
	"testing"

	"github.com/callgoose/buildkite-sqibs/internal/config"
)

func TestLoad(t *testing.T) {
	full := map[string]string{"AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "SECRET", "AWS_SESSION_TOKEN": "TOKEN"}
	cfg, err := Load(Env(config.Map(full)))
	if err != nil {
		t.Fatal(err)
	}
	creds, err := cfg.Credentials.Retrieve(context.Background())
	if err != nil || cfg.Region != "eu-west-1" || creds.AccessKeyID != "AKID" || creds.SecretAccessKey != "SECRET" || creds.SessionToken != "TOKEN" {
		t.Errorf("cfg %+v creds %+v err %v", cfg, creds, err)
	}
	if cfg.BaseEndpoint != nil {
		t.Errorf("endpoint %q without AWS_ENDPOINT_URL", *cfg.BaseEndpoint)
	}

	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}, "AWS_REGION"},
		{map[string]string{"AWS_REGION": "x", "AWS_ACCESS_KEY_ID": "a"}, "AWS_SECRET_ACCESS_KEY"},
	} {
		if _, err := Load(Env(config.Map(tc.env))); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err %v, want it to name %s", tc.env, err, tc.want)
		}
	}
	alt := map[string]string{"AWS_DEFAULT_REGION": "us-west-2", "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b", "AWS_ENDPOINT_URL": "http://127.0.0.1:5000"}
	cfg, err = Load(Env(config.Map(alt)))
	if err != nil || cfg.Region != "us-west-2" || cfg.BaseEndpoint == nil || *cfg.BaseEndpoint != "http://127.0.0.1:5000" {
		t.Errorf("AWS_DEFAULT_REGION / AWS_ENDPOINT_URL: %+v %v", cfg, err)
	}
}

func TestEndpoint(t *testing.T) {
	env := Env(config.Map(map[string]string{"AWS_ENDPOINT_URL_SQS": " http://127.0.0.1:1 ", "AWS_ENDPOINT_URL_SECRETS_MANAGER": "http://127.0.0.1:2", "AWS_ENDPOINT_URL_STS": ""}))
	if e := Endpoint(env, "SQS"); e == nil || *e != "http://127.0.0.1:1" {
		t.Errorf("SQS: %v", e)
	}
	if e := Endpoint(env, "Secrets Manager"); e == nil || *e != "http://127.0.0.1:2" {
		t.Errorf("Secrets Manager: %v", e)
	}
	if e := Endpoint(env, "STS"); e != nil {
		t.Errorf("empty means unset: %q", *e)
	}
}
