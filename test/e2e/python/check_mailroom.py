"""Calls a Mailroom server through mailroom_client and prints what it saw.

    python3 check_mailroom.py --url http://127.0.0.1:8080 --descriptor-set mailroom.binpb SCENARIO

Scenarios: health, mailbox, invalid-argument, watch (see each function).
Every observation is one JSON line {"step": ..., ...}, messages in the proto3
JSON mapping with proto field names; test/e2e/python-client.test.ts judges
them. An unexpected failure prints {"step": "unexpected", "after": <the last step
that completed>, ...} and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
import uuid
from typing import Any, Callable

import grpc
from google.protobuf import json_format

from mailroom_client import Contract, MailroomClient

# Long enough for a slow CI machine, short enough that a missing frame fails the test rather than hanging it.
CALL_TIMEOUT_SECONDS = 10
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


def describe_error(contract: Contract, error: grpc.RpcError) -> dict[str, Any]:
    status = contract.status(error)
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
        "error_details": [as_dict(detail) for detail in contract.error_details(error)],
    }


def health(client: MailroomClient) -> None:
    """Health.Check for the whole server and for each Mailroom service."""
    for service in ("", "mailroom.v1.MailboxService", "mailroom.v1.PoolService", "mailroom.v1.EventService"):
        reply = client.health.Check(service=service, timeout=CALL_TIMEOUT_SECONDS)
        emit("health.check", service=service, response=as_dict(reply))


def mailbox(client: MailroomClient) -> None:
    """Enqueue -> Claim (with a lease) -> Ack, then the same Ack again."""
    thread_id = f"py-thread-{uuid.uuid4()}"
    enqueued = client.mailbox.Enqueue(
        dispatch={
            "thread_id": thread_id,
            "run_id": "py-run-1",
            "agent_id": "py-agent",
            "priority": 200,
            "dedupe_key": "py-dedupe-1",
            "max_attempts": 3,
            "payload": {"data": b'{"task":"summarise"}', "media_type": "application/json"},
        },
        timeout=CALL_TIMEOUT_SECONDS,
    )
    emit("mailbox.enqueue", thread_id=thread_id, response=as_dict(enqueued))
    dispatch_id = enqueued.dispatch.dispatch_id

    claimed = client.mailbox.Claim(
        thread_id=thread_id,
        consumer_id="py-worker",
        lease={"seconds": 30},
        limit=1,
        timeout=CALL_TIMEOUT_SECONDS,
    )
    emit("mailbox.claim", response=as_dict(claimed))
    claim_token = claimed.dispatches[0].claim_token if claimed.dispatches else ""

    acked = client.mailbox.Ack(dispatch_id=dispatch_id, claim_token=claim_token, timeout=CALL_TIMEOUT_SECONDS)
    emit("mailbox.ack", response=as_dict(acked))
    again = client.mailbox.Ack(dispatch_id=dispatch_id, claim_token=claim_token, timeout=CALL_TIMEOUT_SECONDS)
    emit("mailbox.ack-again", response=as_dict(again))


def invalid_argument(client: MailroomClient) -> None:
    """Enqueue with an empty thread_id is refused; the reason rides in grpc-status-details-bin."""
    try:
        reply = client.mailbox.Enqueue(dispatch={"thread_id": ""}, timeout=CALL_TIMEOUT_SECONDS)
    except grpc.RpcError as error:
        emit("mailbox.enqueue-empty-thread", error=describe_error(client.contract, error))
    else:
        emit("mailbox.enqueue-empty-thread", response=as_dict(reply))


def watch(client: MailroomClient) -> None:
    """WatchDispatchSignals: a heartbeat first, then a signal for a dispatch enqueued after it."""
    thread_id = f"py-watch-{uuid.uuid4()}"
    # The deadline ends the stream (DEADLINE_EXCEEDED) should an expected frame never come.
    stream = client.mailbox.WatchDispatchSignals(
        thread_id=thread_id,
        heartbeat_interval={"seconds": 300},
        timeout=CALL_TIMEOUT_SECONDS,
    )
    try:
        frames = iter(stream)
        first = next(frames)
        emit("watch.first-frame", frame=first.WhichOneof("frame"), response=as_dict(first))
        # Enqueued only after the heartbeat: the stream is registered by then.
        enqueued = client.mailbox.Enqueue(dispatch={"thread_id": thread_id}, timeout=CALL_TIMEOUT_SECONDS)
        emit("watch.enqueue", thread_id=thread_id, dispatch_id=enqueued.dispatch.dispatch_id)
        second = next(frames)
        emit("watch.next-frame", frame=second.WhichOneof("frame"), response=as_dict(second))
    finally:
        stream.cancel()


SCENARIOS: dict[str, Callable[[MailroomClient], None]] = {
    "health": health,
    "mailbox": mailbox,
    "invalid-argument": invalid_argument,
    "watch": watch,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the server's base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--descriptor-set", required=True, help="a FileDescriptorSet built from proto/ by buf build")
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    args = parser.parse_args()
    contract = Contract.load(args.descriptor_set)
    with MailroomClient(args.url, contract) as client:
        try:
            SCENARIOS[args.scenario](client)
        except grpc.RpcError as error:
            print(json.dumps({"step": "unexpected", "after": _last_step, "error": describe_error(contract, error)}), flush=True)
            return 1
        except Exception as error:  # noqa: BLE001 - reported, then the exit code fails the test
            print(json.dumps({"step": "unexpected", "after": _last_step, "exception": traceback.format_exc()}), flush=True)
            return 1
    emit("done", scenario=args.scenario)
    return 0


if __name__ == "__main__":
    sys.exit(main())
