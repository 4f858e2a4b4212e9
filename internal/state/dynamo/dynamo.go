// Package dynamo is the DynamoDB adapter of the incident state store
// (DESIGN §5b): one item per incident id, partition key "id", TTL attribute
// "expires_at", every write conditional on the version read.
package dynamo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/callgoose/buildkite-sqibs/internal/awsenv"
	"github.com/callgoose/buildkite-sqibs/internal/state"
)

// API is the part of *dynamodb.Client the store calls.
type API interface {
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	Scan(ctx context.Context, in *dynamodb.ScanInput, opts ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
}

// NewClient is a DynamoDB client honouring AWS_ENDPOINT_URL_DYNAMODB
// (moto, LocalStack) whichever loader built cfg. It lives here, not in
// internal/app, so that only the binaries keeping state link DynamoDB.
func NewClient(cfg aws.Config) *dynamodb.Client {
	return dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
		if ep := awsenv.Endpoint(os.LookupEnv, "DynamoDB"); ep != nil {
			o.BaseEndpoint = ep
		}
	})
}

// Store keeps incident state in one DynamoDB table.
type Store struct {
	api   API
	table string
	now   func() time.Time
}

// New returns a store on table.
func New(api API, table string) *Store { return &Store{api: api, table: table, now: time.Now} }

// Table is the table's name.
func (s *Store) Table() string { return s.table }

// Get reads the item stored under id (strongly consistent: the previous
// event of the incident may have been written a moment ago by another
// instance); nil when there is none. An item that does not decode comes
// back with its version (when readable) and an error wrapping
// state.ErrCorrupt, so the caller can replace it.
func (s *Store) Get(ctx context.Context, id string) (*state.Item, error) {
	out, err := s.api.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.table),
		Key:            map[string]types.AttributeValue{"id": &types.AttributeValueMemberS{Value: id}},
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return nil, fmt.Errorf("state: get %s: %w", id, err)
	}
	if out.Item == nil {
		return nil, nil
	}
	var it state.Item
	if err := attributevalue.UnmarshalMap(out.Item, &it); err != nil || it.ID != id {
		if err == nil {
			err = fmt.Errorf("its id is %q", it.ID)
		}
		return &state.Item{ID: id, Version: version(out.Item)}, fmt.Errorf("%w: %s: %v", state.ErrCorrupt, id, err)
	}
	it.ExpiresAt = it.ExpiresAt.UTC() // epoch seconds decode in time.Local
	return &it, nil
}

// version is an undecodable item's version attribute, 0 when that is
// unreadable too.
func version(av map[string]types.AttributeValue) int64 {
	if n, ok := av["version"].(*types.AttributeValueMemberN); ok {
		if v, err := strconv.ParseInt(n.Value, 10, 64); err == nil && v > 0 {
			return v
		}
	}
	return 0
}

// Put writes it as version it.Version+1 if the stored version is still
// it.Version; state.ErrConflict when it is not. Version 0 expects no item
// (or one whose version is unreadable: a corrupt item is replaced);
// state.Any writes unconditionally.
func (s *Store) Put(ctx context.Context, it *state.Item) error {
	rec := *it
	rec.Version = max(it.Version, 0) + 1
	av, err := attributevalue.MarshalMapWithOptions(&rec, func(o *attributevalue.EncoderOptions) { o.OmitEmptyTime = true })
	if err != nil {
		return fmt.Errorf("state: encode %s: %w", it.ID, err)
	}
	in := &dynamodb.PutItemInput{TableName: aws.String(s.table), Item: av}
	switch it.Version {
	case state.Any:
	case 0:
		in.ConditionExpression = aws.String("attribute_not_exists(id) OR NOT attribute_type(#v, :n)")
		in.ExpressionAttributeNames = map[string]string{"#v": "version"}
		in.ExpressionAttributeValues = map[string]types.AttributeValue{":n": &types.AttributeValueMemberS{Value: "N"}}
	default:
		in.ConditionExpression = aws.String("#v = :v")
		in.ExpressionAttributeNames = map[string]string{"#v": "version"}
		in.ExpressionAttributeValues = map[string]types.AttributeValue{":v": &types.AttributeValueMemberN{Value: strconv.FormatInt(it.Version, 10)}}
	}
	if _, err := s.api.PutItem(ctx, in); err != nil {
		if _, ok := errors.AsType[*types.ConditionalCheckFailedException](err); ok {
			return fmt.Errorf("%w: %s (version %d)", state.ErrConflict, it.ID, it.Version)
		}
		return fmt.Errorf("state: put %s: %w", it.ID, err)
	}
	return nil
}

// ListOpen lists the open incidents, oldest first (scripts/incidents, the
// reconciler of DESIGN §9). It scans the table: one item per incident id
// that saw an event in 90 days is small enough to read whole every few
// minutes. Items that do not decode are skipped.
func (s *Store) ListOpen(ctx context.Context) ([]state.Item, error) {
	in := &dynamodb.ScanInput{
		TableName:                aws.String(s.table),
		FilterExpression:         aws.String("#o = :t AND attribute_not_exists(alias_of)"),
		ExpressionAttributeNames: map[string]string{"#o": "open"},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":t": &types.AttributeValueMemberBOOL{Value: true},
		},
	}
	now := s.now()
	var out []state.Item
	for {
		page, err := s.api.Scan(ctx, in)
		if err != nil {
			return out, fmt.Errorf("state: scan %s: %w", s.table, err)
		}
		for _, av := range page.Items {
			var it state.Item
			if attributevalue.UnmarshalMap(av, &it) == nil && it.Live(now) {
				out = append(out, it)
			}
		}
		if len(page.LastEvaluatedKey) == 0 {
			break
		}
		in.ExclusiveStartKey = page.LastEvaluatedKey
	}
	state.SortOpen(out)
	return out, nil
}

// CreateAPI is what CreateTable calls.
type CreateAPI interface {
	CreateTable(ctx context.Context, in *dynamodb.CreateTableInput, opts ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error)
	UpdateTimeToLive(ctx context.Context, in *dynamodb.UpdateTimeToLiveInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateTimeToLiveOutput, error)
}

// CreateTable creates a table as template.yaml does (partition key id,
// on-demand, TTL on expires_at), for local runs and tests; in AWS the
// stack creates it.
func CreateTable(ctx context.Context, api CreateAPI, table string) error {
	_, err := api.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String(table),
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("id"), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("id"), KeyType: types.KeyTypeHash}},
		BillingMode:          types.BillingModePayPerRequest,
	})
	if err != nil {
		return fmt.Errorf("create table %s: %w", table, err)
	}
	_, err = api.UpdateTimeToLive(ctx, &dynamodb.UpdateTimeToLiveInput{
		TableName:               aws.String(table),
		TimeToLiveSpecification: &types.TimeToLiveSpecification{AttributeName: aws.String("expires_at"), Enabled: aws.Bool(true)},
	})
	if err != nil {
		return fmt.Errorf("enable TTL on %s: %w", table, err)
	}
	return nil
}

// FromConfig is the store over table with a client from awsCfg that
// honours AWS_ENDPOINT_URL_DYNAMODB: for the dispatcher's guard, the
// reconciler's list of open incidents, make dev and scripts/incidents.
func FromConfig(awsCfg aws.Config, table string) *Store { return New(NewClient(awsCfg), table) }
