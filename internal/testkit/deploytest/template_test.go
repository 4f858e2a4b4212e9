package deploytest

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/callgoose/buildkite-sqibs/internal/app"
	"github.com/callgoose/buildkite-sqibs/internal/config"
	dispatcherpkg "github.com/callgoose/buildkite-sqibs/internal/dispatcher"
	"github.com/callgoose/buildkite-sqibs/internal/queue"
)

// templateDir is where template.yaml and the Makefile live, seen from this package.
var templateDir = filepath.Join("..", "..", "..")

// cfn is template.yaml decoded with CloudFormation short forms (!Ref, !GetAtt,
// !Sub, ...) turned into their long forms ({"Ref": ...}, {"Fn::GetAtt": [...]}).
type cfn map[string]any

func loadTemplate(t *testing.T) cfn {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(templateDir, "template.yaml"))
	if err != nil {
		t.Fatalf("read template: %v", err)
	}
	v, err := parseCFN(b)
	if err != nil {
		t.Fatalf("parse template.yaml: %v", err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("template.yaml is a %T, not a mapping", v)
	}
	return m
}

// apiModes are the two ways the template deploys: BuildkiteApi "false"
// (the default: nothing of the REST API exists) and "true".
var apiModes = []bool{false, true}

// loadTemplateWith is the template as CloudFormation deploys it with
// BuildkiteApi set to api (ReconcileEvery left at its default): the
// resources and outputs whose Condition is false removed, !If on the API's
// conditions resolved, and AWS::NoValue dropped. Other conditions
// (HasAlarmTopic, ...) stay as written.
func loadTemplateWith(t *testing.T, api bool) cfn {
	t.Helper()
	conds := map[string]bool{"HasBuildkiteApi": api, "ReconcileScheduled": api}
	v, _ := resolveConditions(map[string]any(loadTemplate(t)), conds)
	m, _ := v.(map[string]any)
	for _, section := range []string{"Resources", "Outputs"} {
		entries, _ := m[section].(map[string]any)
		for id, e := range entries {
			if c, ok := dig(e, "Condition").(string); ok {
				if on, known := conds[c]; known && !on {
					delete(entries, id)
				}
			}
		}
	}
	return m
}

// resolveConditions resolves {"Fn::If": [cond, a, b]} for the conditions in
// conds; keep is false for a value that resolves to AWS::NoValue.
func resolveConditions(v any, conds map[string]bool) (out any, keep bool) {
	switch v := v.(type) {
	case map[string]any:
		if ifArgs, ok := v["Fn::If"].([]any); ok && len(v) == 1 && len(ifArgs) == 3 {
			if c, _ := ifArgs[0].(string); c != "" {
				if on, known := conds[c]; known {
					pick := ifArgs[2]
					if on {
						pick = ifArgs[1]
					}
					return resolveConditions(pick, conds)
				}
			}
		}
		if r, _ := v["Ref"].(string); r == "AWS::NoValue" && len(v) == 1 {
			return nil, false
		}
		m := make(map[string]any, len(v))
		for k, e := range v {
			if r, ok := resolveConditions(e, conds); ok {
				m[k] = r
			}
		}
		return m, true
	case []any:
		l := make([]any, 0, len(v))
		for _, e := range v {
			if r, ok := resolveConditions(e, conds); ok {
				l = append(l, r)
			}
		}
		return l, true
	}
	return v, true
}

// parseCFN decodes YAML into maps, slices and scalars, expanding
// CloudFormation's short-form tags, which a plain Unmarshal would reject.
func parseCFN(b []byte) (any, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	return cfnFromNode(&doc)
}

func cfnFromNode(n *yaml.Node) (any, error) {
	if tag := n.Tag; strings.HasPrefix(tag, "!") && !strings.HasPrefix(tag, "!!") {
		plain := *n
		plain.Tag = "" // resolve the value as if untagged
		if plain.Kind == yaml.ScalarNode {
			plain.Style &^= yaml.TaggedStyle
		}
		v, err := cfnFromNode(&plain)
		if err != nil {
			return nil, err
		}
		name := tag[1:]
		switch name {
		case "Ref", "Condition":
			return map[string]any{name: v}, nil
		case "GetAtt":
			if s, ok := v.(string); ok { // !GetAtt Res.Attr
				res, attr, found := strings.Cut(s, ".")
				if !found {
					return nil, fmt.Errorf("line %d: !GetAtt %q has no attribute", n.Line, s)
				}
				v = []any{res, attr}
			}
		}
		return map[string]any{"Fn::" + name: v}, nil
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, errors.New("empty document")
		}
		return cfnFromNode(n.Content[0])
	case yaml.AliasNode:
		return cfnFromNode(n.Alias)
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := cfnFromNode(c)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case yaml.MappingNode:
		out := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			if _, dup := out[k]; dup {
				return nil, fmt.Errorf("line %d: duplicate key %q", n.Content[i].Line, k)
			}
			v, err := cfnFromNode(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			out[k] = v
		}
		return out, nil
	default:
		var v any
		if err := n.Decode(&v); err != nil {
			return nil, fmt.Errorf("line %d: %w", n.Line, err)
		}
		return v, nil
	}
}

// get walks a path of map keys; nil when any step is missing.
func dig(v any, path ...string) any {
	for _, k := range path {
		switch m := v.(type) {
		case map[string]any:
			v = m[k]
		case cfn:
			v = m[k]
		default:
			return nil
		}
	}
	return v
}

func (c cfn) resource(t *testing.T, id, typ string) map[string]any {
	t.Helper()
	r, ok := dig(c, "Resources", id).(map[string]any)
	if !ok {
		t.Fatalf("resource %s missing", id)
	}
	if r["Type"] != typ {
		t.Fatalf("resource %s is %v; want %s", id, r["Type"], typ)
	}
	return r
}

func (c cfn) props(t *testing.T, id, typ string) map[string]any {
	t.Helper()
	p, _ := c.resource(t, id, typ)["Properties"].(map[string]any)
	return p
}

// target names the logical id a value points at: {"Ref": X} or
// {"Fn::GetAtt": [X, attr]} (the attribute returned second); "" otherwise.
func refTarget(v any) (id, attr string) {
	m, ok := v.(map[string]any)
	if !ok || len(m) != 1 {
		return "", ""
	}
	if r, ok := m["Ref"].(string); ok {
		return r, ""
	}
	if ga, ok := m["Fn::GetAtt"].([]any); ok && len(ga) == 2 {
		id, _ := ga[0].(string)
		attr, _ := ga[1].(string)
		return id, attr
	}
	return "", ""
}

func strList(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, e := range v {
			if s, ok := e.(string); ok {
				out = append(out, s)
			} else {
				out = append(out, fmt.Sprint(e))
			}
		}
		return out
	}
	return nil
}

func intValue(t *testing.T, what string, v any) int {
	t.Helper()
	n, ok := v.(int)
	if !ok {
		t.Fatalf("%s = %#v; want a literal whole number", what, v)
	}
	return n
}

// functionProp is a function's property with SAM's Globals applied (maps merge
// key by key, the function's own value wins).
func (c cfn) functionProp(t *testing.T, fn string, path ...string) any {
	t.Helper()
	own := dig(c.props(t, fn, "AWS::Serverless::Function"), path...)
	global := dig(c, append([]string{"Globals", "Function"}, path...)...)
	om, ownMap := own.(map[string]any)
	gm, globalMap := global.(map[string]any)
	switch {
	case ownMap && globalMap:
		merged := maps.Clone(gm)
		maps.Copy(merged, om)
		return merged
	case own != nil:
		return own
	default:
		return global
	}
}

