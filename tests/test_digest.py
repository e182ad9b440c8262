import hashlib
import io

import pytest

from bundler.digest import HashingWriter, VerifyingReader
from bundler.errors import DigestMismatch

DATA = b"layer bytes" * 1000
GOOD = "sha256:" + hashlib.sha256(DATA).hexdigest()


def _drain(reader):
    while reader.read(100):
        pass


def test_good_stream_passes():
    _drain(VerifyingReader(io.BytesIO(DATA), GOOD, len(DATA), "blob"))


@pytest.mark.parametrize(("data", "size", "fragment"), [
    (DATA[:-1] + b"X", len(DATA), "digest mismatch"),
    (DATA[:-1], len(DATA), "size mismatch"),
    (DATA + b"!", len(DATA), "more than the expected"),
])
def test_bad_streams_fail_naming_the_blob(data, size, fragment):
    with pytest.raises(DigestMismatch, match=f"img: layer 0: {fragment}"):
        _drain(VerifyingReader(io.BytesIO(data), GOOD, size, "img: layer 0"))


def test_rewind_takes_back_what_was_written_since_mark(tmp_path):
    with open(tmp_path / "out", "wb") as f:
        w = HashingWriter(f)
        w.write(b"kept ")
        mark = w.mark()
        w.write(b"taken back")
        w.rewind(mark)
        w.write(b"after")
    assert (tmp_path / "out").read_bytes() == b"kept after"
    assert w.size == len(b"kept after")
    assert w.digest == "sha256:" + hashlib.sha256(b"kept after").hexdigest()
