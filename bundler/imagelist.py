"""images.txt: one image reference a line, `#` comments and blank lines allowed."""

from __future__ import annotations

from pathlib import Path

from bundler import reference
from bundler.errors import EnvironmentFailure, InputError
from bundler.reference import Reference, quoted


def read(path: str | Path) -> list[Reference]:
    """Parse an image list; errors name `file:line`. Duplicates (after normalizing) collapse."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such image list") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise EnvironmentFailure(f"{path}: {e.strerror}") from None
    return parse(text, str(path))


def parse(text: str, source: str) -> list[Reference]:
    """Parse image-list text; `source` names it in errors."""
    refs: list[Reference] = []
    seen: set[Reference] = set()
    # Lines are what editors and `sed -n Np` count: splitlines() would also break at form
    # feeds, U+2028 and the like, and the numbers in messages would point elsewhere.
    for lineno, line in enumerate(text.split("\n"), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if any(c.isspace() for c in entry):
            raise InputError(f"{source}:{lineno}: one image reference a line, got {quoted(entry)}")
        try:
            ref = reference.parse(entry)
        except InputError as e:
            raise InputError(f"{source}:{lineno}: {e}") from None
        if ref not in seen:
            seen.add(ref)
            refs.append(ref)
    if not refs:
        raise InputError(f"{source}: lists no images")
    return refs


def format_list(refs: list[Reference]) -> str:
    """The image list we ship beside the bundle, like K3s's k3s-images.txt."""
    return "".join(f"{r}\n" for r in refs)