func (c cfn) environment(t *testing.T, fn string) map[string]any {
	t.Helper()
	env, _ := c.functionProp(t, fn, "Environment", "Variables").(map[string]any)
	return env
}

// grants lists, for the execution role of fn, each allowed action with the
// logical ids of the resources it is allowed on.
func (c cfn) grants(t *testing.T, fn string) map[string][]string {
	t.Helper()
	p := c.props(t, fn, "AWS::Serverless::Function")
	if p["Policies"] != nil {
		t.Errorf("%s has SAM Policies: they would only apply to a SAM-generated role", fn)
	}
	roleID, attr := refTarget(p["Role"])
	if roleID == "" || attr != "Arn" {
		// Without an explicit role SAM generates one carrying managed
		// policies with Resource "*" (basic execution, SQS poller).
		t.Fatalf("%s Role = %#v; want !GetAtt <role>.Arn", fn, p["Role"])
	}
	role := c.props(t, roleID, "AWS::IAM::Role")
	if role["ManagedPolicyArns"] != nil || role["PermissionsBoundary"] != nil {
		t.Errorf("%s has managed policies %v: use inline statements on named resources", roleID, role["ManagedPolicyArns"])
	}
	if got := dig(role, "AssumeRolePolicyDocument", "Statement"); !reflect.DeepEqual(got, []any{map[string]any{
		"Effect": "Allow", "Principal": map[string]any{"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole",
	}}) {
		t.Errorf("%s trust policy = %#v; want only lambda.amazonaws.com", roleID, got)
	}
	out := map[string][]string{}
	pols, _ := role["Policies"].([]any)
	for _, pol := range pols {
		stmts, _ := dig(pol, "PolicyDocument", "Statement").([]any)
		for _, s := range stmts {
			st, _ := s.(map[string]any)
			if st["Effect"] != "Allow" || st["NotAction"] != nil || st["NotResource"] != nil || st["Condition"] != nil {
				t.Errorf("%s: statement %v: want plain Allow statements (no Deny/Not*/Condition to reason about)", roleID, st)
				continue
			}
			var ids []string
			res := st["Resource"]
			if l, ok := res.([]any); ok {
				for _, r := range l {
					ids = append(ids, grantTarget(t, roleID, r))
				}
			} else {
				ids = append(ids, grantTarget(t, roleID, res))
			}
			for _, a := range strList(st["Action"]) {
				out[a] = append(out[a], ids...)
			}
		}
	}
	for a := range out {
		slices.Sort(out[a])
		out[a] = slices.Compact(out[a])
	}
	return out
}

// resourceID accepts only references to resources of this template.
func grantTarget(t *testing.T, role string, r any) string {
	t.Helper()
	id, attr := refTarget(r)
	switch {
	case id == "":
		t.Errorf("%s: Resource %#v is not a reference to a resource of this stack", role, r)
		return fmt.Sprint(r)
	case attr != "" && attr != "Arn":
		t.Errorf("%s: Resource %#v: want !Ref or !GetAtt <id>.Arn", role, r)
	}
	return id
}

func TestParseCFN(t *testing.T) {
	v, err := parseCFN([]byte(`
a: !Ref X
b: !GetAtt Q.Arn
c: !Sub "${AWS::StackName}-x"
d: !If [Cond, !Ref A, !Ref "AWS::NoValue"]
e: !Not [!Equals [!Ref P, ""]]
f: 30
g: "30"
h: true
i: !GetAtt [Q, QueueUrl]
`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"a": map[string]any{"Ref": "X"},
		"b": map[string]any{"Fn::GetAtt": []any{"Q", "Arn"}},
		"c": map[string]any{"Fn::Sub": "${AWS::StackName}-x"},
		"d": map[string]any{"Fn::If": []any{"Cond", map[string]any{"Ref": "A"}, map[string]any{"Ref": "AWS::NoValue"}}},
		"e": map[string]any{"Fn::Not": []any{map[string]any{"Fn::Equals": []any{map[string]any{"Ref": "P"}, ""}}}},
		"f": 30,
		"g": "30",
		"h": true,
		"i": map[string]any{"Fn::GetAtt": []any{"Q", "QueueUrl"}},
	}
	if !reflect.DeepEqual(v, want) {
		t.Fatalf("parseCFN =\n%#v\nwant\n%#v", v, want)
	}
	for _, bad := range []string{"a: !GetAtt NoDot", "a: 1\na: 2"} {
		if _, err := parseCFN([]byte(bad)); err == nil {
			t.Errorf("parseCFN(%q): no error", bad)
		}
	}
}

func TestReceiverPermissions(t *testing.T) {
	// The same with the Buildkite API: the receiver only learns that a
	// token is configured, and cannot read it.
	for _, api := range apiModes {
		got := loadTemplateWith(t, api).grants(t, "ReceiverFunction")
		want := map[string][]string{
			"logs:CreateLogStream":          {"ReceiverLogGroup"},
			"logs:PutLogEvents":             {"ReceiverLogGroup"},
			"sqs:SendMessage":               {"EventQueue"},
			"secretsmanager:GetSecretValue": {"WebhookTokenSecret"},
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("BuildkiteApi %v: receiver may do\n%v\nwant exactly\n%v", api, got, want)
		}
	}
}

func TestDispatcherPermissions(t *testing.T) {
	for _, api := range apiModes {
		got := loadTemplateWith(t, api).grants(t, "DispatcherFunction")
		want := dispatcherGrants()
		if api {
			// Failed jobs and parent builds: the API token, read only.
			want["secretsmanager:GetSecretValue"] = []string{"BuildkiteApiTokenSecret", "SqibsTokenSecret"}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("BuildkiteApi %v: dispatcher may do\n%v\nwant exactly\n%v", api, got, want)
		}
	}
}

// The reconciler exists only with the API, and may only Scan the state
// table (no item reads or writes: the dispatcher owns the items), send to
// the event queue (not the DLQ), and read the API token.
func TestReconcilerPermissions(t *testing.T) {
	if r := dig(loadTemplateWith(t, false), "Resources", "ReconcilerFunction"); r != nil {
		t.Errorf("BuildkiteApi false: the reconciler exists")
	}
	got := loadTemplateWith(t, true).grants(t, "ReconcilerFunction")
	want := map[string][]string{
		"logs:CreateLogStream":          {"ReconcilerLogGroup"},
		"logs:PutLogEvents":             {"ReconcilerLogGroup"},
		"dynamodb:Scan":                 {"StateTable"},
		"sqs:SendMessage":               {"EventQueue"},
		"secretsmanager:GetSecretValue": {"BuildkiteApiTokenSecret"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("reconciler may do\n%v\nwant exactly\n%v", got, want)
	}
}

func dispatcherGrants() map[string][]string {
	return map[string][]string{
		"logs:CreateLogStream": {"DispatcherLogGroup"},
		"logs:PutLogEvents":    {"DispatcherLogGroup"},
		// The event source mapping polls with the function's role.
		"sqs:ReceiveMessage":     {"EventQueue"},
		"sqs:DeleteMessage":      {"EventQueue"},
		"sqs:GetQueueAttributes": {"EventQueue"},
		// Backoff of failed messages (the URL is looked up from the event's ARN).
		"sqs:ChangeMessageVisibility": {"EventQueue"},
		"sqs:GetQueueUrl":             {"EventQueue"},
		// Permanent failures, at once.
		"sqs:SendMessage":               {"DeadLetterQueue"},
		"secretsmanager:GetSecretValue": {"SqibsTokenSecret"},
		// Incident state: the two calls the dispatcher makes, on its table
		// (no Scan, Query, UpdateItem or DeleteItem).
		"dynamodb:GetItem": {"StateTable"},
		"dynamodb:PutItem": {"StateTable"},
	}
}

// TestReferencesResolve: whichever way it deploys, every !Ref, !GetAtt and
// ${...} names a parameter, a pseudo parameter or a resource that exists
// then (a resource of the API referred to without its condition would fail
// the deploy with BuildkiteApi "false").
func TestReferencesResolve(t *testing.T) {
	sub := regexp.MustCompile(`\$\{([^}!]+)\}`)
	for _, api := range apiModes {
		tpl := loadTemplateWith(t, api)
		known := map[string]bool{}
		for _, section := range []string{"Parameters", "Resources"} {
			for id := range dig(tpl, section).(map[string]any) {
				known[id] = true
			}
		}
		// What SAM generates for a function: <id>Url, <id><EventName>.
		for id, r := range dig(tpl, "Resources").(map[string]any) {
			if dig(r, "Type") != "AWS::Serverless::Function" {
				continue
			}
			if dig(r, "Properties", "FunctionUrlConfig") != nil {
				known[id+"Url"] = true
			}
			evs, _ := dig(r, "Properties", "Events").(map[string]any)
			for ev := range evs {
				known[id+ev] = true
			}
		}
		var walk func(where string, v any)
		walk = func(where string, v any) {
			switch v := v.(type) {
			case map[string]any:
				if id, _ := refTarget(v); id != "" && !strings.HasPrefix(id, "AWS::") && !known[id] {
					t.Errorf("BuildkiteApi %v: %s refers to %s, which does not exist then", api, where, id)
				}
				if s, ok := v["Fn::Sub"].(string); ok {
					for _, m := range sub.FindAllStringSubmatch(s, -1) {
						if id, _, _ := strings.Cut(m[1], "."); !strings.HasPrefix(id, "AWS::") && !known[id] {
							t.Errorf("BuildkiteApi %v: %s: ${%s} does not exist then", api, where, m[1])
						}
					}
				}
				for k, e := range v {
					walk(where+"."+k, e)
				}
			case []any:
				for i, e := range v {
					walk(fmt.Sprintf("%s[%d]", where, i), e)
				}
			}
		}
		walk("Resources", tpl["Resources"])
		walk("Outputs", tpl["Outputs"])
	}
}

// wildcards reports every policy statement under v whose Action or Resource
// holds a "*" (Resource "*", "sqs:*", "arn:...:*" spelled out in a !Sub).
func policyWildcards(v any, path string) []string {
	var found []string
	switch v := v.(type) {
	case map[string]any:
		if _, isStmt := v["Effect"]; isStmt {
			for _, k := range []string{"Action", "NotAction", "Resource", "NotResource"} {
				if containsStar(v[k]) {
					found = append(found, fmt.Sprintf("%s.%s = %v", path, k, v[k]))
				}
			}
		}
		for _, k := range slices.Sorted(maps.Keys(v)) {
			found = append(found, policyWildcards(v[k], path+"."+k)...)
		}
	case []any:
		for i, e := range v {
			found = append(found, policyWildcards(e, fmt.Sprintf("%s[%d]", path, i))...)
		}
	}
	return found
}

func containsStar(v any) bool {
	switch v := v.(type) {
	case string:
		return strings.Contains(v, "*")
	case map[string]any:
		for _, e := range v {
			if containsStar(e) {
				return true
			}
		}
	case []any:
		for _, e := range v {
			if containsStar(e) {
				return true
			}
		}
	}
	return false
}

func TestNoWildcardPermissions(t *testing.T) {
	// The detector itself, on statements it must catch and one it must not.
	for _, tc := range []struct {
		doc  string
		want int
	}{
		{`{Effect: Allow, Action: "sqs:*", Resource: !GetAtt Q.Arn}`, 1},
		{`{Effect: Allow, Action: sqs:SendMessage, Resource: "*"}`, 1},
		{`{Effect: Allow, Action: [logs:PutLogEvents], Resource: [!Sub "arn:aws:logs:${AWS::Region}:*"]}`, 1},
		{`{Effect: Allow, Action: "*", NotResource: "*"}`, 2},
		{`{Effect: Allow, Action: sqs:SendMessage, Resource: !GetAtt Q.Arn}`, 0},
	} {
		v, err := parseCFN([]byte(tc.doc))
		if err != nil {
			t.Fatal(err)
		}
		if got := policyWildcards(v, "x"); len(got) != tc.want {
			t.Errorf("wildcards(%s) = %q; want %d findings", tc.doc, got, tc.want)
		}
	}

	tpl := loadTemplate(t)
	for _, f := range policyWildcards(tpl["Resources"], "Resources") {
		t.Errorf("wildcard in a policy: %s", f)
	}
	// Managed policies would bring "*" statements the template cannot show.
	for id, r := range dig(tpl, "Resources").(map[string]any) {
		if p := dig(r, "Properties", "ManagedPolicyArns"); p != nil {
			t.Errorf("%s: ManagedPolicyArns %v", id, p)
		}
	}
}

func TestQueues(t *testing.T) {
	tpl := loadTemplate(t)
	q := tpl.props(t, "EventQueue", "AWS::SQS::Queue")
	dlq := tpl.props(t, "DeadLetterQueue", "AWS::SQS::Queue")

	for name, p := range map[string]map[string]any{"EventQueue": q, "DeadLetterQueue": dlq} {
		if p["FifoQueue"] != true {
			t.Errorf("%s FifoQueue = %v; want true", name, p["FifoQueue"])
		}
		if p["ContentBasedDeduplication"] != false {
			t.Errorf("%s ContentBasedDeduplication = %v; want false (the senders set MessageDeduplicationId)", name, p["ContentBasedDeduplication"])
		}
		if p["SqsManagedSseEnabled"] != true {
			t.Errorf("%s SqsManagedSseEnabled = %v; want true", name, p["SqsManagedSseEnabled"])
		}
		if qn, _ := dig(p, "QueueName", "Fn::Sub").(string); !strings.HasSuffix(qn, ".fifo") {
			t.Errorf("%s QueueName = %#v; want a !Sub ending in .fifo", name, p["QueueName"])
		}
	}
	if q["DeduplicationScope"] != "messageGroup" || q["FifoThroughputLimit"] != "perMessageGroupId" {
		t.Errorf("EventQueue dedup scope / throughput = %v / %v; want high-throughput FIFO", q["DeduplicationScope"], q["FifoThroughputLimit"])
	}

	if id, attr := refTarget(dig(q, "RedrivePolicy", "deadLetterTargetArn")); id != "DeadLetterQueue" || attr != "Arn" {
		t.Errorf("RedrivePolicy.deadLetterTargetArn = %#v; want !GetAtt DeadLetterQueue.Arn", dig(q, "RedrivePolicy", "deadLetterTargetArn"))
	}
	// A last-resort net: the dispatcher dead-letters by age (RETRY_FOR), and
	// the in-process queue of make dev and the tests uses the same number.
	if got := intValue(t, "RedrivePolicy.maxReceiveCount", dig(q, "RedrivePolicy", "maxReceiveCount")); got != queue.MaxReceiveCount {
		t.Errorf("RedrivePolicy.maxReceiveCount = %d; want queue.MaxReceiveCount (%d)", got, queue.MaxReceiveCount)
	}
	if got := intValue(t, "DeadLetterQueue MessageRetentionPeriod", dlq["MessageRetentionPeriod"]); got != 1209600 {
		t.Errorf("DeadLetterQueue MessageRetentionPeriod = %d; want 1209600 (14 days)", got)
	}

	// Only the event queue may use the DLQ; its ARN is spelled out (a
	// !GetAtt would be a cycle), so it must name the event queue exactly.
	allow, _ := dlq["RedriveAllowPolicy"].(map[string]any)
	if allow["redrivePermission"] != "byQueue" {
		t.Errorf("RedriveAllowPolicy.redrivePermission = %v; want byQueue", allow["redrivePermission"])
	}
	src, _ := allow["sourceQueueArns"].([]any)
	qName, _ := dig(q, "QueueName", "Fn::Sub").(string)
	wantARN := "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:" + qName
	if len(src) != 1 || dig(src[0], "Fn::Sub") != wantARN {
		t.Errorf("RedriveAllowPolicy.sourceQueueArns = %#v; want [!Sub %s]", src, wantARN)
	}
}

func TestTimeouts(t *testing.T) {
	for _, api := range apiModes {
		t.Run(fmt.Sprintf("BuildkiteApi %v", api), func(t *testing.T) { checkTimeouts(t, loadTemplateWith(t, api), api) })
	}
	// Without the API the dispatcher keeps its 30 s and the queue its 180 s.
	tpl := loadTemplateWith(t, false)
	if got := tpl.functionProp(t, "DispatcherFunction", "Timeout"); got != 30 {
		t.Errorf("dispatcher Timeout without the API = %v; want 30 as before", got)
	}
	if got := dig(tpl.props(t, "EventQueue", "AWS::SQS::Queue"), "VisibilityTimeout"); got != 180 {
		t.Errorf("EventQueue VisibilityTimeout without the API = %v; want 180 as before", got)
	}
}

func checkTimeouts(t *testing.T, tpl cfn, api bool) {
	dispatcher := intValue(t, "dispatcher Timeout", tpl.functionProp(t, "DispatcherFunction", "Timeout"))
	receiver := intValue(t, "receiver Timeout", tpl.functionProp(t, "ReceiverFunction", "Timeout"))
	q := tpl.props(t, "EventQueue", "AWS::SQS::Queue")

	// AWS: the source queue's visibility timeout at least six times the
	// function timeout, so a batch still being worked on is not redelivered.
	if vis := intValue(t, "EventQueue VisibilityTimeout", q["VisibilityTimeout"]); vis < 6*dispatcher {
		t.Errorf("EventQueue VisibilityTimeout = %d s; want >= 6 x dispatcher Timeout (%d s) = %d", vis, dispatcher, 6*dispatcher)
	}
	// Buildkite waits about 5 s and does not retry.
	if receiver > 5 {
		t.Errorf("receiver Timeout = %d s; Buildkite gives up after about 5 s", receiver)
	}
	// The dispatcher starts no delivery with less than its delivery budget
	// left; at every SQIBS_TIMEOUT the template allows, the function must
	// leave time beyond it to deliver a batch (5 s at least).
	allowed := strList(dig(tpl, "Parameters", "SqibsTimeout", "AllowedValues"))
	if len(allowed) == 0 {
		t.Fatal("SqibsTimeout has no AllowedValues: any value could leave the dispatcher no time to deliver")
	}
	for _, v := range allowed {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SqibsTimeout allows %q: %v", v, err)
		}
		if budget := dispatcherpkg.DeliveryBudget(d, api); time.Duration(dispatcher)*time.Second < budget+5*time.Second {
			t.Errorf("SqibsTimeout %s: delivery budget %s leaves under 5 s of the dispatcher's %d s Timeout", v, budget, dispatcher)
		}
	}

	// Retention must outlast the longest retry window, or messages would
	// expire instead of reaching the dead-letter queue.
	retention := time.Duration(intValue(t, "EventQueue MessageRetentionPeriod", q["MessageRetentionPeriod"])) * time.Second
	for _, v := range strList(dig(tpl, "Parameters", "RetryFor", "AllowedValues")) {
		if d, err := time.ParseDuration(v); err != nil || d >= retention {
			t.Errorf("RetryFor allows %q (%v): not a duration under the queue's retention %s", v, err, retention)
		}
	}
}

// TestRetryRules: the template's Rules admit exactly the RetryFor and
// MaxBackoff pairs the dispatcher accepts at start, those for which SQS's
// redrive net cannot fire before RETRY_FOR (dispatcher.MaxRetryFor).
func TestRetryRules(t *testing.T) {
	tpl := loadTemplate(t)
	rules, _ := tpl["Rules"].(map[string]any)
	if len(rules) == 0 {
		t.Fatal("template.yaml has no Rules: any RetryFor and MaxBackoff pair would deploy")
	}
	retryFors := strList(dig(tpl, "Parameters", "RetryFor", "AllowedValues"))
	backoffs := strList(dig(tpl, "Parameters", "MaxBackoff", "AllowedValues"))
	if len(retryFors) == 0 || len(backoffs) == 0 {
		t.Fatal("RetryFor and MaxBackoff need AllowedValues for the Rules to cover every pair")
	}
	admitted := 0
	for _, rf := range retryFors {
		for _, mb := range backoffs {
			params := map[string]string{"RetryFor": rf, "MaxBackoff": mb}
			deploys := true
			for name, r := range rules {
				if cond, ok := dig(r, "RuleCondition").(map[string]any); ok && !evalRule(t, name, cond, params) {
					continue
				}
				asserts, _ := dig(r, "Assertions").([]any)
				for _, a := range asserts {
					if !evalRule(t, name, dig(a, "Assert"), params) {
						deploys = false
					}
				}
			}
			r := config.NewReader(config.Map(map[string]string{"SQIBS_URL": "https://x/v1/process", "RETRY_FOR": rf, "MAX_BACKOFF": mb}))
			dispatcherpkg.LoadSettings(r)
			if starts := r.Err() == nil; deploys != starts {
				t.Errorf("RetryFor %s, MaxBackoff %s: the Rules say deploy=%v, the dispatcher says start=%v (%v)", rf, mb, deploys, starts, r.Err())
			}
			if deploys {
				admitted++
			}
		}
	}
	if admitted == 0 {
		t.Error("the Rules admit no pair at all")
	}
}

// evalRule evaluates the rule functions the template uses (Ref to a
// parameter, Fn::Equals, Fn::Contains, Fn::Not, Fn::And, Fn::Or).
func evalRule(t *testing.T, rule string, v any, params map[string]string) bool {
	t.Helper()
	val := func(x any) any {
		if id, attr := refTarget(x); id != "" && attr == "" {
			p, ok := params[id]
			if !ok {
				t.Fatalf("rule %s refers to %s, which this test does not vary", rule, id)
			}
			return p
		}
		return x
	}
	m, _ := v.(map[string]any)
	if len(m) != 1 {
		t.Fatalf("rule %s: %#v is not one rule function", rule, v)
	}
	for fn, arg := range m {
		args, _ := arg.([]any)
		switch fn {
		case "Fn::Equals":
			return len(args) == 2 && fmt.Sprint(val(args[0])) == fmt.Sprint(val(args[1]))
		case "Fn::Contains":
			return len(args) == 2 && slices.Contains(strList(args[0]), fmt.Sprint(val(args[1])))
		case "Fn::Not":
			return len(args) == 1 && !evalRule(t, rule, args[0], params)
		case "Fn::And", "Fn::Or":
			all, any := true, false
			for _, a := range args {
				r := evalRule(t, rule, a, params)
				all, any = all && r, any || r
			}
			return fn == "Fn::And" && all || fn == "Fn::Or" && any
		}
		t.Fatalf("rule %s: %s is not a rule function this test knows", rule, fn)
	}
	return false
}

func TestFunctionURL(t *testing.T) {
	p := loadTemplate(t).props(t, "ReceiverFunction", "AWS::Serverless::Function")
	u, _ := p["FunctionUrlConfig"].(map[string]any)
	if u["AuthType"] != "NONE" || u["InvokeMode"] != "BUFFERED" {
		t.Errorf("FunctionUrlConfig = %v; want AuthType NONE, InvokeMode BUFFERED", u)
	}
	if u["Cors"] != nil {
		t.Errorf("FunctionUrlConfig.Cors = %v; Buildkite is not a browser", u["Cors"])
	}
}

func TestSQSEvent(t *testing.T) {
	tpl := loadTemplate(t)
	events, _ := tpl.props(t, "DispatcherFunction", "AWS::Serverless::Function")["Events"].(map[string]any)
	if len(events) != 1 {
		t.Fatalf("dispatcher Events = %v; want the one SQS event", events)
	}
	ev, _ := events["Queue"].(map[string]any) // "Queue": outputs use the generated DispatcherFunctionQueue
	if ev["Type"] != "SQS" {
		t.Fatalf("dispatcher event Queue = %v; want Type SQS", ev)
	}
	p, _ := ev["Properties"].(map[string]any)
	if id, attr := refTarget(p["Queue"]); id != "EventQueue" || attr != "Arn" {
		t.Errorf("SQS event Queue = %#v; want !GetAtt EventQueue.Arn", p["Queue"])
	}
	if got := strList(p["FunctionResponseTypes"]); !slices.Equal(got, []string{"ReportBatchItemFailures"}) {
		t.Errorf("FunctionResponseTypes = %v; want [ReportBatchItemFailures]", got)
	}
	if w, ok := p["MaximumBatchingWindowInSeconds"]; ok && w != 0 {
		t.Errorf("MaximumBatchingWindowInSeconds = %v: FIFO queues do not support a batching window", w)
	}
	for _, tc := range []struct {
		path     []string
		param    string
		min, max int
	}{
		{[]string{"BatchSize"}, "BatchSize", 1, 10},                                            // FIFO maximum
		{[]string{"ScalingConfig", "MaximumConcurrency"}, "DispatcherMaxConcurrency", 2, 1000}, // Lambda's range
	} {
		if id, _ := refTarget(dig(p, tc.path...)); id != tc.param {
			t.Errorf("%v = %#v; want !Ref %s", tc.path, dig(p, tc.path...), tc.param)
			continue
		}
		param, _ := dig(tpl, "Parameters", tc.param).(map[string]any)
		lo, hi := intValue(t, tc.param+" MinValue", param["MinValue"]), intValue(t, tc.param+" MaxValue", param["MaxValue"])
		if lo < tc.min || hi > tc.max || lo > hi {
			t.Errorf("%s allows %d..%d; Lambda accepts %d..%d", tc.param, lo, hi, tc.min, tc.max)
		}
	}
}

// ruleVars are read by both functions (DESIGN §2, Rules), from one parameter each.
var ruleVars = map[string]string{
	"ALERT_BRANCHES":       "AlertBranches",
	"ALERT_PIPELINES":      "AlertPipelines",
	"ALERT_ON_FAILING":     "AlertOnFailing",
	"ALERT_ON_CANCELED":    "AlertOnCanceled",
	"ALERT_PULL_REQUESTS":  "AlertPullRequests",
	"JOB_INCIDENTS":        "JobIncidents",
	"SEVERITY":             "Severity",
	"ALERT_AFTER_FAILURES": "AlertAfterFailures",
	"SECRET_TTL":           "SecretTtl",
}

func TestEnvironment(t *testing.T) {
	for _, api := range apiModes {
		t.Run(fmt.Sprintf("BuildkiteApi %v", api), func(t *testing.T) { checkEnvironment(t, loadTemplateWith(t, api), api) })
	}
}

func checkEnvironment(t *testing.T, tpl cfn, api bool) {
	// Every DESIGN §2 variable that applies in Lambda, with what it must
	// point at: a template parameter, or a resource (id.attr; attr "" = !Ref).
	// BUILDKITE_WEBHOOK_TOKEN / SQIBS_API_TOKEN are for local runs only: in
	// Lambda a token lives in Secrets Manager, never in the environment.
	want := map[string]map[string]string{
		"ReceiverFunction": {
			"QUEUE_URL":                "EventQueue.QueueUrl",
			"WEBHOOK_TOKEN_SECRET_ARN": "WebhookTokenSecret.",
			"SIGNATURE_MAX_AGE":        "SignatureMaxAge",
			"MAX_BODY_BYTES":           "MaxBodyBytes",
			"ALLOW_TOKEN_HEADER":       "AllowTokenHeader",
		},
		"DispatcherFunction": {
			"SQIBS_URL":              "SqibsUrl",
			"SQIBS_TOKEN_SECRET_ARN": "SqibsTokenSecret.",
			"SQIBS_AUTH":             "SqibsAuth",
			"SQIBS_FROM":             "SqibsFrom",
			"SQIBS_TIMEOUT":          "SqibsTimeout",
			"DLQ_URL":                "DeadLetterQueue.QueueUrl",
			"RETRY_FOR":              "RetryFor",
			"MAX_BACKOFF":            "MaxBackoff",
			"STATE_TABLE":            "StateTable.",
		},
	}
	// Declared only so `sam local invoke --env-vars` can set them, and empty
	// (= unset) in the template: no token ever lives in a Lambda environment.
	localOnly := map[string][]string{
		"ReceiverFunction": {"BUILDKITE_WEBHOOK_TOKEN", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_SECRETS_MANAGER",
			"BUILDKITE_API_TOKEN"}, // its rules: "a token is configured"
		"DispatcherFunction": {"SQIBS_API_TOKEN", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_ENDPOINT_URL_DYNAMODB",
			"BUILDKITE_API_TOKEN", "BUILDKITE_API_URL"},
	}
	// The API token's secret: on the receiver only as "a token is
	// configured" (its rules defer triggered builds), on the dispatcher to
	// read; empty (= unset, the API off) without the API.
	for _, fn := range []string{"ReceiverFunction", "DispatcherFunction"} {
		if api {
			want[fn]["BUILDKITE_API_TOKEN_SECRET_ARN"] = "BuildkiteApiTokenSecret."
		} else {
			localOnly[fn] = append(localOnly[fn], "BUILDKITE_API_TOKEN_SECRET_ARN")
		}
	}
	if api {
		want["ReconcilerFunction"] = map[string]string{
			"STATE_TABLE":                    "StateTable.",
			"QUEUE_URL":                      "EventQueue.QueueUrl",
			"BUILDKITE_API_TOKEN_SECRET_ARN": "BuildkiteApiTokenSecret.",
		}
		localOnly["ReconcilerFunction"] = []string{"BUILDKITE_API_TOKEN", "BUILDKITE_API_URL", "AWS_ENDPOINT_URL_SQS",
			"AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_ENDPOINT_URL_DYNAMODB"}
	}
	for fn, vars := range want {
		maps.Copy(vars, ruleVars)
		env := tpl.environment(t, fn)
		for _, name := range localOnly[fn] {
			v, ok := env[name]
			if !ok {
				t.Errorf("%s: %s must be declared (empty) for sam local invoke --env-vars", fn, name)
			} else if v != "" {
				t.Errorf("%s: %s = %#v; it must stay empty in the template", fn, name, v)
			}
			delete(env, name)
		}
		for _, name := range slices.Sorted(maps.Keys(env)) {
			if _, ok := vars[name]; !ok {
				t.Errorf("%s: unexpected environment variable %s (belongs to the other function, or to local runs only)", fn, name)
			}
		}
		for _, name := range slices.Sorted(maps.Keys(vars)) {
			v, ok := env[name]
			if !ok {
				t.Errorf("%s: environment variable %s missing", fn, name)
				continue
			}
			id, attr := refTarget(v)
			if got := id + "." + attr; !strings.Contains(vars[name], ".") {
				if attr != "" || id != vars[name] {
					t.Errorf("%s: %s = %#v; want !Ref %s", fn, name, v, vars[name])
				}
			} else if got != vars[name] {
				t.Errorf("%s: %s = %#v; want a reference to %s", fn, name, v, vars[name])
			}
		}
	}
}

// TestParameters ties each setting's parameter to DESIGN §2's default, so a
// deploy that changes nothing behaves like the code's own defaults.
func TestParameters(t *testing.T) {
	tpl := loadTemplate(t)
	params, _ := tpl["Parameters"].(map[string]any)
	for name, p := range params {
		if d, _ := dig(p, "Description").(string); strings.TrimSpace(d) == "" {
			t.Errorf("parameter %s has no Description", name)
		}
	}
	for _, tc := range []struct{ param, def string }{
		{"SqibsAuth", "header"},
		{"SqibsFrom", "Buildkite"},
		{"SqibsTimeout", "5s"},
		{"RetryFor", "24h"},
		{"MaxBackoff", "2m"},
		{"SignatureMaxAge", "5m"},
		{"MaxBodyBytes", "1048576"},
		{"AllowTokenHeader", "true"},
		{"SecretTtl", "5m"},
		{"AlertBranches", "default"},
		{"AlertPipelines", "*"},
		{"AlertOnFailing", "true"},
		{"AlertOnCanceled", "false"},
		{"AlertPullRequests", "false"},
		{"JobIncidents", "false"},
		{"Severity", "high"},
		{"AlertAfterFailures", "1"},
		{"BuildkiteApi", "false"}, // everything of issue 13 off unless asked for
		{"ReconcileEvery", "10m"},
	} {
		p, ok := params[tc.param].(map[string]any)
		if !ok {
			t.Errorf("parameter %s missing", tc.param)
			continue
		}
		if got := fmt.Sprint(p["Default"]); got != tc.def {
			t.Errorf("parameter %s Default = %q; DESIGN §2 default is %q", tc.param, got, tc.def)
		}
	}
	url, _ := params["SqibsUrl"].(map[string]any)
	if _, hasDefault := url["Default"]; hasDefault || url["AllowedPattern"] != "^https://.+" {
		t.Errorf("SqibsUrl = %v; want required (no Default) and https only", url)
	}
	if got := strList(dig(params, "Severity", "AllowedValues")); !slices.Equal(got, []string{"critical", "high", "medium", "low", "info"}) {
		t.Errorf("Severity AllowedValues = %v", got)
	}
	if got := strList(dig(params, "SqibsAuth", "AllowedValues")); !slices.Equal(got, []string{"header", "query"}) {
		t.Errorf("SqibsAuth AllowedValues = %v", got)
	}
}

// TestStateTable: the incident state table of DESIGN §5b, as the dispatcher
// and internal/state/dynamo use it.
func TestStateTable(t *testing.T) {
	tpl := loadTemplate(t)
	p := tpl.props(t, "StateTable", "AWS::DynamoDB::Table")
	if p["BillingMode"] != "PAY_PER_REQUEST" {
		t.Errorf("BillingMode = %v; want PAY_PER_REQUEST (on-demand)", p["BillingMode"])
	}
	if got, want := p["KeySchema"], []any{map[string]any{"AttributeName": "id", "KeyType": "HASH"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("KeySchema = %v; want only the partition key id", got)
	}
	if got, want := p["AttributeDefinitions"], []any{map[string]any{"AttributeName": "id", "AttributeType": "S"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("AttributeDefinitions = %v; want id as a string", got)
	}
	if got := p["TimeToLiveSpecification"]; !reflect.DeepEqual(got, map[string]any{"AttributeName": "expires_at", "Enabled": true}) {
		t.Errorf("TimeToLiveSpecification = %v; want expires_at, enabled", got)
	}
	if dig(p, "SSESpecification", "SSEEnabled") != true {
		t.Errorf("SSESpecification = %v; want SSEEnabled true", p["SSESpecification"])
	}
	pitr := dig(p, "PointInTimeRecoverySpecification", "PointInTimeRecoveryEnabled")
	if got, want := pitr, map[string]any{"Fn::If": []any{"HasStatePointInTimeRecovery", true, false}}; !reflect.DeepEqual(got, want) {
		t.Errorf("PointInTimeRecoveryEnabled = %#v; want it to follow StatePointInTimeRecovery", got)
	}
	if got := dig(tpl, "Conditions", "HasStatePointInTimeRecovery"); !reflect.DeepEqual(got, map[string]any{
		"Fn::Equals": []any{map[string]any{"Ref": "StatePointInTimeRecovery"}, "true"}}) {
		t.Errorf("HasStatePointInTimeRecovery = %#v", got)
	}
	if got := strList(dig(tpl, "Parameters", "StatePointInTimeRecovery", "AllowedValues")); !slices.Equal(got, []string{"true", "false"}) {
		t.Errorf("StatePointInTimeRecovery AllowedValues = %v", got)
	}
	// No other resource names the table: the receiver (checked exactly by
	// TestReceiverPermissions) cannot reach it; the dispatcher reads and
	// writes it (STATE_TABLE), and the reconciler, with the API, may only
	// Scan it (TestReconcilerPermissions).
	for id, r := range dig(tpl, "Resources").(map[string]any) {
		switch id {
		case "StateTable", "DispatcherFunction", "DispatcherRole", "ReconcilerFunction", "ReconcilerRole":
			continue
		}
		if refersTo(r, "StateTable") {
			t.Errorf("%s refers to StateTable", id)
		}
	}
}

// refersTo reports whether v holds a !Ref or !GetAtt of id.
func refersTo(v any, id string) bool {
	switch v := v.(type) {
	case map[string]any:
		if target, _ := refTarget(v); target == id {
			return true
		}
		for _, e := range v {
			if refersTo(e, id) {
				return true
			}
		}
	case []any:
		for _, e := range v {
			if refersTo(e, id) {
				return true
			}
		}
	}
	return false
}

func TestSecrets(t *testing.T) {
	tpl := loadTemplate(t)
	webhook := tpl.props(t, "WebhookTokenSecret", "AWS::SecretsManager::Secret")
	gen, _ := webhook["GenerateSecretString"].(map[string]any)
	if gen == nil || webhook["SecretString"] != nil {
		t.Fatalf("WebhookTokenSecret = %v; want a generated value", webhook)
	}
	// Without a template and key the generated value is the plain token the
	// receiver reads as SecretString.
	if gen["SecretStringTemplate"] != nil || gen["GenerateStringKey"] != nil {
		t.Errorf("GenerateSecretString = %v; want a plain string, not JSON", gen)
	}
	if gen["ExcludePunctuation"] != true || intValue(t, "PasswordLength", gen["PasswordLength"]) < 32 {
		t.Errorf("GenerateSecretString = %v; want >= 32 characters without punctuation", gen)
	}

	// The dispatcher refuses exactly this value as "not set yet".
	sqibs := tpl.props(t, "SqibsTokenSecret", "AWS::SecretsManager::Secret")
	if sqibs["SecretString"] != app.PlaceholderToken {
		t.Errorf("SqibsTokenSecret SecretString = %v; want the placeholder app.PlaceholderToken %q", sqibs["SecretString"], app.PlaceholderToken)
	}
	if d, _ := sqibs["Description"].(string); !strings.Contains(d, "put-secret-value") || !strings.Contains(d, "scripts/put-sqibs-token") {
		t.Errorf("SqibsTokenSecret Description does not say how to set the token: %q", d)
	}

	// The API token's secret: only with the API, a placeholder the
	// dispatcher and reconciler refuse (buildkiteapi.ErrPlaceholder).
	if dig(loadTemplateWith(t, false), "Resources", "BuildkiteApiTokenSecret") != nil {
		t.Error("BuildkiteApi false: the API token secret exists")
	}
	bk := loadTemplateWith(t, true).props(t, "BuildkiteApiTokenSecret", "AWS::SecretsManager::Secret")
	if bk["SecretString"] != app.PlaceholderToken {
		t.Errorf("BuildkiteApiTokenSecret SecretString = %v; want the placeholder %q", bk["SecretString"], app.PlaceholderToken)
	}
	if d, _ := bk["Description"].(string); !strings.Contains(d, "put-secret-value") || !strings.Contains(d, "read_builds") {
		t.Errorf("BuildkiteApiTokenSecret Description does not say how to set the token and its scope: %q", d)
	}
}

// TestReconcilerSchedule: the reconciler runs on RECONCILE_EVERY, one run
// at a time, never retried by Lambda, and inside its own timeout.
func TestReconcilerSchedule(t *testing.T) {
	raw := loadTemplate(t)
	rates, _ := dig(raw, "Mappings", "ReconcileRates").(map[string]any)
	allowed := strList(dig(raw, "Parameters", "ReconcileEvery", "AllowedValues"))
	if !slices.Contains(allowed, "off") || dig(raw, "Parameters", "ReconcileEvery", "Default") != "10m" {
		t.Errorf("ReconcileEvery allows %v, default %v; want off among them and 10m (DESIGN §9)", allowed, dig(raw, "Parameters", "ReconcileEvery", "Default"))
	}
	unit := map[string]time.Duration{"minute": time.Minute, "minutes": time.Minute, "hour": time.Hour, "hours": time.Hour}
	tpl := loadTemplateWith(t, true)
	timeout := time.Duration(intValue(t, "reconciler Timeout", tpl.functionProp(t, "ReconcilerFunction", "Timeout"))) * time.Second
	for _, v := range allowed {
		rate, _ := dig(rates, v, "Rate").(string)
		var n int
		var u string
		if _, err := fmt.Sscanf(rate, "rate(%d %s", &n, &u); err != nil || unit[strings.TrimSuffix(u, ")")] == 0 {
			t.Errorf("ReconcileEvery %s: rate %q is not rate(<n> minutes|hours)", v, rate)
			continue
		}
		every := time.Duration(n) * unit[strings.TrimSuffix(u, ")")]
		if v != "off" {
			if d, err := time.ParseDuration(v); err != nil || d != every {
				t.Errorf("ReconcileEvery %s runs every %s", v, every)
			}
		}
		if every < 2*timeout {
			t.Errorf("ReconcileEvery %s: runs %s apart with a %s timeout: a slow run would meet the next", v, every, timeout)
		}
	}
	p := tpl.props(t, "ReconcilerFunction", "AWS::Serverless::Function")
	if got := intValue(t, "ReservedConcurrentExecutions", p["ReservedConcurrentExecutions"]); got != 1 {
		t.Errorf("ReservedConcurrentExecutions = %d; want 1 (runs must not overlap)", got)
	}
	if got := dig(p, "EventInvokeConfig", "MaximumRetryAttempts"); got != 0 {
		t.Errorf("EventInvokeConfig.MaximumRetryAttempts = %v; want 0 (the next run is the retry)", got)
	}
	events, _ := p["Events"].(map[string]any)
	if len(events) != 1 || dig(events, "Schedule", "Type") != "Schedule" {
		t.Fatalf("reconciler Events = %v; want one Schedule", events)
	}
	want := map[string]any{"Fn::FindInMap": []any{"ReconcileRates", map[string]any{"Ref": "ReconcileEvery"}, "Rate"}}
	if got := dig(events, "Schedule", "Properties", "Schedule"); !reflect.DeepEqual(got, want) {
		t.Errorf("Schedule = %#v; want the ReconcileEvery rate", got)
	}
	if got := dig(events, "Schedule", "Properties", "State"); got != "ENABLED" {
		t.Errorf("schedule State with the API and ReconcileEvery 10m = %v; want ENABLED", got)
	}
	off, _ := resolveConditions(dig(raw, "Resources", "ReconcilerFunction", "Properties", "Events", "Schedule", "Properties", "State"),
		map[string]bool{"ReconcileScheduled": false})
	if off != "DISABLED" {
		t.Errorf("schedule State with ReconcileEvery off = %v; want DISABLED", off)
	}
	if got := dig(raw, "Conditions", "ReconcileScheduled"); !reflect.DeepEqual(got, map[string]any{"Fn::And": []any{
		map[string]any{"Condition": "HasBuildkiteApi"},
		map[string]any{"Fn::Not": []any{map[string]any{"Fn::Equals": []any{map[string]any{"Ref": "ReconcileEvery"}, "off"}}}}}}) {
		t.Errorf("ReconcileScheduled = %#v", got)
	}
}

func TestLogGroups(t *testing.T) {
	tpl := loadTemplateWith(t, true)
	for _, fn := range []string{"ReceiverFunction", "DispatcherFunction", "ReconcilerFunction"} {
		p := tpl.props(t, fn, "AWS::Serverless::Function")
		name, _ := dig(p, "FunctionName", "Fn::Sub").(string)
		id, attr := refTarget(tpl.functionProp(t, fn, "LoggingConfig", "LogGroup"))
		if id == "" || attr != "" {
			t.Errorf("%s LoggingConfig.LogGroup = %#v; want !Ref of the stack's log group", fn, dig(p, "LoggingConfig"))
			continue
		}
		lg := tpl.props(t, id, "AWS::Logs::LogGroup")
		if got := dig(lg, "LogGroupName", "Fn::Sub"); name == "" || got != "/aws/lambda/"+name {
			t.Errorf("%s LogGroupName = %#v; want /aws/lambda/<FunctionName %q>", id, lg["LogGroupName"], name)
		}
		if rid, _ := refTarget(lg["RetentionInDays"]); rid != "LogRetentionDays" {
			t.Errorf("%s RetentionInDays = %#v; want !Ref LogRetentionDays", id, lg["RetentionInDays"])
		}
		if got := tpl.functionProp(t, fn, "LoggingConfig", "LogFormat"); got != "JSON" {
			t.Errorf("%s LogFormat = %v; want JSON (the functions log slog JSON)", fn, got)
		}
		if id, _ := refTarget(tpl.functionProp(t, fn, "LoggingConfig", "ApplicationLogLevel")); id != "LogLevel" {
			t.Errorf("%s ApplicationLogLevel = %#v; want !Ref LogLevel", fn, tpl.functionProp(t, fn, "LoggingConfig", "ApplicationLogLevel"))
		}
	}
	// Lambda drops JSON lines below the application level, and counts a line
	// without "level" (every EMF metric record) as INFO: above INFO the
	// metrics would vanish.
	for _, lvl := range strList(dig(tpl, "Parameters", "LogLevel", "AllowedValues")) {
		if lvl != "DEBUG" && lvl != "INFO" {
			t.Errorf("LogLevel allows %s: Lambda would drop the EMF metric lines", lvl)
		}
	}
}

func TestAlarms(t *testing.T) {
	tpl := loadTemplate(t)
	type alarmMetric struct{ namespace, name, dimension string }
	seen := map[alarmMetric]bool{}
	topic := map[string]any{"Fn::If": []any{"HasAlarmTopic", []any{map[string]any{"Ref": "AlarmTopicArn"}}, map[string]any{"Ref": "AWS::NoValue"}}}
	for id, r := range dig(tpl, "Resources").(map[string]any) {
		if dig(r, "Type") != "AWS::CloudWatch::Alarm" {
			continue
		}
		p, _ := dig(r, "Properties").(map[string]any)
		if p["TreatMissingData"] != "notBreaching" {
			t.Errorf("%s TreatMissingData = %v; want notBreaching", id, p["TreatMissingData"])
		}
		for _, k := range []string{"AlarmActions", "OKActions"} {
			if !reflect.DeepEqual(p[k], topic) {
				t.Errorf("%s %s = %#v; want the optional AlarmTopicArn", id, k, p[k])
			}
		}
		dims, _ := p["Dimensions"].([]any)
		if len(dims) != 1 {
			t.Errorf("%s Dimensions = %v; want one", id, dims)
			continue
		}
		dim, _ := refTarget(dig(dims[0], "Value"))
		seen[alarmMetric{fmt.Sprint(p["Namespace"]), fmt.Sprint(p["MetricName"]), dim}] = true
	}
	for _, m := range []alarmMetric{
		{"AWS/SQS", "NumberOfMessagesSent", "DeadLetterQueue"},
		{"AWS/SQS", "ApproximateNumberOfMessagesVisible", "DeadLetterQueue"},
		{"AWS/SQS", "ApproximateAgeOfOldestMessage", "EventQueue"},
		{"AWS/Lambda", "Errors", "DispatcherFunction"},
		{"AWS/Lambda", "Errors", "ReconcilerFunction"},
		{"AWS/Lambda", "Url5xxCount", "ReceiverFunction"},
	} {
		if !seen[m] {
			t.Errorf("no alarm on %s %s of %s", m.namespace, m.name, m.dimension)
		}
	}
	if c := dig(tpl, "Conditions", "HasAlarmTopic"); !reflect.DeepEqual(c, map[string]any{"Fn::Not": []any{map[string]any{"Fn::Equals": []any{map[string]any{"Ref": "AlarmTopicArn"}, ""}}}}) {
		t.Errorf("HasAlarmTopic = %#v; want AlarmTopicArn not empty", c)
	}
}

// TestBuild checks what `sam build` relies on: the Makefile targets for
// BuildMethod makefile in the CodeUri directory, and the runtime settings.
func TestBuild(t *testing.T) {
	tpl := loadTemplate(t)
	makefile, err := os.ReadFile(filepath.Join(templateDir, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, fn := range []string{"ReceiverFunction", "DispatcherFunction", "ReconcilerFunction"} {
		r := tpl.resource(t, fn, "AWS::Serverless::Function")
		if dig(r, "Metadata", "BuildMethod") != "makefile" {
			t.Errorf("%s Metadata.BuildMethod = %v; want makefile", fn, dig(r, "Metadata", "BuildMethod"))
		}
		if got := tpl.functionProp(t, fn, "CodeUri"); got != "." {
			t.Errorf("%s CodeUri = %v; want . (the Makefile is at the repository root)", fn, got)
		}
		if !bytes.Contains(makefile, []byte("build-"+fn)) {
			t.Errorf("Makefile has no build-%s target", fn)
		}
		// What sam build runs: a build into ARTIFACTS_DIR; without it the
		// target refuses rather than writing /bootstrap.
		out, err := exec.Command("make", "-s", "-n", "-C", templateDir, "build-"+fn, "ARTIFACTS_DIR=/tmp/artifacts").CombinedOutput()
		lower := strings.ToLower(strings.TrimSuffix(fn, "Function"))
		if err != nil || !strings.Contains(string(out), "-o /tmp/artifacts/bootstrap ./functions/"+lower) {
			t.Errorf("make -n build-%s ARTIFACTS_DIR=/tmp/artifacts: %v\n%s", fn, err, out)
		}
		cmd := exec.Command("make", "-s", "-C", templateDir, "build-"+fn)
		cmd.Env = append(os.Environ(), "ARTIFACTS_DIR=")
		out, err = cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || !strings.Contains(string(out), "ARTIFACTS_DIR") {
			t.Errorf("make build-%s without ARTIFACTS_DIR: %v, %q; want a refusal naming ARTIFACTS_DIR", fn, err, out)
		}
		for k, want := range map[string]any{"Runtime": "provided.al2023", "Handler": "bootstrap", "Architectures": []any{"arm64"}} {
			if got := tpl.functionProp(t, fn, k); !reflect.DeepEqual(got, want) {
				t.Errorf("%s %s = %v; want %v", fn, k, got, want)
			}
		}
	}
}

// TestCfnLint runs cfn-lint (with informational checks) over the template;
// any finding fails.
func TestCfnLint(t *testing.T) {
	bin, err := exec.LookPath("cfn-lint")
	if err != nil {
		if os.Getenv("REQUIRE_CFN_LINT") == "1" {
			t.Fatal("cfn-lint is not on PATH but REQUIRE_CFN_LINT=1 (pip install cfn-lint)")
		}
		t.Skip("cfn-lint is not on PATH: template lint skipped (pip install cfn-lint; REQUIRE_CFN_LINT=1 makes this a failure)")
	}
	cmd := exec.CommandContext(t.Context(), bin, "--include-checks", "I", "--", "template.yaml")
	cmd.Dir = templateDir
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("cfn-lint template.yaml: %v\n%s", err, out)
	}
}

// The Serverless Application Repository metadata: what `sam publish` needs
// and SAR's own limits, literal values only (SAR takes no intrinsic
// functions), the license file matching its SPDX id.
func TestServerlessRepoMetadata(t *testing.T) {
	tpl := loadTemplate(t)
	app, ok := dig(tpl, "Metadata", "AWS::ServerlessRepo::Application").(map[string]any)
	if !ok {
		t.Fatal("no Metadata.AWS::ServerlessRepo::Application")
	}
	str := func(k string) string {
		v, ok := app[k].(string)
		if !ok {
			t.Errorf("%s is %T, want a literal string", k, app[k])
		}
		return v
	}
	for k, re := range map[string]string{
		"Name":            `^[a-zA-Z0-9-]{1,140}$`,
		"Author":          `^[a-z0-9](([a-z0-9]|-[a-z0-9])*)?$`,
		"SemanticVersion": `^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$`,
		"HomePageUrl":     `^https://`,
		"SourceCodeUrl":   `^https://`,
		"SpdxLicenseId":   `^Apache-2\.0$`,
	} {
		if v := str(k); !regexp.MustCompile(re).MatchString(v) {
			t.Errorf("%s = %q, want %s", k, v, re)
		}
	}
	if d := str("Description"); len(d) == 0 || len(d) > 256 {
		t.Errorf("Description is %d characters, want 1-256", len(d))
	}
	labels, _ := app["Labels"].([]any)
	if len(labels) == 0 || len(labels) > 10 {
		t.Errorf("%d labels, want 1-10", len(labels))
	}
	for _, l := range labels {
		if s, _ := l.(string); !regexp.MustCompile(`^[a-zA-Z0-9+\-_:/@]{1,127}$`).MatchString(s) {
			t.Errorf("label %v does not match SAR's pattern", l)
		}
	}
	for _, k := range []string{"LicenseUrl", "ReadmeUrl"} {
		if _, err := os.Stat(filepath.Join(templateDir, str(k))); err != nil {
			t.Errorf("%s: %v", k, err)
		}
	}
	lic, err := os.ReadFile(filepath.Join(templateDir, str("LicenseUrl")))
	if err != nil || !bytes.Contains(lic, []byte("Apache License")) || !bytes.Contains(lic, []byte("Version 2.0, January 2004")) {
		t.Errorf("LICENSE is not the Apache License 2.0 that SpdxLicenseId names (%v)", err)
	}
}
