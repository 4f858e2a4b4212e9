// Package awsenv builds the AWS SDK configuration of a Lambda function from
// its environment alone.
//
// config.LoadDefaultConfig would do it too, but it links the whole credential
// chain (STS, SSO, SSO-OIDC, sign-in, IMDS, shared-config parsing): 2+ MB of
// bootstrap and a millisecond of package initialisation on every cold start,
// for providers a Lambda function never uses. Lambda hands every function its
// region and role credentials as environment variables, which is all this
// reads. Tools and the dev server, which want profiles and SSO, keep using
// LoadDefaultConfig.
package awsenv

import (
	"errors"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// Env looks a variable up (os.LookupEnv in production).
type Env func(string) (string, bool)

// Load reads AWS_REGION (or AWS_DEFAULT_REGION), AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and AWS_ENDPOINT_URL.
func Load(env Env) (aws.Config, error) {
	get := func(name string) string { v, _ := env(name); return strings.TrimSpace(v) }
	region := get("AWS_REGION")
	if region == "" {
		region = get("AWS_DEFAULT_REGION")
	}
	if region == "" {
		return aws.Config{}, errors.New("aws: AWS_REGION is not set (Lambda sets it; set it for local runs)")
	}
	id, key := get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")
	if id == "" || key == "" {
		return aws.Config{}, errors.New("aws: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set (Lambda sets them from the function's role)")
	}
	cfg := aws.Config{
		Region:      region,
		Credentials: aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider(id, key, get("AWS_SESSION_TOKEN"))),
	}
	if ep := get("AWS_ENDPOINT_URL"); ep != "" {
		cfg.BaseEndpoint = aws.String(ep)
	}
	return cfg, nil
}

// Endpoint is the service endpoint override AWS_ENDPOINT_URL_<SERVICE>
// (service as the SDK names it: "SQS", "Secrets Manager"), or nil; the SDK's
// own loader honours the same variables, so moto and LocalStack are reached
// the same way whichever loader built the config.
func Endpoint(env Env, service string) *string {
	name := "AWS_ENDPOINT_URL_" + strings.ReplaceAll(strings.ToUpper(service), " ", "_")
	if v, _ := env(name); strings.TrimSpace(v) != "" {
		return aws.String(strings.TrimSpace(v))
	}
	return nil
}
