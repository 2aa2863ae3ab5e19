#!/usr/bin/env python3
"""Drives a Mailroom server through the generated Python client (clients/python/gen).

    /usr/bin/python3 clients/python/example.py [--url http://127.0.0.1:50051]

It subscribes to one run's events, enqueues a dispatch for that run, claims
and acks it, prints the events the subscription receives, and shows how an
error's mailroom.v1.ErrorDetail is decoded. With a server started with
--auth-token, set MAILROOM_TOKEN. Each step prints one line; the exit code is
1 when a step fails.

Needs grpcio and protobuf: Debian's python3-grpcio (1.51) and python3-protobuf
(4.21) for /usr/bin/python3, or `pip install grpcio protobuf`. When the
python3 that runs this lacks them (e.g. a pyenv one) and /usr/bin/python3 has
them, it re-runs itself with /usr/bin/python3.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from urllib.parse import urlsplit

try:
    import grpc
except ImportError:
    SYSTEM_PYTHON = "/usr/bin/python3"
    if os.path.realpath(sys.executable) != os.path.realpath(SYSTEM_PYTHON) and os.path.exists(SYSTEM_PYTHON):
        os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON, *(["-B"] if sys.flags.dont_write_bytecode else []), *sys.argv])
    sys.exit(f"{sys.executable} has no grpcio: apt-get install python3-grpcio python3-protobuf (or pip install grpcio protobuf)")

# The generated modules import each other as mailroom.v1.* and google.rpc.*.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

from google.protobuf import duration_pb2  # noqa: E402
from google.rpc import status_pb2  # noqa: E402
from mailroom.v1 import errors_pb2, event_pb2, event_service_pb2, event_service_pb2_grpc  # noqa: E402
from mailroom.v1 import mailbox_service_pb2, mailbox_service_pb2_grpc  # noqa: E402


def error_details(error: grpc.RpcError) -> list[errors_pb2.ErrorDetail]:
    """The mailroom.v1.ErrorDetail of an error: a google.rpc.Status in the grpc-status-details-bin trailer."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":  # grpcio hands -bin values over already base64-decoded
            status = status_pb2.Status.FromString(value)
            return [errors_pb2.ErrorDetail.FromString(item.value) for item in status.details if item.type_url.endswith("/mailroom.v1.ErrorDetail")]
    return []


def channel_for(url: str) -> grpc.Channel:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
        sys.exit(f"--url {url!r}: expected http://host:port or https://host:port")
    target = f"{parts.hostname}:{parts.port}"
    return grpc.secure_channel(target, grpc.ssl_channel_credentials()) if parts.scheme == "https" else grpc.insecure_channel(target)


def run(url: str, token: str | None) -> None:
    metadata = [("authorization", f"Bearer {token}")] if token else None
    timeout = 30
    with channel_for(url) as channel:
        mailbox = mailbox_service_pb2_grpc.MailboxServiceStub(channel)
        events = event_service_pb2_grpc.EventServiceStub(channel)
        suffix = time.time_ns()
        run_id, thread_id = f"py-example-run-{suffix}", f"py-example-thread-{suffix}"

        # Subscribe before acting: the journal is replayed up to CAUGHT_UP, then
        # the stream goes live, so nothing between the two is missed.
        subscription = events.Subscribe(event_service_pb2.SubscribeRequest(run_id=run_id), timeout=timeout, metadata=metadata)
        frames = (reply.frame for reply in subscription)
        try:
            for frame in frames:
                if frame.kind == event_pb2.EVENT_FRAME_KIND_CAUGHT_UP:
                    break

            enqueued = mailbox.Enqueue(
                mailbox_service_pb2.EnqueueRequest(dispatch=mailbox_service_pb2.NewDispatch(thread_id=thread_id, run_id=run_id, priority=200)),
                timeout=timeout,
                metadata=metadata,
            )
            print(f"enqueued dispatch {enqueued.dispatch.dispatch_id} on thread {thread_id}", flush=True)

            claimed = mailbox.Claim(
                mailbox_service_pb2.ClaimRequest(thread_id=thread_id, consumer_id="py-example", lease=duration_pb2.Duration(seconds=30), limit=1),
                timeout=timeout,
                metadata=metadata,
            )
            [dispatch] = claimed.dispatches
            print(f"claimed dispatch {dispatch.dispatch_id} until {dispatch.lease_until.ToJsonString()}", flush=True)

            mailbox.Ack(mailbox_service_pb2.AckRequest(dispatch_id=dispatch.dispatch_id, claim_token=dispatch.claim_token), timeout=timeout, metadata=metadata)
            print(f"acked dispatch {dispatch.dispatch_id}", flush=True)

            for frame in frames:
                if not frame.HasField("event"):
                    continue  # a heartbeat
                envelope = frame.event.envelope
                print(f"event {envelope.event_seq} {event_pb2.EventKind.Name(envelope.kind)} dispatch {envelope.dispatch_id}", flush=True)
                if envelope.kind == event_pb2.EVENT_KIND_DISPATCH_ACKED:
                    break
        finally:
            subscription.cancel()

        # A bad request: the status carries a mailroom.v1.ErrorDetail saying which rule and which field.
        try:
            mailbox.Enqueue(mailbox_service_pb2.EnqueueRequest(dispatch=mailbox_service_pb2.NewDispatch(thread_id="")), timeout=timeout, metadata=metadata)
        except grpc.RpcError as error:
            [detail] = error_details(error)
            print(f"refused: {error.code().name} {error.details()!r} reason={errors_pb2.ErrorReason.Name(detail.reason)} field={detail.field}", flush=True)
        else:
            raise RuntimeError("an enqueue without thread_id succeeded")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:50051", help="the server's base URL (default %(default)s)")
    args = parser.parse_args()
    try:
        run(args.url, os.environ.get("MAILROOM_TOKEN"))
    except grpc.RpcError as error:
        print(f"example failed: {error.code().name} {error.details()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
