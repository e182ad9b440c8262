"""containerd's image store, read through its gRPC API over its unix socket.

One call, `containerd.services.images.v1.Images/List` in a namespace (the gRPC metadata
`containerd-namespace`), returns every image record: its name, its labels and its target
descriptor (the manifest or index digest the name points at). `ctr images ls` and K3s read the
same records. This module knows gRPC and containerd, and nothing of bundles.

The messages are decoded here, not by generated protobuf classes: the answer needs four small
messages whose wire format protobuf's rules freeze (a field keeps its number and type), the
same in containerd 1.6 and 2.x (api/services/images/v1/images.proto, api/types/descriptor.proto).
grpcio carries the bytes, capped in size, and the answer is read by this bounded decoder alone:
lengths checked against what is left, varints at most 10 bytes, nesting fixed at three levels,
strings strict UTF-8.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from bundler.errors import EnvironmentFailure

# K3s's containerd; RKE2 uses the same path (k3s pkg/agent/config, rke2 docs).
DEFAULT_SOCKET = "/run/k3s/containerd/containerd.sock"
# The namespace the CRI plugin, and so the kubelet and K3s's importer, keeps images in.
NAMESPACE = "k8s.io"
# What K3s sets on what it imports, so the kubelet's image GC keeps the image.
PINNED_LABEL = "io.cri-containerd.pinned"
DEFAULT_TIMEOUT = 10.0
# containerd sends at most 16 MiB per message (defaults.DefaultMaxSendMsgSize), some 40,000
# image records; more is not containerd talking.
MAX_ANSWER = 16 << 20
_LIST = "/containerd.services.images.v1.Images/List"
_NAMESPACE_HEADER = "containerd-namespace"


@dataclass(frozen=True)
class ImageRecord:
    """One image record: a name and the descriptor it points at."""

    name: str
    digest: str
    media_type: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def pinned(self) -> bool:
        return self.labels.get(PINNED_LABEL) == "pinned"


class Unreachable(EnvironmentFailure):
    """No containerd answered on the socket (exit 3); the message names the socket."""


class NotContainerd(Unreachable):
    """Something answered on the socket, and it was not containerd's image service."""


def list_images(socket: str, namespace: str = NAMESPACE,
                timeout: float = DEFAULT_TIMEOUT) -> dict[str, ImageRecord]:
    """name -> record of every image in `namespace` of the containerd listening on `socket`.
    Unreachable (or NotContainerd) naming the socket when that fails."""
    _check_socket(socket)
    import grpc  # only the commands that talk to containerd load gRPC

    options = [("grpc.max_receive_message_length", MAX_ANSWER),
               ("grpc.enable_http_proxy", 0), ("grpc.enable_retries", 0)]
    with grpc.insecure_channel(f"unix:{os.path.abspath(socket)}", options=options) as channel:
        # Bytes in and out: a deserializer that raised would have grpcio log a traceback.
        call = channel.unary_unary(_LIST)
        try:
            answer = call(encode_list_request(), timeout=timeout,
                          metadata=[(_NAMESPACE_HEADER, namespace)])
        except grpc.RpcError as e:
            raise _translated(e, socket, timeout) from None
    try:
        records = decode_list_response(answer)
    except ProtocolError as e:
        raise NotContainerd(f"{socket}: the answer is not containerd's image list ({e})"
                            ) from None
    return {r.name: r for r in records}


