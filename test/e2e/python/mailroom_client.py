"""A Mailroom client for Python, built at run time from the contract in proto/.

No generated *_pb2.py files and no hand-written message classes: every message
class and every method stub comes from a FileDescriptorSet that `buf build`
made from proto/:

    node_modules/.bin/buf build proto --as-file-descriptor-set -o mailroom.binpb

(imports, including the well-known types, are in the set unless
--exclude-imports is given). This is what protoc's Python plugin would
generate, done by the protobuf runtime instead, so it needs no protoc and no
grpcio-tools. It runs on Debian bookworm's python3-grpcio (1.51) and
python3-protobuf (4.21, the protobuf 3.21 release) and on newer releases.

    contract = Contract.load("mailroom.binpb")
    with MailroomClient("http://127.0.0.1:8080", contract) as client:
        client.health.Check(service="")
        reply = client.mailbox.Enqueue(dispatch={"thread_id": "t1"})
        try:
            client.mailbox.Enqueue(dispatch={"thread_id": ""})
        except grpc.RpcError as error:
            [detail] = contract.error_details(error)  # mailroom.v1.ErrorDetail
"""

from __future__ import annotations

from typing import Any, Iterable
from urllib.parse import urlsplit

import grpc
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory

STATUS_DETAILS_KEY = "grpc-status-details-bin"
ERROR_DETAIL = "mailroom.v1.ErrorDetail"

# The services of the contract, by the attribute MailroomClient gives each.
SERVICES = {
    "health": "grpc.health.v1.Health",
    "mailbox": "mailroom.v1.MailboxService",
    "pools": "mailroom.v1.PoolService",
    "events": "mailroom.v1.EventService",
}


def _status_proto_file() -> descriptor_pb2.FileDescriptorProto:
    """google/rpc/status.proto, which the contract does not include.

    gRPC servers put a serialized google.rpc.Status in the
    grpc-status-details-bin trailer. Its schema is fixed by googleapis:

        message Status {
          int32 code = 1;
          string message = 2;
          repeated google.protobuf.Any details = 3;
        }

    Debian has no python3-googleapis-common-protos to import it from, so its
    descriptor is written out here, field for field, and the Status class is
    built from it like every other class: decoding stays schema-driven rather
    than hand-parsing bytes.
    """
    field = descriptor_pb2.FieldDescriptorProto
    status_file = descriptor_pb2.FileDescriptorProto(
        name="google/rpc/status.proto",
        package="google.rpc",
        syntax="proto3",
        dependency=["google/protobuf/any.proto"],
    )
    status = status_file.message_type.add(name="Status")
    status.field.add(name="code", json_name="code", number=1, label=field.LABEL_OPTIONAL, type=field.TYPE_INT32)
    status.field.add(name="message", json_name="message", number=2, label=field.LABEL_OPTIONAL, type=field.TYPE_STRING)
    status.field.add(
        name="details",
        json_name="details",
        number=3,
        label=field.LABEL_REPEATED,
        type=field.TYPE_MESSAGE,
        type_name=".google.protobuf.Any",
    )
    return status_file


