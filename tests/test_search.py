"""Hybrid search over a workspace (real MiniLM embeddings, real FAISS, real BM25): by name, by paraphrase,
incremental updates, the tool, the CLI, the installed packages' docs and the Context7 fallback (a real HTTP
server on 127.0.0.1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import call
from test_context7 import Context7Server

from assistant.config import load_settings
from assistant.events import Observation
from assistant.memory_bank.code_index import is_prose, tokens
from assistant.plugins import search as search_plugin

FILES = {
    "billing/invoice.py": '''
"""Invoices: totals, taxes and rounding."""

from decimal import Decimal


def compute_vat(net: Decimal, rate: Decimal) -> Decimal:
    """The value-added tax owed on a net amount."""
    return (net * rate).quantize(Decimal("0.01"))


def render_pdf(invoice) -> bytes:
    """Lay the invoice out as a PDF document."""
    raise NotImplementedError
''',
    "net/retry.py": '''
import random
import time


def with_backoff(fn, attempts=5):
    """Call fn again after each failure, waiting longer every time, and give up after `attempts` tries."""
    for n in range(attempts):
        try:
            return fn()
        except OSError:
            time.sleep(2 ** n + random.random())
    raise RuntimeError("gave up")


class RateLimiter:
    """At most `rate` calls per second."""

    def __init__(self, rate):
        self.rate = rate
''',
    "docs/setup.md": "# Setup\n\n## Database\n\nRun `createdb shop` before the first start.\n\n## Secrets\n\nPut keys in the vault.\n",
    "notes.txt": "buy milk\n",
    ".gitignore": "generated/\n",
    "generated/huge_table.py": "def compute_vat_table():\n    pass\n",
}


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text.lstrip("\n"))
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0")
    return root


@pytest.fixture
def embedder(shared_models):
    from assistant.memory_bank.embeddings import shared_embedder

    return shared_embedder()


def _top(root, query, k=3):
    return [f"{r.record['path']}:{r.record['start']}" for r in search_plugin.search_results(root, query, k)]


def test_tokens_split_identifiers_and_drop_stopwords():
    assert tokens("where is readFile_now called") == ["readfile_now", "read", "file", "now", "call"]
    assert is_prose("call it again after a failure") and not is_prose("with_backoff usage")


def test_finds_a_function_by_name_and_by_paraphrase(project, embedder):
    stats = search_plugin.refresh(project)
    assert stats.changed == 4 and stats.chunks >= 6  # two .py, the .md and notes.txt; not ignored or binary
    paths = {r["path"] for r in search_plugin.workspace_index(project).store.records.values()}
    assert "generated/huge_table.py" not in paths and "logo.png" not in paths
    assert _top(project, "compute_vat")[0] == "billing/invoice.py:6"
    assert _top(project, "with_backoff")[0] == "net/retry.py:5"
    # Paraphrases that share no identifier with the code.
    assert _top(project, "retry a failing operation with exponentially growing delays")[0] == "net/retry.py:5"
    assert _top(project, "how much tax is due on an amount")[0] == "billing/invoice.py:6"
    assert _top(project, "create the database before starting")[0] == "docs/setup.md:3"


def test_updates_are_incremental(project, embedder):
    search_plugin.refresh(project)
    again = search_plugin.refresh(project)
    assert (again.changed, again.chunks, again.removed) == (0, 0, 0)
    (project / "notes.txt").write_text("buy oat milk\n")
    (project / "docs" / "setup.md").unlink()
    (project / "net" / "dns.py").write_text("def resolve_host(name):\n    \"\"\"Look a host name up.\"\"\"\n")
    stats = search_plugin.refresh(project)
    assert (stats.changed, stats.removed) == (2, 1)
    assert _top(project, "resolve_host")[0] == "net/dns.py:1"
    assert all(not loc.startswith("docs/") for loc in _top(project, "create the database", k=10))


def test_the_search_tool_in_a_session(make_session, project, embedder):
    session = make_session([call("search", query="compute_vat"), "Found it."], workspace=str(project),
                           context7=False)
    events = list(session.agent.run_turn("where is vat computed?"))
    obs = next(e for e in events if isinstance(e, Observation))
    assert obs.ok and obs.text.startswith("1. billing/invoice.py:6-8  def compute_vat")
    assert "def compute_vat(net: Decimal" in obs.text


def test_cli_index_and_search_json(project, embedder, capsys):
    from assistant.cli import main

    assert main(["index", str(project)]) == 0
    assert "4 new or changed" in capsys.readouterr().out
    assert main(["search", "-w", str(project), "--json", "--no-context7", "-k", "2", "RateLimiter"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results[0]["location"] == "net/retry.py:15" and results[0]["symbol"] == "class RateLimiter"
    assert main(["search", "-w", str(project), "--no-context7", "rate", "limit", "calls", "per", "second"]) == 0
    assert "net/retry.py:15" in capsys.readouterr().out.splitlines()[0]


def test_installed_packages_docs(embedder, capsys, monkeypatch, tmp_path):
    from assistant.cli import main
    import importlib.metadata

    version = importlib.metadata.version("pluggy")
    assert main(["index", "--installed", "pluggy"]) == 0
    assert "1 new or changed" in capsys.readouterr().out
    assert main(["index", "--installed", "pluggy"]) == 0  # the same version: nothing to do
    assert "0 new or changed" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["search", "-w", str(empty), "--json", "--no-context7", "HookimplMarker"]) == 0
    top = json.loads(capsys.readouterr().out)[0]
    assert top["location"].startswith(f"pluggy=={version}:pluggy/") and "HookimplMarker" in top["symbol"]


@pytest.fixture
def context7():
    server = Context7Server()
    yield server
    server.httpd.shutdown()


def test_context7_is_asked_only_when_nothing_local_is_relevant(project, embedder, context7):
    settings = load_settings({"workspace": str(project), "context7_url": context7.url})
    local = search_plugin.search_text(project, settings, "compute_vat")
    assert "billing/invoice.py:6" in local and "Context7" not in local and context7.requests == []
    text = search_plugin.search_text(project, settings, "httpx client timeouts configuration")
    assert "nothing local looked relevant; from Context7:" in text
    assert [p for p, _, _ in context7.requests] == ["/api/v2/libs/search", "/api/v2/context"]
    passages = [l for l in text.split("from Context7:\n")[1].splitlines() if l.startswith("- ")]
    assert passages and all(len(p) <= 2 + settings.context7_chars for p in passages)
    # A server error is shown, the local results stay.
    context7.reset()
    context7.status = 500
    text = search_plugin.search_text(project, settings, "kubernetes ingress annotations reference")
    assert "context7: Context7 server error (HTTP 500)" in text
    assert search_plugin.search_text(project, load_settings({"workspace": str(project), "context7": False,
                                                             "context7_url": context7.url}),
                                     "kubernetes ingress annotations reference").find("Context7") == -1


def test_touched_files_are_not_embedded_again_and_a_big_first_index_is_left_to_index(project, embedder,
                                                                                      monkeypatch):
    import os

    monkeypatch.setattr(search_plugin, "MAX_EMBED_IN_A_CALL", 3)
    settings = load_settings({"workspace": str(project), "context7": False})
    with pytest.raises(Exception, match=r"needs \d+ chunks embedded .*run `assistant index`"):
        search_plugin.search_text(project, settings, "compute_vat")
    assert not search_plugin.workspace_index(project).store.records  # nothing half-done
    search_plugin.refresh(project)  # what `assistant index` does
    os.utime(project / "net" / "retry.py", ns=(1, 1))  # same content, another time
    assert search_plugin.refresh(project).changed == 0
    assert "billing/invoice.py:6" in search_plugin.search_text(project, settings, "compute_vat")


def test_the_bm25_index_is_kept_on_disk_and_rebuilt_when_records_change(project, embedder, monkeypatch):
    import bm25s

    from assistant.memory_bank.code_index import HybridIndex, fuse

    search_plugin.refresh(project)
    folder = search_plugin.workspace_index(project).store.folder
    fuse([HybridIndex(folder, embedder)], "compute_vat")
    assert (folder / "bm25" / "ids.sha256").exists()
    calls = []
    original = bm25s.BM25.index
    monkeypatch.setattr(bm25s.BM25, "index", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    fresh = HybridIndex(folder, embedder)  # another process, in effect: loads the saved one
    assert fuse([fresh], "compute_vat")[0].record["symbol"] == "def compute_vat" and calls == []
    (project / "notes.txt").write_text("buy bread\n")
    search_plugin.refresh(project)
    assert fuse([HybridIndex(folder, embedder)], "bread")[0].record["path"] == "notes.txt" and calls == [1]


def test_a_file_name_that_is_not_utf8_is_indexed(project, embedder):
    import os

    os.makedirs(project / "odd", exist_ok=True)
    with open(os.fsencode(str(project / "odd")) + b"/caf\xe9.py", "w") as fh:
        fh.write("def brew_coffee():\n    return 'espresso'\n")
    search_plugin.refresh(project)
    top = search_plugin.search_results(project, "brew_coffee", 1)[0].record
    assert top["path"] == "odd/caf\ufffd.py" and top["symbol"] == "def brew_coffee"
    assert search_plugin.refresh(project).changed == 0


def test_two_writers_planning_at_once_leave_no_duplicates(project, tmp_path):
    from test_memory import HashEmbedder

    from assistant.memory_bank.code_index import HybridIndex, update_workspace

    folder = tmp_path / "index"
    first = HybridIndex(folder, HashEmbedder())
    update_workspace(project, first)
    (project / "c.py").write_text("def gamma():\n    pass\n")
    (project / "notes.txt").write_text("buy tea\n")

    class Racing(HashEmbedder):
        """Embeds for the second writer; meanwhile, the first writer commits the same changes."""
        raced = False

        def encode(self, texts, progress=None, batch_size=32):
            if not Racing.raced:
                Racing.raced = True
                update_workspace(project, HybridIndex(folder, HashEmbedder()))
            return super().encode(texts, progress, batch_size)

    update_workspace(project, HybridIndex(folder, Racing()))
    assert Racing.raced
    records = list(HybridIndex(folder, HashEmbedder()).store.load().records.values())
    sources = [(r["source"], r["start"]) for r in records]
    assert len(sources) == len(set(sources)), "a chunk is in the index twice"
    assert [r["text"].split("\n", 1)[1] for r in records if r["source"] == "notes.txt"] == ["buy tea"]