def _check_socket(socket: str) -> None:
    try:
        st = os.stat(socket)
    except FileNotFoundError:
        raise Unreachable(f"{socket}: no such socket; is K3s (or RKE2) running on this "
                          "node?") from None
    except OSError as e:
        raise Unreachable(f"{socket}: {e.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise NotContainerd(f"{socket}: not a socket, so not containerd's")
    if not os.access(socket, os.R_OK | os.W_OK):
        raise Unreachable(f"{socket}: permission denied (containerd's socket is root's)")


def _translated(e, socket: str, timeout: float) -> Unreachable:
    """One line for a failed call: gRPC's status code and details, said for a person."""
    import grpc

    code, details = e.code(), _one_line(e.details() or "")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return NotContainerd(f"{socket}: answers gRPC but has no containerd image service "
                             f"({details})")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Unreachable(f"{socket}: no answer from containerd within {timeout:g} s")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return NotContainerd(f"{socket}: answered with more than {MAX_ANSWER} bytes, more "
                             "than containerd sends")
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unreachable(f"{socket}: containerd unreachable ({details})")
    return NotContainerd(f"{socket}: containerd answered {code.name} ({details})")


def _one_line(text: str) -> str:
    from bundler.text import shown

    return shown(" ".join(text.split()), limit=300)


# -- the wire format (protobuf encoding, developers.google.com/protocol-buffers/docs/encoding)


class ProtocolError(ValueError):
    """Bytes that are not the message they were read as."""


_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def encode_list_request(filters: tuple[str, ...] = ()) -> bytes:
    """ListImagesRequest { repeated string filters = 1; }: none lists every image."""
    out = bytearray()
    for f in filters:
        data = f.encode()
        out += bytes([(1 << 3) | _LEN]) + _varint(len(data)) + data
    return bytes(out)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 70, 7):
        if pos >= len(buf):
            raise ProtocolError("varint runs past the end")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    raise ProtocolError("varint longer than 10 bytes")


def fields(buf: memoryview) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of each field of one message: an int for a varint or a
    fixed-width field, a memoryview of the bytes for a length-delimited one."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtocolError("field number 0")
        if wire == _VARINT:
            value, pos = _read_varint(buf, pos)
        elif wire in (_I64, _I32):
            width = 8 if wire == _I64 else 4
            if pos + width > len(buf):
                raise ProtocolError("fixed-width field runs past the end")
            value, pos = int.from_bytes(buf[pos:pos + width], "little"), pos + width
        elif wire == _LEN:
            length, pos = _read_varint(buf, pos)
            if length > len(buf) - pos:
                raise ProtocolError(f"field {number}: {length} bytes, {len(buf) - pos} left")
            value, pos = buf[pos:pos + length], pos + length
        else:  # groups (3, 4) are proto2's, and 6, 7 are not wire types
            raise ProtocolError(f"field {number}: wire type {wire}")
        yield number, wire, value


def _text(value: object, what: str) -> str:
    if not isinstance(value, memoryview):
        raise ProtocolError(f"{what}: not a string")
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"{what}: not UTF-8") from None


def _two_strings(buf: memoryview, first: str, second: str) -> tuple[str, str]:
    """Fields 1 and 2 of a message, as strings ("" when absent); the others skipped."""
    one = two = ""
    for number, _, value in fields(buf):
        if number == 1:
            one = _text(value, first)
        elif number == 2:
            two = _text(value, second)
    return one, two


def _pair(buf: memoryview) -> tuple[str, str]:
    """A map<string, string> entry: { key = 1; value = 2; }."""
    return _two_strings(buf, "map key", "map value")


def _descriptor(buf: memoryview) -> tuple[str, str]:
    """containerd.types.Descriptor: media_type = 1, digest = 2 (size = 3 and annotations = 5
    are not needed): (media type, digest)."""
    return _two_strings(buf, "descriptor media_type", "descriptor digest")


def _image(buf: memoryview) -> ImageRecord:
    """Image: name = 1, labels = 2 (map), target = 3 (Descriptor); the times 7, 8 skipped."""
    name, labels, media, digest = "", {}, "", ""
    for number, _, value in fields(buf):
        if number == 1:
            name = _text(value, "image name")
        elif number == 2:
            if not isinstance(value, memoryview):
                raise ProtocolError("image labels: not a map entry")
            key, val = _pair(value)
            labels[key] = val
        elif number == 3:
            if not isinstance(value, memoryview):
                raise ProtocolError("image target: not a descriptor")
            media, digest = _descriptor(value)
    if not name:
        raise ProtocolError("an image record without a name")
    return ImageRecord(name, digest, media, labels)


def decode_list_response(data: bytes) -> list[ImageRecord]:
    """ListImagesResponse { repeated Image images = 1; }; ProtocolError for bytes that are
    not one."""
    images = []
    for number, _, value in fields(memoryview(data)):
        if number == 1:
            if not isinstance(value, memoryview):
                raise ProtocolError("images: not a message")
            images.append(_image(value))
    return images
