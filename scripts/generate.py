"""scripts/generate's body: see scripts/generate."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import shtab  # noqa: E402
from argparse_manpage.manpage import Manpage  # noqa: E402

from bundler import __version__, cli  # noqa: E402

SHELLS = {"bash": "bundler.bash", "zsh": "_bundler", "fish": "bundler.fish"}
# What a value names, by its metavar: the shells then offer files or directories for it.
_FILES = re.compile(r"FILE|BUNDLE|KEY|\.pem|CHART|IMAGES_TXT")
_DIRS = re.compile(r"DIR")
MANUAL = "bundler manual"
SEE_ALSO = "skopeo(1), zstd(1), ctr(8)"


def full_parser() -> argparse.ArgumentParser:
    """bundler's parser with every subcommand's arguments added (cli adds them only when a
    subcommand is parsed), and file and directory completion for the values that name one."""
    # Help texts name the cache's default and argparse wraps to the terminal: the files must
    # not depend on who generates them.
    os.environ["XDG_CACHE_HOME"] = "~/.cache"
    os.environ["COLUMNS"] = "100"
    top = cli.parser()
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.complete()
    for p in _parsers(top):
        for action in p._actions:
            name = action.metavar or action.dest.upper()
            if isinstance(name, str) and action.nargs != 0 and not action.choices:
                if _DIRS.search(name):
                    action.complete = shtab.DIRECTORY
                elif _FILES.search(name):
                    action.complete = shtab.FILE
    return top


def _parsers(top: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [top]
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.extend(action.choices.values())
    return found


def _release_date() -> str:
    """The CHANGELOG's date for this version (the man pages' date: the same for every run)."""
    text = (ROOT / "CHANGELOG.md").read_text()
    found = re.search(rf"^## \[{re.escape(__version__)}\] - (\d{{4}}-\d\d-\d\d)$", text,
                      re.MULTILINE)
    if not found:
        raise SystemExit(f"CHANGELOG.md has no '## [{__version__}] - DATE' section")
    return found.group(1)


def man_page(p: argparse.ArgumentParser, date: str) -> str:
    """One page: the synopsis, options and description of bundler and of each command."""
    page = Manpage(p, _data={"date": date, "version": __version__, "manual_title": MANUAL,
                             "project_name": "bundler",
                             "description": "build, verify, place and push K3s airgap image "
                                            "bundles"})
    return f"{page}\n.SH SEE ALSO\n{SEE_ALSO}\n"


def outputs() -> dict[Path, str]:
    """Every generated file, by path, with its text."""
    top = full_parser()
    files = {ROOT / "completions" / name: shtab.complete(top, shell=shell)
             for shell, name in SHELLS.items()}
    files[ROOT / "man" / "bundler.1"] = man_page(top, _release_date())
    return files


def main(argv: list[str]) -> int:
    check = argv == ["--check"]
    if argv and not check:
        print("usage: scripts/generate [--check]", file=sys.stderr)
        return 2
    stale = []
    for path, text in outputs().items():
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
            continue
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    if stale:
        print(f"out of date (run scripts/generate): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
