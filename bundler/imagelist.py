"""images.txt: one image reference a line, `#` comments and blank lines allowed."""

from __future__ import annotations

from pathlib import Path

from bundler import localfile, reference
from bundler.errors import InputError
from bundler.reference import Reference
from bundler.text import quoted

# Thousands of references fit in far less; a larger file is something else given by mistake
# (a bundle, /dev/zero), refused before it is read into memory.
MAX_IMAGE_LIST = 1 << 20


def read(path: str | Path) -> list[Reference]:
    """Parse an image list; errors name `file:line`. Duplicates (after normalizing) collapse."""
    text = localfile.read_text(path, MAX_IMAGE_LIST, "image list", "an image list")
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
