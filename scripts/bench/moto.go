package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/callgoose/buildkite-sqibs/internal/tailbuf"
)

// errMotoAbsent means the receiver's RSS cannot be measured against SQS.
var errMotoAbsent = errors.New("moto_server is not on PATH (pip install 'moto[server]')")

// motoServer is a moto_server (local AWS emulator) this command started.
// internal/testutil/moto does the same for tests but needs a testing.TB.
type motoServer struct {
	url    string
	cmd    *exec.Cmd
	logs   *tailbuf.Buffer
	exited chan struct{} // closed once moto has exited and been reaped
}

// startMoto starts moto_server on a free loopback port, in its own process
// group (so stop reaches the Python process behind any shim), and waits for
// it to answer.
func startMoto(ctx context.Context) (*motoServer, error) {
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		return nil, errMotoAbsent
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("moto: free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	m := &motoServer{url: fmt.Sprintf("http://127.0.0.1:%d", port), logs: &tailbuf.Buffer{}}
	m.cmd = exec.Command(bin, "-H", "127.0.0.1", "-p", fmt.Sprint(port))
	m.cmd.Stdout, m.cmd.Stderr = m.logs, m.logs
	m.cmd.SysProcAttr = childProcAttr()
	if err := m.cmd.Start(); err != nil {
		return nil, fmt.Errorf("moto: start %s: %w", bin, err)
	}
	m.exited = make(chan struct{})
	go func() { _ = m.cmd.Wait(); close(m.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(m.url + "/moto-api/")
		if err == nil {
			resp.Body.Close()
			return m, nil
		}
		select {
		case <-m.exited:
			return nil, fmt.Errorf("moto: %s exited at start: %s", bin, m.logs.String())
		case <-ctx.Done():
			m.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			m.stop()
			return nil, fmt.Errorf("moto: %s did not answer within 30s: %v", m.url, err)
		}
	}
}

// stop kills moto's process group (this command started it and made the
// group) and waits, briefly, for it to be reaped.
func (m *motoServer) stop() {
	_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-m.exited:
	case <-time.After(5 * time.Second):
	}
}

// sqsClient reaches moto's SQS.
func (m *motoServer) sqsClient() *sqs.Client {
	return sqs.New(sqs.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(m.url),
		Credentials:  credentials.NewStaticCredentialsProvider("bench", "bench", ""),
	})
}

// fifoQueue creates a FIFO queue like the template's and returns its URL.
func (m *motoServer) fifoQueue(ctx context.Context, name string) (string, error) {
	if !strings.HasSuffix(name, ".fifo") {
		name += ".fifo"
	}
	out, err := m.sqsClient().CreateQueue(ctx, &sqs.CreateQueueInput{
		QueueName:  aws.String(name),
		Attributes: map[string]string{"FifoQueue": "true", "VisibilityTimeout": "60"},
	})
	if err != nil {
		return "", fmt.Errorf("moto: create queue %s: %w", name, err)
	}
	return aws.ToString(out.QueueUrl), nil
}

// drain counts the messages in a queue, then purges it.
func (m *motoServer) drain(ctx context.Context, queueURL string) (int, error) {
	c := m.sqsClient()
	attrs, err := c.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(queueURL), AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameApproximateNumberOfMessages},
	})
	if err != nil {
		return 0, fmt.Errorf("moto: count messages: %w", err)
	}
	v := attrs.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessages)]
	count, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("moto: message count %q: %w", v, err)
	}
	if _, err := c.PurgeQueue(ctx, &sqs.PurgeQueueInput{QueueUrl: aws.String(queueURL)}); err != nil {
		return 0, fmt.Errorf("moto: purge queue: %w", err)
	}
	return count, nil
}
