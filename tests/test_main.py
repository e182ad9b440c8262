import importlib.abc
import platform
import sys

import pytest

from bundler import __main__ as entry


class _Interrupting(importlib.abc.MetaPathFinder):
    """Acts as if Ctrl-C came while bundler.cli was being imported."""

    def find_spec(self, name, path=None, target=None):
        if name == "bundler.cli":
            raise KeyboardInterrupt
        return None


def test_interrupt_while_importing_is_one_line_and_130(monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, "bundler.cli", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_Interrupting(), *sys.meta_path])
    assert entry.run(["--version"]) == 130
    assert capsys.readouterr().err == "bundler: error: interrupted\n"


def test_runs_the_cli(capsys):
    assert entry.run(["verify", "/nonexistent/b.tar.zst"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bundler: error: ") and "/nonexistent/b.tar.zst" in err


def test_sigterm_exits_143_with_cli_message(monkeypatch, capsys):
    import os
    import signal
    import time

    from bundler import cli

    def slow_build(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # interrupted at once
        return 0

    monkeypatch.setattr(cli, "_verify", slow_build)
    before = signal.getsignal(signal.SIGTERM)
    started = time.monotonic()
    assert entry.run(["verify", "x.tar.zst"]) == 143
    assert time.monotonic() - started < 2
    assert capsys.readouterr().err == "bundler: error: interrupted\n"
    assert signal.getsignal(signal.SIGTERM) is before  # put back for whoever called run()


def test_sighup_while_importing_is_one_line_and_129(monkeypatch, capsys):
    import os
    import signal
    import time

    class Hangup(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "bundler.cli":
                os.kill(os.getpid(), signal.SIGHUP)
                time.sleep(5)
            return None

    monkeypatch.delitem(sys.modules, "bundler.cli", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Hangup(), *sys.meta_path])
    assert entry.run(["--version"]) == 129
    assert capsys.readouterr().err == "bundler: error: interrupted\n"


class _InterruptOn(importlib.abc.MetaPathFinder):
    """Acts as if Ctrl-C came while `name` was being imported."""

    def __init__(self, name: str):
        self.name = name

    def find_spec(self, name, path=None, target=None):
        if name == self.name:
            raise KeyboardInterrupt
        return None


def _unimported(monkeypatch, dotted: str) -> None:
    """As if `dotted` (bundler.X or bundler.P.X) had not been imported in this process yet."""
    parent, _, name = dotted.rpartition(".")
    monkeypatch.delitem(sys.modules, dotted, raising=False)
    monkeypatch.delattr(importlib.import_module(parent), name, raising=False)


def test_interrupt_while_a_command_imports_its_modules_is_one_line_and_130(monkeypatch, capsys):
    # Each command imports its own modules when it runs (tests/test_imports.py): a Ctrl-C then
    # ends like one anywhere else.
    _unimported(monkeypatch, "bundler.checks.verify")
    monkeypatch.setattr(sys, "meta_path", [_InterruptOn("bundler.checks.verify"), *sys.meta_path])
    assert entry.run(["verify", "/nonexistent/b.tar.zst"]) == 130
    assert capsys.readouterr().err == "bundler: error: interrupted\n"


def test_interrupt_while_a_command_adds_its_arguments_is_one_line_and_130(monkeypatch, capsys):
    # build's arguments take their defaults from build's modules, imported while parsing.
    _unimported(monkeypatch, "bundler.commands.build")
    monkeypatch.setattr(sys, "meta_path", [_InterruptOn("bundler.commands.build"), *sys.meta_path])
    assert entry.run(["build", "--images", "/nonexistent/images.txt"]) == 130
    assert capsys.readouterr().err == "bundler: error: interrupted\n"


_PIECES = """
import resource, sys
from bundler import __main__ as entry
if sys.argv[1] == "settled":
    entry._settle_allocator()
# verify's stream pieces (a few alive at once: read-ahead, zstd, tar), digest.CHUNK's reads.
for size, alive in ((128 << 10, 4), (1 << 20, 1)):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(100):
        pieces = [bytearray(size) for _ in range(alive)]  # filled: every page touched
        del pieces
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc thresholds")
def test_start_up_settles_the_allocator_for_streamed_pieces():
    """Pieces of 128 KiB to 1 MiB, allocated and freed over and over as the streams do, are
    served from the heap, which is not given back and faulted in again each time (32 to 256
    page faults a piece): verify of the compact stand-ins was 41k page faults and 15% more CPU
    without."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", _PIECES, "settled"], capture_output=True,
                          text=True, check=True)
    small, large = (int(n) for n in done.stdout.split())
    # Given back and faulted in each round, they would be 12,800 and 25,600 faults.
    assert small < 1000 and large < 1000, (small, large)
