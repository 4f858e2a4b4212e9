// Command hellosdk is the hello-world aws-lambda-go function plus the SDK
// clients the functions create (SQS, Secrets Manager, DynamoDB: the
// dispatcher's set, the largest), built and never called: the start-up
// floor of any bootstrap that uses those SDK packages. scripts/bench times it
// beside the real bootstraps to show how much of their start is the SDK's
// package initialisation rather than this project's code.
package main

import (
	"context"
	"encoding/json"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
)

// clients keeps the clients reachable so the linker keeps what they use.
var clients []any

func main() {
	clients = append(clients,
		sqs.New(sqs.Options{Region: "us-east-1", Credentials: aws.AnonymousCredentials{}}),
		secretsmanager.New(secretsmanager.Options{Region: "us-east-1", Credentials: aws.AnonymousCredentials{}}),
		dynamodb.New(dynamodb.Options{Region: "us-east-1", Credentials: aws.AnonymousCredentials{}}))
	lambda.Start(func(_ context.Context, in json.RawMessage) (json.RawMessage, error) { return in, nil })
}
