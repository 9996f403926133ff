"""One call per containerd service through Python's grpcio, with default
channel options and no generated code: requests are hand-built protobuf
bytes, responses raw bytes.

Usage: containerd_calls.py SOCKET [AUTHORITY]
Prints one line per call: "<call> ok <bytes>" or "<call> error <CODE>",
and "event <namespace> <topic>" for the event a namespace creation published.
"""

import sys

import grpc

SOCKET = sys.argv[1]
OPTIONS = [("grpc.default_authority", sys.argv[2])] if len(sys.argv) > 2 else []
channel = grpc.insecure_channel("unix://" + SOCKET, options=OPTIONS)


def md(namespace):
    return [("containerd-namespace", namespace)]


def field(number, payload):
    """A length-delimited protobuf field (payload under 128 bytes)."""
    return bytes([number << 3 | 2, len(payload)]) + payload


def unary(name, path, request=b"", namespace="default"):
    try:
        reply = channel.unary_unary(path)(request, metadata=md(namespace), timeout=20)
        print(f"{name} ok {len(reply)}")
    except grpc.RpcError as e:
        print(f"{name} error {e.code().name}")


def stream(name, path, request=b"", namespace="default"):
    try:
        replies = list(channel.unary_stream(path)(request, metadata=md(namespace), timeout=20))
        print(f"{name} ok {sum(len(r) for r in replies)}")
    except grpc.RpcError as e:
        print(f"{name} error {e.code().name}")


def fields(message):
    """Top-level length-delimited fields of a protobuf message: {number: bytes}."""
    out, i = {}, 0
    while i < len(message):
        key, i = varint(message, i)
        kind = key & 7
        if kind == 2:
            size, i = varint(message, i)
            out[key >> 3] = message[i : i + size]
            i += size
        elif kind == 0:
            _, i = varint(message, i)
        else:
            raise ValueError(f"unexpected wire type {kind}")
    return out


def varint(data, i):
    value, shift = 0, 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


S = "/containerd.services."
unary("Version", S + "version.v1.Version/Version")
unary("Namespaces.List", S + "namespaces.v1.Namespaces/List")
unary("Containers.List", S + "containers.v1.Containers/List")
stream("Content.List", S + "content.v1.Content/List")
unary("Images.List", S + "images.v1.Images/List")
unary("Leases.List", S + "leases.v1.Leases/List")
stream("Snapshots.List", S + "snapshots.v1.Snapshots/List", field(1, b"overlayfs"))
unary("Tasks.List", S + "tasks.v1.Tasks/List")
unary("Introspection.Plugins", S + "introspection.v1.Introspection/Plugins")
# Empty requests: the answer is a gRPC status, not a reset stream.
unary("Diff.Diff", S + "diff.v1.Diff/Diff")
unary("Transfer.Transfer", S + "transfer.v1.Transfer/Transfer")

# Events: subscribe, and once the server has answered with headers (the
# subscription is in place), create a namespace from namespace "caller-ns".
events = channel.unary_stream(S + "events.v1.Events/Subscribe")(
    field(1, b'topic=="/namespaces/create"'), metadata=md("caller-ns"), timeout=20
)
events.initial_metadata()
unary(
    "Namespaces.Create",
    S + "namespaces.v1.Namespaces/Create",
    field(1, field(1, b"py-made")),
    namespace="caller-ns",
)
envelope = fields(next(events))
print(f"event {envelope[2].decode()} {envelope[3].decode()}")
events.cancel()