class Contract:
    """The message classes and services of a FileDescriptorSet, in a pool of their own."""

    def __init__(self, descriptor_set: descriptor_pb2.FileDescriptorSet) -> None:
        self.pool = descriptor_pool.DescriptorPool()
        self._factory = message_factory.MessageFactory(self.pool)
        self._streaming: dict[str, tuple[bool, bool]] = {}
        files = list(descriptor_set.file)
        names = {f.name for f in files}
        if "google/protobuf/any.proto" not in names:
            any_file = descriptor_pb2.FileDescriptorProto()
            any_pb2.DESCRIPTOR.CopyToProto(any_file)
            files.append(any_file)
        files.append(_status_proto_file())
        # buf writes a file after its imports, so the files can be added in order.
        for file in files:
            self.pool.Add(file)
            for service in file.service:
                full_name = f"{file.package}.{service.name}" if file.package else service.name
                for method in service.method:
                    self._streaming[f"{full_name}.{method.name}"] = (method.client_streaming, method.server_streaming)

    @classmethod
    def load(cls, path: str) -> "Contract":
        with open(path, "rb") as file:
            return cls(descriptor_pb2.FileDescriptorSet.FromString(file.read()))

    def message_class(self, full_name: str) -> type:
        """The class of a message, e.g. message_class("mailroom.v1.EnqueueRequest")."""
        descriptor = self.pool.FindMessageTypeByName(full_name)
        get_message_class = getattr(message_factory, "GetMessageClass", None)  # protobuf >= 4.22
        if get_message_class is not None:
            return get_message_class(descriptor)
        return self._factory.GetPrototype(descriptor)

    def new(self, full_name: str, **fields: Any) -> Any:
        """A message; sub-messages may be given as dicts, e.g. new("...EnqueueRequest", dispatch={"thread_id": "t"})."""
        return self.message_class(full_name)(**fields)

    def enum_name(self, full_name: str, number: int) -> str:
        """The name of an enum value, e.g. enum_name("mailroom.v1.RunDispatchStatus", 3) == "RUN_DISPATCH_STATUS_ACKED"."""
        return self.pool.FindEnumTypeByName(full_name).values_by_number[number].name

    def service(self, channel: grpc.Channel, full_name: str) -> "ServiceStub":
        return ServiceStub(self, channel, full_name)

    def methods(self, service_full_name: str) -> Iterable[tuple[str, str, str, bool, bool]]:
        """(name, input type, output type, client streaming, server streaming) of each method."""
        service = self.pool.FindServiceByName(service_full_name)
        for method in service.methods:
            client_streaming, server_streaming = self._streaming[method.full_name]
            yield method.name, method.input_type.full_name, method.output_type.full_name, client_streaming, server_streaming

    def status(self, error: grpc.RpcError) -> Any | None:
        """The google.rpc.Status in the error's grpc-status-details-bin trailer, or None."""
        trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
        for key, value in trailers or ():
            if key == STATUS_DETAILS_KEY:
                # grpcio hands -bin metadata over already base64-decoded.
                return self.message_class("google.rpc.Status").FromString(value)
        return None

    def error_details(self, error: grpc.RpcError) -> list[Any]:
        """The mailroom.v1.ErrorDetail messages among the status details (empty when there are none).

        Each detail is a google.protobuf.Any: type_url names the type after
        its last "/" and value holds the serialized message.
        """
        status = self.status(error)
        if status is None:
            return []
        detail_class = self.message_class(ERROR_DETAIL)
        return [detail_class.FromString(item.value) for item in status.details if item.type_url.rsplit("/", 1)[-1] == ERROR_DETAIL]


class ServiceStub:
    """One attribute per RPC of a service, named as in the contract (e.g. stub.Enqueue).

    A unary method returns the response; a server-streaming one returns an
    iterator of responses that is also a grpc.Call (cancel() ends it).
    Call with a request message, or with its fields as keyword arguments,
    plus timeout= and metadata= as in grpcio.
    """

    def __init__(self, contract: Contract, channel: grpc.Channel, full_name: str) -> None:
        for name, input_type, output_type, client_streaming, server_streaming in contract.methods(full_name):
            if client_streaming:
                continue  # the contract has none; grpcio's stream_* API would be needed
            request_class = contract.message_class(input_type)
            response_class = contract.message_class(output_type)
            open_call = channel.unary_stream if server_streaming else channel.unary_unary
            multicallable = open_call(
                f"/{full_name}/{name}",
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            )
            setattr(self, name, _Method(multicallable, request_class))


class _Method:
    def __init__(self, multicallable: Any, request_class: type) -> None:
        self._multicallable = multicallable
        self._request_class = request_class

    def __call__(self, request: Any = None, *, timeout: float | None = None, metadata: Any = None, **fields: Any) -> Any:
        if request is None:
            request = self._request_class(**fields)
        elif fields:
            raise TypeError("give either a request message or its fields, not both")
        return self._multicallable(request, timeout=timeout, metadata=metadata)


class MailroomClient:
    """Stubs for every Mailroom service over one gRPC channel.

    url is the server's base URL: http://host:port (HTTP/2 cleartext) or
    https://host:port (TLS; root_certificates is PEM bytes, default the
    system's roots).
    """

    def __init__(self, url: str, contract: Contract, root_certificates: bytes | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
            raise ValueError(f"expected http(s)://host:port, got {url!r}")
        target = f"{parts.hostname}:{parts.port}"
        if parts.scheme == "https":
            self.channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates))
        else:
            self.channel = grpc.insecure_channel(target)
        self.contract = contract
        for attribute, full_name in SERVICES.items():
            setattr(self, attribute, contract.service(self.channel, full_name))

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "MailroomClient":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
