import importlib.abc
import sys

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
    """As if `dotted` (bundler.X) had not been imported in this process yet."""
    import bundler

    monkeypatch.delitem(sys.modules, dotted, raising=False)
    monkeypatch.delattr(bundler, dotted.rpartition(".")[2], raising=False)


def test_interrupt_while_a_command_imports_its_modules_is_one_line_and_130(monkeypatch, capsys):
    # Each command imports its own modules when it runs (tests/test_imports.py): a Ctrl-C then
    # ends like one anywhere else.
    _unimported(monkeypatch, "bundler.verify")
    monkeypatch.setattr(sys, "meta_path", [_InterruptOn("bundler.verify"), *sys.meta_path])
    assert entry.run(["verify", "/nonexistent/b.tar.zst"]) == 130
    assert capsys.readouterr().err == "bundler: error: interrupted\n"


def test_interrupt_while_a_command_adds_its_arguments_is_one_line_and_130(monkeypatch, capsys):
    # build's arguments take their defaults from build's modules, imported while parsing.
    _unimported(monkeypatch, "bundler.bundle")
    monkeypatch.setattr(sys, "meta_path", [_InterruptOn("bundler.bundle"), *sys.meta_path])
    assert entry.run(["build", "--images", "/nonexistent/images.txt"]) == 130
    assert capsys.readouterr().err == "bundler: error: interrupted\n"
