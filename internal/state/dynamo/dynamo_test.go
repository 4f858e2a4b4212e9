package dynamo

import (
	"context"
	"errors"
	"os"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/callgoose/buildkite-sqibs/internal/state"
	"github.com/callgoose/buildkite-sqibs/internal/testkit/moto"
)

func TestMain(m *testing.M) { os.Exit(moto.Run(m)) }

var now = time.Date(2024, 8, 5, 12, 0, 0, 0, time.UTC)

func newStore(t *testing.T) (*Store, *dynamodb.Client) {
	t.Helper()
	m := moto.Start(t)
	c := m.DynamoDB(t)
	if err := CreateTable(t.Context(), c, "incidents"); err != nil {
		t.Fatal(err)
	}
	s := New(c, "incidents")
	s.now = func() time.Time { return now }
	return s, c
}

// open is an item as Decide writes it for an open step incident.
func open(id string, openedAt time.Time) state.Item {
	return state.Item{
		ID: id, Open: true, Failures: 2, FailedBuild: "build-12",
		Order:        state.Order{Build: 12, At: openedAt.Add(time.Minute)},
		FirstFailure: openedAt, OpenedAt: openedAt,
		LastStatus: "FAILED", LastURL: "https://buildkite.com/acme/deploy-api/builds/12", Pipeline: "deploy-api",
		Jobs: map[string]state.Job{
			"rspec/0": {Order: state.Order{Build: 12, At: openedAt}, Failing: true},
			"rspec/1": {Order: state.Order{Build: 11, At: openedAt.Add(-time.Hour)}},
		},
		Floor: 11, UpdatedAt: now, ExpiresAt: now.Add(state.TTL),
	}
}

func TestRoundTrip(t *testing.T) {
	s, c := newStore(t)
	ctx := context.Background()
	if it, err := s.Get(ctx, "acme/deploy-api/main"); it != nil || err != nil {
		t.Fatalf("absent item: %+v, %v", it, err)
	}
	want := open("acme/deploy-api/main#rspec", now.Add(-time.Hour))
	if err := s.Put(ctx, &want); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, want.ID)
	if err != nil {
		t.Fatal(err)
	}
	want.Version = 1
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("read back\n got %+v\nwant %+v", *got, want)
	}
	// The TTL attribute must be a number of epoch seconds, or DynamoDB
	// never expires the item.
	raw, err := c.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String("incidents"), Key: map[string]types.AttributeValue{"id": &types.AttributeValueMemberS{Value: want.ID}}})
	if err != nil {
		t.Fatal(err)
	}
	if n, ok := raw.Item["expires_at"].(*types.AttributeValueMemberN); !ok || n.Value != strconv.FormatInt(now.Add(state.TTL).Unix(), 10) {
		t.Errorf("expires_at = %#v; want N %d", raw.Item["expires_at"], now.Add(state.TTL).Unix())
	}
	if _, ok := raw.Item["opened_at"]; !ok {
		t.Error("opened_at not stored")
	}
	closed := state.Item{ID: "acme/deploy-api/develop", Order: state.Order{Build: 3, At: now}, UpdatedAt: now}
	if err := s.Put(ctx, &closed); err != nil {
		t.Fatal(err)
	}
	raw, err = c.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String("incidents"), Key: map[string]types.AttributeValue{"id": &types.AttributeValueMemberS{Value: closed.ID}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"opened_at", "first_failure_at", "jobs", "alias_of"} {
		if _, ok := raw.Item[k]; ok {
			t.Errorf("empty %s stored: %v", k, raw.Item[k])
		}
	}
}

