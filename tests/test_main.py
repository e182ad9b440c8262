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
