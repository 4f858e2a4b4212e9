// Command put-sqibs-token stores the Callgoose SQIBS API token in the
// stack's Secrets Manager secret (deployed with the placeholder
// "REPLACE_ME"). The token is read from stdin, never from a flag, so it
// stays out of shell history and process listings; it is never printed.
//
//	go run ./scripts/put-sqibs-token -secret-id <SqibsTokenSecretArn output>
//	    (then type or paste the token; input is hidden on a terminal)
//	printf '%s' "$SQIBS_TOKEN" | go run ./scripts/put-sqibs-token -secret-id <arn>
//
// AWS credentials, region and profile come from the usual AWS environment
// (AWS_PROFILE, AWS_REGION, ...); AWS_ENDPOINT_URL_SECRETS_MANAGER reaches
// moto or LocalStack.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
)

const usage = `usage: put-sqibs-token -secret-id <secret ARN or name>

Reads the SQIBS API token from stdin (one line; input hidden on a terminal)
and stores it as a new version of the secret. The token is never printed.
The dispatcher uses it within SECRET_TTL (default 5m), or at once after
SQIBS refuses the old one.`

// placeholder is the value template.yaml seeds the secret with.
const placeholder = "REPLACE_ME"

// maxToken is Secrets Manager's SecretString limit.
const maxToken = 65536

// secretPutter is the one Secrets Manager call made (satisfied by *secretsmanager.Client).
type secretPutter interface {
	PutSecretValue(ctx context.Context, in *secretsmanager.PutSecretValueInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.PutSecretValueOutput, error)
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is main without the process exit. Exit codes: 0 stored, 1 AWS
// failure, 2 usage or input error.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("put-sqibs-token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	secretID := fs.String("secret-id", "", "ARN or name of the SQIBS token secret (stack output SqibsTokenSecretArn)")
	timeout := fs.Duration("timeout", 30*time.Second, "time allowed for the AWS call")
	fs.Usage = func() { fmt.Fprintln(stderr, usage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 || strings.TrimSpace(*secretID) == "" {
		fs.Usage()
		return 2
	}

	token, err := readToken(stdin, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "put-sqibs-token:", err)
		return 2
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	cfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "put-sqibs-token: load AWS config:", err)
		return 1
	}
	return put(ctx, secretsmanager.NewFromConfig(cfg), *secretID, token, stdout, stderr)
}

func put(ctx context.Context, api secretPutter, secretID, token string, stdout, stderr io.Writer) int {
	out, err := api.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{
		SecretId:     aws.String(secretID),
		SecretString: aws.String(token),
	})
	if err != nil {
		// AWS does not echo SecretString in errors; scrub anyway, cheaply.
		msg := strings.ReplaceAll(err.Error(), token, "[token]")
		fmt.Fprintf(stderr, "put-sqibs-token: store the token in %s: %s\n", secretID, msg)
		return 1
	}
	fmt.Fprintf(stdout, "stored a new version of %s (version %s); the dispatcher picks it up within SECRET_TTL\n",
		aws.ToString(out.ARN), aws.ToString(out.VersionId))
	return 0
}

// readToken reads the token: one line from a terminal, with echo off; from a
// pipe or file, the whole input, which must hold a single line. Surrounding
// blanks and the newline are trimmed (the dispatcher trims them too).
func readToken(stdin io.Reader, stderr io.Writer) (string, error) {
	var raw string
	if f, ok := stdin.(*os.File); ok && isTerminal(f) {
		fmt.Fprint(stderr, "SQIBS API token (input hidden): ")
		restore := echoOff(f)
		line, err := bufio.NewReader(f).ReadString('\n')
		restore()
		fmt.Fprintln(stderr)
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("read the token: %w", err)
		}
		raw = line
	} else {
		b, err := io.ReadAll(io.LimitReader(stdin, maxToken+2))
		if err != nil {
			return "", fmt.Errorf("read the token from stdin: %w", err)
		}
		raw = string(b)
	}
	token := strings.TrimSpace(raw)
	switch {
	case token == "":
		return "", errors.New("no token on stdin: refusing to store an empty secret")
	case strings.ContainsAny(token, "\r\n"):
		return "", errors.New("stdin holds more than one line: pass the token alone")
	case len(token) > maxToken:
		return "", fmt.Errorf("the token is longer than Secrets Manager's %d bytes", maxToken)
	case token == placeholder:
		return "", fmt.Errorf("%q is the deploy-time placeholder, not a token", placeholder)
	}
	return token, nil
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// echoOff turns terminal echo off with stty (no extra module needed) and
// returns the function that turns it back on, also run on Ctrl-C so the
// terminal is never left silent. If stty is missing, input stays visible
// and a note says so.
func echoOff(f *os.File) (restore func()) {
	stty := func(arg string) error {
		cmd := exec.Command("stty", arg)
		cmd.Stdin = f
		return cmd.Run()
	}
	if err := stty("-echo"); err != nil {
		fmt.Fprint(os.Stderr, "(could not hide input: stty failed) ")
		return func() {}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case <-sig:
			_ = stty("echo")
			fmt.Fprintln(os.Stderr)
			os.Exit(130)
		case <-done:
		}
	}()
	return func() {
		signal.Stop(sig)
		close(done)
		_ = stty("echo")
	}
}