// Two dispatchers read version 1; the first write wins, the second loses
// the race and must say so (a transient error: its event is retried).
func TestConditionalWriteLosesRace(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	first := open("acme/deploy-api/main", now)
	if err := s.Put(ctx, &first); err != nil {
		t.Fatal(err)
	}
	a, _ := s.Get(ctx, first.ID)
	b, _ := s.Get(ctx, first.ID)
	a.Open = false
	if err := s.Put(ctx, a); err != nil {
		t.Fatalf("first writer: %v", err)
	}
	b.Failures = 9
	if err := s.Put(ctx, b); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("second writer: %v; want ErrConflict", err)
	}
	// Creating an item that another writer created meanwhile loses too.
	if err := s.Put(ctx, &state.Item{ID: first.ID, UpdatedAt: now}); !errors.Is(err, state.ErrConflict) {
		t.Fatalf("create over an item: %v; want ErrConflict", err)
	}
	got, _ := s.Get(ctx, first.ID)
	if got.Version != 2 || got.Open || got.Failures != 2 {
		t.Errorf("stored %+v; want the first writer's version 2", got)
	}
	// Unconditional (alias) puts always go through.
	for range 2 {
		if err := s.Put(ctx, &state.Item{ID: "alias:p/main", AliasOf: first.ID, Version: state.Any, UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	if al, _ := s.Get(ctx, "alias:p/main"); al.AliasOf != first.ID {
		t.Errorf("alias %+v", al)
	}
}

func TestCorruptItemIsReplaced(t *testing.T) {
	s, c := newStore(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		item    map[string]types.AttributeValue
		version int64
	}{
		{"readable version", map[string]types.AttributeValue{
			"id": &types.AttributeValueMemberS{Value: "a"}, "version": &types.AttributeValueMemberN{Value: "7"},
			"open": &types.AttributeValueMemberS{Value: "yes"}, // a bool by hand, as a string
		}, 7},
		{"no version", map[string]types.AttributeValue{
			"id": &types.AttributeValueMemberS{Value: "b"}, "version": &types.AttributeValueMemberS{Value: "x"},
			"order": &types.AttributeValueMemberN{Value: "3"},
		}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := c.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String("incidents"), Item: tc.item}); err != nil {
				t.Fatal(err)
			}
			id := tc.item["id"].(*types.AttributeValueMemberS).Value
			it, err := s.Get(ctx, id)
			if !errors.Is(err, state.ErrCorrupt) || it == nil || it.Version != tc.version || it.ID != id {
				t.Fatalf("Get: %+v, %v; want ErrCorrupt with version %d", it, err, tc.version)
			}
			repl := state.Item{ID: id, Version: it.Version, Order: state.Order{Build: 1, At: now}, UpdatedAt: now}
			if err := s.Put(ctx, &repl); err != nil {
				t.Fatalf("replacing the corrupt item: %v", err)
			}
			if it, err := s.Get(ctx, id); err != nil || it.Version != tc.version+1 {
				t.Errorf("after the replacement: %+v, %v", it, err)
			}
		})
	}
}

// pagedScan makes every Scan page one item long, so ListOpen's paging runs.
type pagedScan struct{ API }

func (p pagedScan) Scan(ctx context.Context, in *dynamodb.ScanInput, opts ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error) {
	c := *in
	c.Limit = aws.Int32(1)
	return p.API.Scan(ctx, &c, opts...)
}

func TestListOpen(t *testing.T) {
	s, c := newStore(t)
	ctx := context.Background()
	items := []state.Item{
		open("acme/a/main", now.Add(-time.Minute)),
		open("acme/b/main", now.Add(-time.Hour)),
		{ID: "acme/c/main", Order: state.Order{Build: 1, At: now}, UpdatedAt: now, ExpiresAt: now.Add(state.TTL)},
		{ID: "alias:x/main", AliasOf: "acme/b/main", Open: true, UpdatedAt: now, ExpiresAt: now.Add(state.TTL)},
	}
	expired := open("acme/d/main", now.Add(-100*24*time.Hour))
	expired.ExpiresAt = now.Add(-time.Hour) // not yet deleted by DynamoDB
	items = append(items, expired)
	for _, it := range items {
		if err := s.Put(ctx, &it); err != nil {
			t.Fatal(err)
		}
	}
	for _, st := range []*Store{s, {api: pagedScan{c}, table: "incidents", now: s.now}} {
		got, err := st.ListOpen(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, it := range got {
			ids = append(ids, it.ID)
		}
		if !reflect.DeepEqual(ids, []string{"acme/b/main", "acme/a/main"}) {
			t.Errorf("open incidents %v; want [acme/b/main acme/a/main] (oldest first)", ids)
		}
		if len(got) == 2 && !reflect.DeepEqual(got[0].FailingJobs(), []string{"rspec/0"}) {
			t.Errorf("failing jobs %v", got[0].FailingJobs())
		}
	}
}

func TestErrorsNameTheItem(t *testing.T) {
	s, _ := newStore(t)
	s.table = "missing"
	_, err := s.Get(context.Background(), "acme/x/main")
	if err == nil || errors.Is(err, state.ErrCorrupt) {
		t.Fatalf("Get on a missing table: %v", err)
	}
	if err := s.Put(context.Background(), &state.Item{ID: "acme/x/main"}); err == nil || errors.Is(err, state.ErrConflict) {
		t.Fatalf("Put on a missing table: %v; want a plain (transient) error", err)
	}
}
