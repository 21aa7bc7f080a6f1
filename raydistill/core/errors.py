"""The exception types for bad user input.

Anything a user can get wrong (a path, a key in a YAML file, a budget string) raises
`UserError` with a one-line message naming the file, key or value and what would be valid.
The CLI turns it into `raydistill: error: <message>` and exit status 2. `ExportError` is the
`UserError` of `load_student`: a path that is not a loadable export.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user; the message is one line and says what would be valid."""


class ExportError(UserError):
    """An exported student that cannot be loaded: missing, truncated, damaged or modified files."""


def first_line(exc: BaseException | str, limit: int = 300) -> str:
    """The first non-blank line of an exception's message (at most `limit` characters), or
    its type's name when the message is empty: a library's multi-line error in a one-line
    refusal or warning."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if lines:
        return lines[0][:limit]
    return type(exc).__name__ if isinstance(exc, BaseException) else ""
