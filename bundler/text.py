"""The one way untrusted text goes into a message: one line, printable ASCII, bounded.

What a registry, a bundle, a chart or a file says can hold control characters (an escape
sequence would reach the terminal) and can be megabytes long; every message that quotes it
shows it through shown().
"""

from __future__ import annotations

# How much of a name (a reference, a tar member, a chart path) a message shows; other values
# (a JSON field, a header) are shown shorter by default.
NAME_LIMIT = 100


def shown(value: object, *, quote: bool = False, limit: int = 80) -> str:
    """`value` for a one-line message: plain when it is a printable ASCII string or an integer
    (unless `quote`), else its repr in ASCII (ascii()), which escapes every control and
    non-ASCII character (repr() keeps printable non-ASCII: look-alikes of our own text);
    at most `limit` characters, a quoted value cut short keeping its closing quote."""
    plain = not quote and (isinstance(value, int) and not isinstance(value, bool)
                           or isinstance(value, str) and value.isprintable() and value.isascii())
    text = str(value) if plain else ascii(value)
    if len(text) <= limit:
        return text
    if plain:
        return text[: limit - 3] + "..."
    return f"{text[: limit - 4]}...{text[-1]}"


def quoted(value: object) -> str:
    """A name (a reference, a tar member, a path) for a message: always quoted, and longer
    than other values before it is cut."""
    return shown(value, quote=True, limit=NAME_LIMIT)
