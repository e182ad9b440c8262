"""containerd.py: image records read through the real containerd's gRPC API, the wire decoder
on hostile bytes, and a socket that is absent or not containerd's."""

from __future__ import annotations

import contextlib
import socket as sockets
import threading
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bundler import containerd
from tests.conftest import BUNDLE


def test_lists_what_ctr_lists_with_digests_and_labels(builds, clean_containerd):
    done = clean_containerd.import_bundle(builds["p1"] / BUNDLE)
    assert done.returncode == 0, done.stderr
    clean_containerd.ctr("images", "label", "docker.io/library/busybox:1.36.1",
                         "io.cri-containerd.pinned=pinned", check=True)
    found = containerd.list_images(str(clean_containerd.socket))
    shown = clean_containerd.images()  # ctr's own table, an independent reader
    assert set(found) == set(shown)
    for name, record in found.items():
        assert record.digest == shown[name]["digest"]
        assert record.media_type == shown[name]["type"]
    assert found["docker.io/library/busybox:1.36.1"].pinned
    assert not found["docker.io/rancher/multilist:v1"].pinned
    assert found["docker.io/rancher/multilist:v1"].labels == {"io.cri-containerd.image":
                                                              "managed"}


def test_reads_only_the_namespace_asked_for(builds, clean_containerd):
    assert clean_containerd.import_bundle(builds["p1"] / BUNDLE).returncode == 0
    assert containerd.list_images(str(clean_containerd.socket), namespace="default") == {}
    assert "docker.io/rancher/ociindex:v1" in containerd.list_images(
        str(clean_containerd.socket))


# -- the decoder ---------------------------------------------------------------------------


def _key(number: int, wire: int) -> bytes:
    return containerd._varint(number << 3 | wire)


def _len(number: int, data: bytes) -> bytes:
    return _key(number, 2) + containerd._varint(len(data)) + data


def _image(name: str, digest: str, labels: dict[str, str]) -> bytes:
    """An Image as containerd 1.6 and 2.x send it, with the fields we skip filled in."""
    timestamp = _key(1, 0) + containerd._varint(1_700_000_000) + _key(2, 0) + b"\x05"
    target = (_len(1, b"application/vnd.oci.image.manifest.v1+json") + _len(2, digest.encode())
              + _key(3, 0) + containerd._varint(1234)
              + _len(5, _len(1, b"org.opencontainers.image.ref.name") + _len(2, b"v1")))
    body = _len(1, name.encode())
    for k, v in labels.items():
        body += _len(2, _len(1, k.encode()) + _len(2, v.encode()))
    return body + _len(3, target) + _len(7, timestamp) + _len(8, timestamp)


def test_decodes_every_field_it_needs_and_skips_the_rest():
    digest = "sha256:" + "ab" * 32
    data = (_len(1, _image("docker.io/rancher/x:v1", digest, {containerd.PINNED_LABEL: "pinned"}))
            + _len(1, _image("docker.io/rancher/y:v1", digest, {}))
            + _key(15, 0) + b"\x01" + _key(16, 5) + b"\0\0\0\0" + _key(17, 1) + b"\0" * 8)
    x, y = containerd.decode_list_response(data)
    assert (x.name, x.digest, x.pinned) == ("docker.io/rancher/x:v1", digest, True)
    assert x.media_type == "application/vnd.oci.image.manifest.v1+json"
    assert (y.name, y.pinned) == ("docker.io/rancher/y:v1", False)
    assert containerd.decode_list_response(b"") == []


@pytest.mark.parametrize("data, said", [
    (_len(1, _len(1, b"x"))[:-1], "bytes"),  # a length past the end
    (b"\x0a" + b"\xff" * 11, "varint"),
    (_len(1, _len(1, b"\xff\xfe")), "UTF-8"),
    (_len(1, _key(2, 0) + b"\x01"), "map entry"),
    (_len(1, _len(3, b"") ), "without a name"),
    (_key(1, 3), "wire type 3"),
    (_key(0, 0) + b"\x00", "field number 0"),
    (_key(1, 0) + b"\x01", "not a message"),
])
def test_rejects_what_is_not_an_image_list(data, said):
    with pytest.raises(containerd.ProtocolError, match=said):
        containerd.decode_list_response(data)


@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_protocol_error(data):
    try:
        containerd.decode_list_response(data)
    except containerd.ProtocolError:
        pass


def test_request_filters_encode_as_repeated_strings():
    assert containerd.encode_list_request() == b""
    assert containerd.encode_list_request(("name==a",)) == b"\x0a\x07name==a"


# -- sockets that are not containerd's -------------------------------------------------------


def test_an_absent_socket_is_said(tmp_path):
    with pytest.raises(containerd.Unreachable, match="no such socket"):
        containerd.list_images(str(tmp_path / "none.sock"))


def test_a_regular_file_is_not_a_socket(tmp_path):
    (tmp_path / "file.sock").write_text("x")
    with pytest.raises(containerd.NotContainerd, match="not a socket"):
        containerd.list_images(str(tmp_path / "file.sock"))


@contextlib.contextmanager
def _grpc_server(path: Path, list_answer: bytes | None = None):
    """A real gRPC server on a unix socket; with `list_answer`, it answers containerd's
    Images/List with those bytes, else it serves nothing."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    if list_answer is not None:
        handler = grpc.unary_unary_rpc_method_handler(lambda req, ctx: list_answer)
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "containerd.services.images.v1.Images", {"List": handler})])
    server.add_insecure_port(f"unix:{path}")
    server.start()
    try:
        yield
    finally:
        server.stop(None)


def test_a_grpc_server_without_the_image_service(tmp_path):
    path = tmp_path / "other.sock"
    with _grpc_server(path), \
            pytest.raises(containerd.NotContainerd, match="no containerd image service"):
        containerd.list_images(str(path))


def test_a_grpc_server_whose_answer_is_not_an_image_list(tmp_path):
    path = tmp_path / "liar.sock"
    with _grpc_server(path, b"\x0a\xff\xff"), \
            pytest.raises(containerd.NotContainerd, match="not containerd's image list"):
        containerd.list_images(str(path))


def _socket_server(path: Path, answer: bytes | None) -> tuple[sockets.socket, threading.Event]:
    """A unix socket that answers each connection with `answer` and closes it, or (None)
    accepts and says nothing until the test ends."""
    server = sockets.socket(sockets.AF_UNIX)
    server.bind(str(path))
    server.listen(8)
    done = threading.Event()
    held = []

    def serve():
        server.settimeout(0.2)
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            if answer is None:
                held.append(conn)
                continue
            try:
                conn.recv(4096)
                conn.sendall(answer)
            except OSError:
                pass
            conn.close()
        for conn in held:
            conn.close()
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    return server, done


def test_a_socket_speaking_http1_is_a_clean_error(tmp_path):
    path = tmp_path / "http.sock"
    _, done = _socket_server(path, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    try:
        with pytest.raises(containerd.Unreachable) as e:
            containerd.list_images(str(path), timeout=5)
    finally:
        done.set()
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_a_socket_that_never_answers_times_out(tmp_path):
    path = tmp_path / "mute.sock"
    _, done = _socket_server(path, None)
    try:
        with pytest.raises(containerd.Unreachable, match="no answer from containerd within 1 s"):
            containerd.list_images(str(path), timeout=1)
    finally:
        done.set()
