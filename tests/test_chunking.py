from __future__ import annotations

import os
import textwrap

from assistant.memory_bank.chunking import Chunk, chunk_text, read_text, walk_files


def spans(chunks: list[Chunk]) -> list[tuple[int, int, str]]:
    return [(c.start, c.end, c.symbol) for c in chunks]


def check_text(chunks: list[Chunk], source: str) -> None:
    lines = source.split("\n")
    for c in chunks:
        assert c.text == "\n".join(lines[c.start - 1:c.end])


PY = textwrap.dedent('''\
    """Module docstring."""

    import os

    LIMIT = 3


    # Explains f.
    @staticmethod
    @property
    def f(x):
        return x


    class Short:
        def a(self):
            return 1

    if __name__ == "__main__":
        f(1)
''')


def test_python_definitions_and_module_code(tmp_path):
    path = tmp_path / "mod.py"
    path.write_text(PY)
    chunks = chunk_text("mod.py", read_text(path))
    assert spans(chunks) == [(1, 5, ""), (8, 12, "def f"), (15, 17, "class Short"), (19, 20, "")]
    assert chunks[1].text.startswith("# Explains f.\n@staticmethod")
    assert chunks[1].location == "mod.py:8"
    check_text(chunks, PY)


def test_long_class_split_into_header_and_methods():
    body = "\n".join(f"        x{i} = {i}" for i in range(8))
    src = f'class Big:\n    """Doc."""\n    N = 1\n\n    def one(self):\n{body}\n\n    @property\n    def two(self):\n{body}\n    M = 2\n'
    chunks = chunk_text("big.py", src, max_lines=10, overlap=2)
    assert spans(chunks) == [(1, 3, "class Big"), (5, 13, "Big.one"), (15, 24, "Big.two"), (25, 25, "class Big")]
    check_text(chunks, src)
    # the same class under the limit stays whole
    assert spans(chunk_text("big.py", src)) == [(1, 25, "class Big")]


def test_long_function_windows_keep_symbol():
    src = "def long():\n" + "\n".join(f"    y = {i}" for i in range(24)) + "\n"
    chunks = chunk_text("long.py", src, max_lines=10, overlap=3)
    assert spans(chunks) == [(1, 10, "def long"), (8, 17, "def long"), (15, 24, "def long"), (22, 25, "def long")]
    check_text(chunks, src)


def test_syntax_error_falls_back_to_windows():
    src = "print 'python 2'\n" + "x = 1\n" * 11
    chunks = chunk_text("old.py", src, max_lines=5, overlap=1)
    assert spans(chunks) == [(1, 5, ""), (5, 9, ""), (9, 12, "")]
    check_text(chunks, src)


MD = textwrap.dedent("""\
    Intro line.

    # Install
    Get it.

    ## From source
    ```sh
    # not a heading
    make
    ```

    ## From pip ##
    pip install it

    # Usage
    Run it.
""")


def test_markdown_heading_path_and_fences():
    chunks = chunk_text("README.md", MD)
    assert spans(chunks) == [
        (1, 1, ""), (3, 4, "Install"), (6, 10, "Install > From source"),
        (12, 13, "Install > From pip"), (15, 16, "Usage"),
    ]
    assert "# not a heading" in chunks[2].text
    check_text(chunks, MD)


def test_line_windows_with_overlap_drop_blank():
    src = "\n".join(f"line {i}" for i in range(1, 13)) + "\n" + "\n" * 20 + "tail\n"
    chunks = chunk_text("notes.txt", src, max_lines=5, overlap=2)
    assert spans(chunks) == [(1, 5, ""), (4, 8, ""), (7, 11, ""), (10, 14, ""), (31, 33, "")]
    assert [c.text for c in chunks if not c.text.strip()] == []
    assert chunks[-1].text.endswith("tail")
    check_text(chunks, src)


def test_crlf_and_empty():
    assert spans(chunk_text("a.txt", "a\r\nb\r\n")) == [(1, 2, "")]
    assert chunk_text("a.txt", "a\r\nb\r\n")[0].text == "a\nb"
    assert chunk_text("e.py", "\n  \n") == []


def test_read_text(tmp_path):
    (tmp_path / "b.dat").write_bytes(b"abc\0def")
    (tmp_path / "u.txt").write_bytes(b"\xef\xbb\xbfhi \xff\n")
    assert read_text(tmp_path / "b.dat") is None
    assert read_text(tmp_path / "u.txt") == "hi \ufffd\n"
    assert read_text(tmp_path / "missing.txt") is None


def test_walk_files(tmp_path):
    root = tmp_path / "root"
    files = {
        ".gitignore": "*.log\n!keep.log\nbuild/\n",
        ".env": "API_KEY=hidden files are never indexed\n",
        "a.py": "x = 1\n",
        "z.md": "# z\n",
        "debug.log": "no\n",
        "keep.log": "yes\n",
        "build/out.py": "no\n",
        "src/b.py": "y = 2\n",
        "src/.gitignore": "/gen.py\ndata/\n!debug.log\n",
        "src/gen.py": "no\n",
        "src/debug.log": "re-included\n",
        "src/data/x.txt": "no\n",
        "src/deep/gen.py": "anchored rule does not reach here\n",
        ".git/config": "no\n",
        ".git/info/exclude": "secret.txt\n",
        "secret.txt": "no\n",
        ".assistant/index.json": "no\n",
        "node_modules/m/index.js": "no\n",
        "big.txt": "x" * 2000,
        "image.png": "not really\n",
    }
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content)
    (root / "blob.dat").write_bytes(b"ab\0cd")
    (tmp_path / "outside.txt").write_text("outside\n")
    (tmp_path / "outdir").mkdir()
    (tmp_path / "outdir" / "o.txt").write_text("outside\n")
    os.symlink(tmp_path / "outside.txt", root / "out_link.txt")
    os.symlink(root / "a.py", root / "in_link.py")
    os.symlink(tmp_path / "outdir", root / "linked_dir")
    os.symlink(root, root / "src" / "loop")

    found = list(walk_files(root, max_bytes=1000))
    rels = [rel for _, rel in found]
    assert rels == ["a.py", "in_link.py", "keep.log", "src/b.py", "src/debug.log", "src/deep/gen.py", "z.md"]
    assert all(path == root.resolve() / rel for path, rel in found)
    assert rels == [rel for _, rel in walk_files(root, max_bytes=1000)]
    assert "big.txt" in [rel for _, rel in walk_files(root, max_bytes=5000)]
