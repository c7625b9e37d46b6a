"""The cffi builder (API mode) for libcore: compiled at install time through setup.py's `cffi_modules`."""

import re
from pathlib import Path

from cffi import FFI

HEADER = Path(__file__).with_name("libcore.h")


def declarations(header: str) -> str:
    """What Python sees: libcore.h without its comments and preprocessor lines (one source for both)."""
    text = re.sub(r"/\*.*?\*/", "", header, flags=re.S)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


ffibuilder = FFI()
ffibuilder.cdef(declarations(HEADER.read_text(encoding="utf-8")))
ffibuilder.set_source(
    "assistant.libcore._libcore",
    '#include "libcore.h"',
    sources=["libcore/libcore.c"],  # relative to the project root, where setup.py runs
    include_dirs=["libcore"],
    depends=["libcore/libcore.h"],  # rebuilt when it changes, and shipped in the sdist (MANIFEST.in too)
    extra_compile_args=["-O3", "-std=c99"],
)

if __name__ == "__main__":  # a build by hand from the project root, for trying changes: python libcore/_build.py
    ffibuilder.compile(tmpdir="build/libcore", verbose=True)
