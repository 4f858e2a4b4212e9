package moto

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
)

// DynamoDB is a DynamoDB client on this server. (Create an incident state
// table with dynamo.CreateTable.)
func (s *Server) DynamoDB(t testing.TB) *dynamodb.Client {
	t.Helper()
	return dynamodb.NewFromConfig(s.AWSConfig(t))
}
