"""Text from files, commands and models made safe to store and to show: valid Unicode, inert control characters."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_text(text: str) -> str:
    """Valid Unicode: undecodable bytes (surrogate escapes) and lone surrogates become U+FFFD."""
    try:
        data = text.encode("utf-8", "surrogateescape")  # undecodable bytes back to themselves
    except UnicodeEncodeError:
        data = text.encode("utf-8", "surrogatepass")
    return data.decode("utf-8", "replace")


def escape_control(text: str) -> str:
    """Control characters (and so terminal escape sequences) shown as \\xNN instead of acting on a terminal;
    newlines and tabs are kept."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", clean_text(text).replace("\r\n", "\n"))
