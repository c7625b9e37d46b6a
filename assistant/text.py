"""Text from files, commands and models made safe to store and to show: valid Unicode, inert control characters."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Bidirectional and invisible formatting characters: they can make text read differently from what it is
# (U+202E reverses what follows), so they are shown as \uNNNN too.
_FORMAT = re.compile("[\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def clean_text(text: str) -> str:
    """Valid Unicode: undecodable bytes (surrogate escapes) and lone surrogates become U+FFFD."""
    try:
        data = text.encode("utf-8", "surrogateescape")  # undecodable bytes back to themselves
    except UnicodeEncodeError:
        data = text.encode("utf-8", "surrogatepass")
    return data.decode("utf-8", "replace")


def escape_control(text: str) -> str:
    """Control characters (and so terminal escape sequences) shown as \\xNN, and bidirectional formatting
    characters as \\uNNNN, instead of acting on a terminal; newlines and tabs are kept."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", clean_text(text).replace("\r\n", "\n"))
    return _FORMAT.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
