"""Untrusted values in messages: quoted briefly, and made safe to print on a terminal.

Every message that shows a value it was given (an argument, a key or a name read from a file)
goes through `short` (a shortened `repr`), and every line printed on a terminal through
`safe_text` (control and format characters shown escaped, never interpreted). This module
imports nothing of the project, so every layer may use it.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

# Unicode categories shown escaped: controls (escape sequences, carriage returns), format
# characters (bidirectional overrides, zero-width joiners), surrogates, private use,
# unassigned, and the line and paragraph separators.
_UNSAFE = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


def short(value: Any, limit: int = 80) -> str:
    """`repr(value)`, cut to about `limit` characters: messages quote what they were given,
    not megabytes (and never fail on a value that cannot be shown)."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # e.g. an int with more digits than repr allows
        return f"a {type(value).__name__} that cannot be shown"
    if len(text) <= limit:
        return text
    return f"{text[: max(10, limit - 20)]}... ({len(text)} characters)"


def safe_text(value: Any, limit: int = 300) -> str:
    """A value made safe to print on a terminal: control characters (escape sequences,
    carriage returns, bidirectional overrides, ...) are shown escaped, never interpreted, and
    long values are cut after `limit` characters."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                           allow_nan=True, default=str)
    if len(text) > limit:
        text = text[:limit] + f"... ({len(text)} characters)"
    return "".join(ch.encode("unicode_escape").decode("ascii")
                   if unicodedata.category(ch) in _UNSAFE else ch for ch in text)


def one_line(e: BaseException | str) -> str:
    """An error as one line safe for a terminal: whitespace runs (newlines included) become
    one space, and control characters are shown escaped (a crafted file name cannot rewrite
    the line it is printed on)."""
    text = " ".join(str(e).split()) or (type(e).__name__ if isinstance(e, BaseException)
                                         else "")
    return safe_text(text, limit=2000)
