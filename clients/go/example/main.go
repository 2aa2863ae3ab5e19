// Command example drives a Mailroom server through the generated Go client:
// it subscribes to one run's events, enqueues a dispatch for that run, claims
// and acks it, prints the events the subscription receives, and shows how an
// error's mailroom.v1.ErrorDetail is decoded.
//
//	clients/go/run-example.sh [-url http://127.0.0.1:50051]
//
// With a server started with --auth-token, set MAILROOM_TOKEN. Each step
// prints one line; the exit code is 1 when a step fails.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	mailroomv1 "mailroom/clients/go/mailroom/v1"
)

func main() {
	address := flag.String("url", "http://127.0.0.1:50051", "the server's base URL (http:// or https://)")
	flag.Parse()
	if err := run(*address, os.Getenv("MAILROOM_TOKEN")); err != nil {
		fmt.Fprintln(os.Stderr, "example failed:", err)
		os.Exit(1)
	}
}

func run(address, token string) error {
	conn, err := dial(address)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	mailbox := mailroomv1.NewMailboxServiceClient(conn)
	events := mailroomv1.NewEventServiceClient(conn)

	suffix := fmt.Sprintf("%d", time.Now().UnixNano())
	runID, threadID := "go-example-run-"+suffix, "go-example-thread-"+suffix

	// Subscribe before acting: the journal is replayed up to CAUGHT_UP, then
	// the stream goes live, so nothing between the two is missed.
	subscription, err := events.Subscribe(ctx, &mailroomv1.SubscribeRequest{Scope: &mailroomv1.SubscribeRequest_RunId{RunId: runID}})
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	if err := untilCaughtUp(subscription); err != nil {
		return err
	}

	enqueued, err := mailbox.Enqueue(ctx, &mailroomv1.EnqueueRequest{Dispatch: &mailroomv1.NewDispatch{ThreadId: threadID, RunId: runID, Priority: proto.Uint32(200)}})
	if err != nil {
		return fmt.Errorf("enqueue: %w", err)
	}
	fmt.Printf("enqueued dispatch %s on thread %s\n", enqueued.Dispatch.DispatchId, threadID)

	claimed, err := mailbox.Claim(ctx, &mailroomv1.ClaimRequest{ThreadId: threadID, ConsumerId: "go-example", Lease: durationpb.New(30 * time.Second), Limit: 1})
	if err != nil {
		return fmt.Errorf("claim: %w", err)
	}
	if len(claimed.Dispatches) != 1 {
		return fmt.Errorf("claim: expected 1 dispatch, got %d", len(claimed.Dispatches))
	}
	dispatch := claimed.Dispatches[0]
	fmt.Printf("claimed dispatch %s until %s\n", dispatch.DispatchId, dispatch.LeaseUntil.AsTime().Format(time.RFC3339))

	if _, err := mailbox.Ack(ctx, &mailroomv1.AckRequest{DispatchId: dispatch.DispatchId, ClaimToken: dispatch.ClaimToken}); err != nil {
		return fmt.Errorf("ack: %w", err)
	}
	fmt.Printf("acked dispatch %s\n", dispatch.DispatchId)

	if err := printEventsUntil(subscription, mailroomv1.EventKind_EVENT_KIND_DISPATCH_ACKED); err != nil {
		return err
	}

	// A bad request: the status carries a mailroom.v1.ErrorDetail saying which rule and which field.
	_, err = mailbox.Enqueue(ctx, &mailroomv1.EnqueueRequest{Dispatch: &mailroomv1.NewDispatch{ThreadId: ""}})
	if err == nil {
		return fmt.Errorf("an enqueue without thread_id succeeded")
	}
	refused := status.Convert(err)
	for _, detail := range refused.Details() {
		if detail, ok := detail.(*mailroomv1.ErrorDetail); ok {
			fmt.Printf("refused: %s %q reason=%s field=%s\n", refused.Code(), refused.Message(), detail.Reason, detail.Field)
			return nil
		}
	}
	return fmt.Errorf("the error carries no mailroom.v1.ErrorDetail: %v", err)
}

func dial(address string) (*grpc.ClientConn, error) {
	parsed, err := url.Parse(address)
	if err != nil || parsed.Host == "" {
		return nil, fmt.Errorf("-url %q: expected http://host:port or https://host:port", address)
	}
	transport := grpc.WithInsecure()
	if parsed.Scheme == "https" {
		transport = grpc.WithTransportCredentials(credentials.NewClientTLSFromCert(nil, ""))
	}
	return grpc.Dial(parsed.Host, transport)
}

func untilCaughtUp(subscription mailroomv1.EventService_SubscribeClient) error {
	for {
		reply, err := subscription.Recv()
		if err != nil {
			return fmt.Errorf("subscribe: %w", err)
		}
		if reply.Frame.Kind == mailroomv1.EventFrameKind_EVENT_FRAME_KIND_CAUGHT_UP {
			return nil
		}
	}
}

func printEventsUntil(subscription mailroomv1.EventService_SubscribeClient, last mailroomv1.EventKind) error {
	for {
		reply, err := subscription.Recv()
		if err == io.EOF {
			return fmt.Errorf("subscribe: the stream ended before %s", last)
		}
		if err != nil {
			return fmt.Errorf("subscribe: %w", err)
		}
		event := reply.Frame.GetEvent().GetEnvelope()
		if event == nil {
			continue // a heartbeat
		}
		fmt.Printf("event %d %s dispatch %s\n", event.EventSeq, event.Kind, event.DispatchId)
		if event.Kind == last {
			return nil
		}
	}
}
