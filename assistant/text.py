"""Text from files, commands and models made safe to store and to show: valid Unicode, inert control characters."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Bidirectional and invisible formatting characters: they can make text read differently from what it is
# (U+202E reverses what follows; tag characters are invisible), so they are shown as \uNNNN too.
_FORMAT = re.compile("[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
                     "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
                     "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
                     "\U000e0020-\U000e007f]")  # Unicode's format characters (category Cf)


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
    return _FORMAT.sub(lambda m: f"\\u{ord(m.group()):04x}" if ord(m.group()) < 0x10000
                       else f"\\U{ord(m.group()):08x}", text)
