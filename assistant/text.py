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


ELLIPSIS = "…"


def clip(text: str, limit: int, *, one_line: bool = False) -> str:
    """The one place text is cut: at most `limit` characters, a cut marked with an ellipsis; one_line folds all
    whitespace runs (newlines too) into single spaces first."""
    text = " ".join(text.split()) if one_line else text.strip()
    return text if len(text) <= limit else text[: max(limit - len(ELLIPSIS), 0)].rstrip() + ELLIPSIS


def dedupe_key(text: str) -> str:
    """The words of a text, lower case, punctuation and spacing ignored: what near-duplicates share."""
    return " ".join(re.findall(r"\w+", text.casefold()))


def distinct(texts: list[str], against: list[str] = ()) -> list[int]:
    """Indices of the texts that are not near-duplicates (dedupe_key equal, contained or containing) of an
    earlier text or of one of `against`."""
    known = [k for k in map(dedupe_key, against) if k]
    keep = []
    for i, text in enumerate(texts):
        key = dedupe_key(text)
        if key and not any(key in k or k in key for k in known):
            known.append(key)
            keep.append(i)
    return keep
