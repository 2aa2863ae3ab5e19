"""Calls a Mailroom server through the generated Python client and prints what it saw.

    /usr/bin/python3 check_mailroom.py --url http://127.0.0.1:50051 SCENARIO

The client is clients/python/gen (grpcio stubs and message classes that
clients/generate.sh made from proto/). Scenarios: mailbox, invalid-argument,
watch (see each function).
Every observation is one JSON line {"step": ..., ...}, messages in the proto3
JSON mapping with proto field names; test/e2e/python-client.test.ts judges
them. An unexpected failure prints {"step": "unexpected", "after": <the last step
that completed>, ...} and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import grpc
from google.protobuf import json_format

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "clients", "python", "gen"))

from google.rpc import status_pb2  # noqa: E402
from mailroom.v1 import errors_pb2, mailbox_service_pb2, mailbox_service_pb2_grpc  # noqa: E402

# Long enough for a slow CI machine, short enough that a missing frame fails the test rather than hanging it.
CALL_TIMEOUT_SECONDS = 10
# The bearer token, when the server requires one (the suites with authentication on set it).
_TOKEN = os.environ.get("MAILROOM_TOKEN")
CALL_METADATA = [("authorization", f"Bearer {_TOKEN}")] if _TOKEN else None
_last_step = "(none)"


def emit(step: str, **observed: Any) -> None:
    global _last_step
    _last_step = step
    print(json.dumps({"step": step, **observed}), flush=True)


def as_dict(message: Any) -> dict[str, Any]:
    """The proto3 JSON mapping with proto field names, fields at their zero value included."""
    try:  # protobuf >= 5.26
        return json_format.MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    except TypeError:  # protobuf 4.x (Debian bookworm)
        return json_format.MessageToDict(message, preserving_proto_field_name=True, including_default_value_fields=True)


def status_of(error: grpc.RpcError) -> Any:
    """The google.rpc.Status in the error's grpc-status-details-bin trailer, or None."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            # grpcio hands -bin metadata over already base64-decoded.
            return status_pb2.Status.FromString(value)
    return None


def error_details(error: grpc.RpcError) -> list[Any]:
    """The mailroom.v1.ErrorDetail messages among the status details (each an Any)."""
    status = status_of(error)
    details = status.details if status is not None else []
    return [errors_pb2.ErrorDetail.FromString(item.value) for item in details if item.type_url.rsplit("/", 1)[-1] == "mailroom.v1.ErrorDetail"]


def describe_error(error: grpc.RpcError) -> dict[str, Any]:
    status = status_of(error)
    return {
        "code": error.code().name,
        "message": error.details(),
        # The google.rpc.Status from grpc-status-details-bin, its details left as Any (type_url and size).
        "status": None
        if status is None
        else {
            "code": status.code,
            "message": status.message,
            "details": [{"type_url": item.type_url, "bytes": len(item.value)} for item in status.details],
        },
        "error_details": [as_dict(detail) for detail in error_details(error)],
    }


@dataclass
class MailroomClient:
    mailbox: Any


def request(method: Callable[..., Any], request_class: type, **fields: Any) -> Any:
    """Calls a stub method with a request built from its fields (sub-messages as dicts), the call timeout and the token."""
    return method(request_class(**fields), timeout=CALL_TIMEOUT_SECONDS, metadata=CALL_METADATA)


def mailbox(client: MailroomClient) -> None:
    """Enqueue -> Claim (with a lease) -> Ack, then the same Ack again."""
    thread_id = f"py-thread-{uuid.uuid4()}"
    enqueued = request(
        client.mailbox.Enqueue,
        mailbox_service_pb2.EnqueueRequest,
        dispatch={
            "thread_id": thread_id,
            "run_id": "py-run-1",
            "agent_id": "py-agent",
            "priority": 200,
            "dedupe_key": "py-dedupe-1",
            "max_attempts": 3,
            "payload": {"data": b'{"task":"summarise"}', "media_type": "application/json"},
        },
    )
    emit("mailbox.enqueue", thread_id=thread_id, response=as_dict(enqueued))
    dispatch_id = enqueued.dispatch.dispatch_id

    claimed = request(
        client.mailbox.Claim,
        mailbox_service_pb2.ClaimRequest,
        thread_id=thread_id,
        consumer_id="py-worker",
        lease={"seconds": 30},
        limit=1,
    )
    emit("mailbox.claim", response=as_dict(claimed))
    claim_token = claimed.dispatches[0].claim_token if claimed.dispatches else ""

    acked = request(client.mailbox.Ack, mailbox_service_pb2.AckRequest, dispatch_id=dispatch_id, claim_token=claim_token)
    emit("mailbox.ack", response=as_dict(acked))
    again = request(client.mailbox.Ack, mailbox_service_pb2.AckRequest, dispatch_id=dispatch_id, claim_token=claim_token)
    emit("mailbox.ack-again", response=as_dict(again))


def invalid_argument(client: MailroomClient) -> None:
    """Enqueue with an empty thread_id is refused; the reason rides in grpc-status-details-bin."""
    try:
        reply = request(client.mailbox.Enqueue, mailbox_service_pb2.EnqueueRequest, dispatch={"thread_id": ""})
    except grpc.RpcError as error:
        emit("mailbox.enqueue-empty-thread", error=describe_error(error))
    else:
        emit("mailbox.enqueue-empty-thread", response=as_dict(reply))


def watch(client: MailroomClient) -> None:
    """WatchDispatchSignals: a heartbeat first, then a signal for a dispatch enqueued after it."""
    thread_id = f"py-watch-{uuid.uuid4()}"
    # The deadline ends the stream (DEADLINE_EXCEEDED) should an expected frame never come.
    stream = request(
        client.mailbox.WatchDispatchSignals,
        mailbox_service_pb2.WatchDispatchSignalsRequest,
        thread_id=thread_id,
        heartbeat_interval={"seconds": 300},
    )
    try:
        frames = iter(stream)
        first = next(frames)
        emit("watch.first-frame", frame=first.WhichOneof("frame"), response=as_dict(first))
        # Enqueued only after the heartbeat: the stream is registered by then.
        enqueued = request(client.mailbox.Enqueue, mailbox_service_pb2.EnqueueRequest, dispatch={"thread_id": thread_id})
        emit("watch.enqueue", thread_id=thread_id, dispatch_id=enqueued.dispatch.dispatch_id)
        second = next(frames)
        emit("watch.next-frame", frame=second.WhichOneof("frame"), response=as_dict(second))
    finally:
        stream.cancel()


SCENARIOS: dict[str, Callable[[MailroomClient], None]] = {
    "mailbox": mailbox,
    "invalid-argument": invalid_argument,
    "watch": watch,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the server's base URL, e.g. http://127.0.0.1:50051")
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    args = parser.parse_args()
    with grpc.insecure_channel(args.url.removeprefix("http://")) as channel:
        client = MailroomClient(mailbox=mailbox_service_pb2_grpc.MailboxServiceStub(channel))
        try:
            SCENARIOS[args.scenario](client)
        except grpc.RpcError as error:
            print(json.dumps({"step": "unexpected", "after": _last_step, "error": describe_error(error)}), flush=True)
            return 1
        except Exception as error:  # noqa: BLE001 - reported, then the exit code fails the test
            print(json.dumps({"step": "unexpected", "after": _last_step, "exception": traceback.format_exc()}), flush=True)
            return 1
    emit("done", scenario=args.scenario)
    return 0


if __name__ == "__main__":
    sys.exit(main())
