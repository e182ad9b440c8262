"""localfile.open_regular: what it opens, what it refuses, and that an interrupt at any point
leaves the fd closed exactly once with the interrupt, not a close's error, propagating."""

from __future__ import annotations

import io
import os

import pytest

from bundler import localfile
from bundler.errors import InputError


@pytest.fixture
def fds(monkeypatch):
    """The fds open_regular opens, and the fds closed by os.close (the real calls, counted)."""
    seen: dict[str, list[int]] = {"opened": [], "closed": []}
    real_open, real_close = os.open, os.close

    def counting_open(*args, **kwargs):
        fd = real_open(*args, **kwargs)
        seen["opened"].append(fd)
        return fd

    def counting_close(fd):
        seen["closed"].append(fd)
        real_close(fd)

    monkeypatch.setattr(os, "open", counting_open)
    monkeypatch.setattr(os, "close", counting_close)
    return seen


def _is_closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


def test_a_regular_file_is_opened_buffered(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"hello")
    with localfile.open_regular(path) as f:
        assert f.read() == b"hello"
        assert isinstance(f, io.BufferedReader)


def test_a_directory_is_refused_and_its_fd_closed(tmp_path, fds):
    with pytest.raises(InputError, match="not a regular file \\(a directory\\)"):
        localfile.open_regular(tmp_path)
    assert fds["closed"] == fds["opened"]
    assert _is_closed(fds["opened"][0])


def test_an_interrupt_once_the_fileio_owns_the_fd_closes_it_once(tmp_path, monkeypatch, fds):
    """A Ctrl-C between the FileIO and the buffer over it: the FileIO closes the fd and nothing
    else does (a second close raised 'Bad file descriptor' in the interrupt's place)."""
    path = tmp_path / "f"
    path.write_bytes(b"hello")
    raws: list[io.FileIO] = []

    def interrupted(raw, *args, **kwargs):
        raws.append(raw)
        raise KeyboardInterrupt

    monkeypatch.setattr(io, "BufferedReader", interrupted)
    with pytest.raises(KeyboardInterrupt):
        localfile.open_regular(path)
    [fd] = fds["opened"]
    assert raws[0].closed
    assert fds["closed"] == []  # the FileIO's close, not a second one by os.close
    assert _is_closed(fd)


def test_an_interrupt_before_the_fileio_owns_the_fd_closes_it_once(tmp_path, monkeypatch,
                                                                     fds):
    path = tmp_path / "f"
    path.write_bytes(b"hello")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(io, "FileIO", interrupted)
    with pytest.raises(KeyboardInterrupt):
        localfile.open_regular(path)
    assert fds["closed"] == fds["opened"]
    assert _is_closed(fds["opened"][0])
