"""Memory: notes and turns recalled across sessions (real MiniLM embeddings, real FAISS), the store's durability
(SIGKILL during saves, a corrupt index, two writers) and /memory."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
from conftest import call
import pytest

from assistant.config import load_settings
from assistant.events import Meta
from assistant.logs.audit import read_records
from assistant.memory_bank import notes
from assistant.memory_bank.store import INDEX, RECORDS, VectorStore, index_ids

TESTS = Path(__file__).parent


class HashEmbedder:
    """Deterministic word-hash vectors: the durability tests are about files, not meaning, and must not wait for
    a model in every killed process."""

    dim = 384

    def encode(self, texts, progress=None, batch_size=32):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, zlib.crc32(word.encode()) % self.dim] += 1.0
            out[row] /= max(np.linalg.norm(out[row]), 1e-6)
        if progress:
            progress(len(texts))
        return out


@pytest.fixture
def embedder(shared_models):
    from assistant.memory_bank.embeddings import shared_embedder

    return shared_embedder()


def _session(make_session, outputs, **flags):
    return make_session(outputs, memory=True, **flags)


def _turn(session, text):
    return list(session.agent.run_turn(text))


def test_a_note_is_recalled_in_the_next_session(make_session, embedder, workspace):
    # Session 1: the note is taken, then five unrelated ones: the newest five are pinned in the system prompt
    # anyway, so the staging note can only come back through recall.
    first = _session(make_session, ["noted."])
    first.memory.remember("the staging server listens on port 8443")
    for other in ("Maria reviews every change to the billing module", "we squash commits before merging",
                  "the design system uses 8px spacing", "lunch is at noon on fridays", "docs live in the wiki"):
        first.memory.remember(other)
    first.close()
    # Session 2: the question shares no word with the note but its meaning.
    second = _session(make_session, ["It is 8443."], recall_k=1)
    events = _turn(second, "Which port does staging use?")
    recall = [e for e in events if isinstance(e, Meta) and e.name == "recall"]
    assert recall and "8443" in recall[0].data["items"][0]["text"]
    sent = second.model.received[0][-1]["content"]
    assert "port 8443" in sent and "billing" not in sent and sent.endswith("Which port does staging use?")


def test_turns_are_kept_per_workspace_and_recalled_later(make_session, embedder, workspace, tmp_path):
    first = _session(make_session, ["Use `make deploy-eu`; it needs the VPN."])
    _turn(first, "how do I deploy the EU cluster?")
    first.close()
    assert (workspace / ".assistant" / "memory" / RECORDS).exists()
    assert (workspace / ".assistant" / "memory" / ".gitignore").read_text().strip().endswith("*")
    second = _session(make_session, ["ok"])
    _turn(second, "remind me how deploying to the european cluster works")
    assert "make deploy-eu" in second.model.received[0][-1]["content"]
    # Another workspace does not see it.
    other = tmp_path / "other"
    other.mkdir()
    third = _session(make_session, ["ok"], workspace=str(other))
    _turn(third, "remind me how deploying to the european cluster works")
    assert "make deploy-eu" not in third.model.received[0][-1]["content"]


def test_recall_dedupes_truncates_and_skips_pinned_notes(make_session, embedder):
    long_note = "the nightly backup job writes to the bucket called archive-7 " + "and keeps thirty days " * 20
    session = _session(make_session, ["ok"], recall_chars=40, recall_k=3)
    session.memory.remember(long_note)
    session.memory.remember("The nightly backup job writes to the bucket called archive-7")  # contained in the first
    recalled = session.memory.recall("where does the nightly backup go?")
    assert len(recalled) == 1 and len(recalled[0].text) <= 40 and recalled[0].text.endswith("…")
    assert recalled[0].text.lower().startswith("the nightly backup job")
    # A note already pinned in the system prompt is not recalled again.
    assert session.memory.recall("where does the nightly backup go?", exclude=notes.read_notes()) == []


def test_forget_and_the_memory_command(make_session, embedder):
    from assistant.memory_bank.memory import memory_command

    session = _session(make_session, [])
    session.memory.remember("the office wifi password rotates on mondays")
    session.memory.remember("deploys happen on tuesdays")
    listing = memory_command("", session.memory)
    assert "1. " in listing and "wifi" in listing and "global 2 records" in listing
    assert "wifi" in memory_command("search wifi password", session.memory).splitlines()[0]
    assert "wifi" in memory_command("forget 1", session.memory)
    assert "wifi" not in notes.notes_path().read_text()
    assert all("wifi" not in h.record["text"] for h in session.memory.search("wifi password"))
    with pytest.raises(Exception, match="no note 9"):
        memory_command("forget 9", session.memory)


def test_notes_edited_by_hand_are_synced(make_session, embedder):
    session = _session(make_session, [])
    notes.remember("first note about kafka topics")
    path = notes.notes_path()
    path.write_text(path.read_text() + "- hand-written: the CI runners are in Frankfurt\n")
    added, removed = session.memory.sync_notes()
    assert (added, removed) == (2, 0)
    assert "Frankfurt" in session.memory.search("where do the CI machines run?", k=1)[0].record["text"]
    path.write_text("")
    assert session.memory.sync_notes() == (0, 2) and len(session.memory.global_store) == 0


def test_a_corrupt_index_is_set_aside_and_rebuilt(tmp_path, embedder):
    store = VectorStore(tmp_path / "vs", embedder)
    ids = store.update([{"text": t, "kind": "note"} for t in ("apples are red", "the sky is blue", "grass is green")])
    (tmp_path / "vs" / INDEX).write_bytes(b"\x00garbage" * 100)
    again = VectorStore(tmp_path / "vs", embedder).load()
    assert sorted(again.records) == ids and again.index.ntotal == 3
    assert list((tmp_path / "vs").glob(f"{INDEX}.corrupt-*"))
    assert again.search("what colour is the sky?", k=1)[0].record["text"] == "the sky is blue"
    assert VectorStore(tmp_path / "vs", embedder).load().index.ntotal == 3  # the rebuilt index was saved


def test_orphan_vectors_and_a_torn_record_are_dropped(tmp_path):
    folder = tmp_path / "vs"
    store = VectorStore(folder, HashEmbedder())
    store.update([{"text": "kept", "kind": "note"}])
    # A crash after the index was saved but before the record was appended: vector 7 has no record.
    store.index.add_with_ids(HashEmbedder().encode(["lost"]), np.array([7], dtype=np.int64))
    store._save_index()
    with open(folder / RECORDS, "ab") as fh:
        fh.write(b'{"id": 8, "text": "torn')
    again = VectorStore(folder, HashEmbedder()).load()
    assert list(again.records) == [0] and index_ids(again.index).tolist() == [0]
    assert (folder / RECORDS).read_bytes().endswith(b"\n")
    assert again.update([{"text": "next", "kind": "note"}]) == [1]  # unacknowledged ids may be given again
    assert index_ids(VectorStore(folder, HashEmbedder()).load().index).tolist() == [0, 1]


WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_memory import HashEmbedder
    from assistant.memory_bank.store import VectorStore
    store = VectorStore(sys.argv[1], HashEmbedder())
    tag = sys.argv[2]
    for n in range(int(sys.argv[3])):
        ids = store.update([{{"text": f"{{tag}} record {{n}} " + "filler " * 40, "kind": "note"}}])
        print(tag, n, ids[0], flush=True)
""")


def _writer(folder, tag, count):
    return subprocess.Popen([sys.executable, "-c", WRITER.format(tests=str(TESTS)), str(folder), tag, str(count)],
                            stdout=subprocess.PIPE, text=True)


def test_sigkill_during_saves_never_loses_an_acknowledged_record(tmp_path):
    folder = tmp_path / "vs"
    # A big index makes each save long enough for kills to land inside it.
    VectorStore(folder, HashEmbedder()).update([{"text": f"seed {i}", "kind": "note"} for i in range(3000)])
    rng = random.Random(7)
    acked: dict[int, str] = {}
    for round_ in range(12):
        proc = _writer(folder, f"r{round_}", 10_000)
        first = proc.stdout.readline()  # started and saving
        assert first, "the writer did not start"
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        # An acknowledgment is a whole line: the kill can cut the last one short.
        for line in [first, *out.split("\n")[:-1]]:
            if not line.strip():
                continue
            tag, n, rid = line.split()
            acked[int(rid)] = f"{tag} record {n} "
        store = VectorStore(folder, HashEmbedder()).load()
        missing = [rid for rid in acked if rid not in store.records]
        assert not missing, f"round {round_}: acknowledged records lost: {missing[:5]}"
        assert all(store.records[rid]["text"].startswith(text) for rid, text in acked.items())
        assert sorted(index_ids(store.index).tolist()) == sorted(store.records)
        assert not list(folder.glob(f"{INDEX}.corrupt-*")), "a kill left a corrupt index (the save is not atomic)"
    assert len(acked) >= 12


def test_two_writers_are_serialised(tmp_path):
    folder = tmp_path / "vs"
    procs = [_writer(folder, tag, 15) for tag in ("a", "b")]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    store = VectorStore(folder, HashEmbedder()).load()
    texts = sorted(r["text"].split(" filler")[0] for r in store.records.values())
    assert texts == sorted(f"{t} record {n}" for t in "ab" for n in range(15))
    assert store.index.ntotal == 30 and len({l.split()[2] for o in outputs for l in o.splitlines()}) == 30


def test_no_memory_keeps_nothing(make_session, workspace):
    session = make_session(["fine"], memory=False)
    _turn(session, "hello there")
    assert session.memory is None and not (workspace / ".assistant").exists()


def test_memory_flags_and_cli(isolated_home, shared_models, workspace, tmp_path, capsys):
    from assistant.cli import main

    vector_dir = tmp_path / "vectors"
    assert main(["--remember", "the release train leaves every second thursday"]) == 0
    assert main(["memory", "--memory-vector-dir", str(vector_dir), "-w", str(workspace)]) == 0
    out = capsys.readouterr().out
    assert "release train" in out and str(vector_dir) in out and (vector_dir / RECORDS).exists()
    assert main(["memory", "search", "when", "does", "the", "release", "ship?", "--memory-vector-dir",
                 str(vector_dir), "-w", str(workspace)]) == 0
    assert "release train" in capsys.readouterr().out.splitlines()[0]
    settings = load_settings({"memory_vector_dir": str(vector_dir), "recall_k": 5})
    assert settings.recall_k == 5 and settings.memory_vector_dir == str(vector_dir)
    records = [json.loads(l) for l in (vector_dir / RECORDS).read_text().splitlines()]
    assert records[0]["kind"] == "note" and records[0]["when"]


def test_the_repl_remembers_recalls_searches_and_forgets(workspace, tmp_path, shared_models):
    from test_repl import run_repl

    for n in range(6):  # pinned notes (the newest five) are not recalled: these push the real one out
        notes.remember(f"unrelated note number {n} about gardening")
    keys = ("/remember the integration tests need docker running\r"
            "why do the integration tests fail on my laptop?\r"
            "/memory\r/memory search docker\r/search hello\r/memory forget 7\r/memory\r/exit\r")
    repl, out = run_repl(workspace, tmp_path, ["Start docker first."], keys, memory=True)
    assert "remembered: - " in out
    assert "(recalled note " in out and "docker running" in out.split("(recalled note ")[1].splitlines()[0]
    assert "vector stores: global 7 records" in out
    assert "hello.py:1" in out  # /search indexed the workspace and found the file
    assert "forgot: - " in out and "docker" in out.split("forgot: - ")[1].splitlines()[0]
    assert "docker" not in notes.notes_path().read_text()
    kinds = [r["kind"] for r in read_records(repl.session.audit.path)]
    assert "recall" in kinds
    # The answered turn was kept for this workspace (embedded at the next load).
    store = VectorStore(workspace / ".assistant" / "memory", repl.session.memory.embedder).load()
    assert [r["text"] for r in store.records.values()] == [
        "User: why do the integration tests fail on my laptop?\nAssistant: Start docker first."]
    assert store.index.ntotal == 1


def test_tools_cannot_read_the_workspace_memory(make_session, workspace):
    (workspace / ".assistant" / "memory").mkdir(parents=True)
    (workspace / ".assistant" / "memory" / RECORDS).write_text('{"id": 0, "text": "private"}\n')
    session = make_session([call("read_file", path=".assistant/memory/records.jsonl"), "ok"])
    obs = [e for e in _turn(session, "show me the memory file") if type(e).__name__ == "Observation"][0]
    assert not obs.ok and "memory is not readable by tools" in obs.text and "private" not in obs.text
    assert workspace / ".assistant" / "memory" in [Path(p) for p in session.sandbox.hidden]


def test_once_keeps_the_turn_and_json_shows_what_was_recalled(shared_models, workspace, tmp_path, capsys):
    from assistant.cli import main

    script = tmp_path / "script.jsonl"
    script.write_text(json.dumps("Noted: eu-west-3.") + "\n")
    flags = ["--model", f"scripted:{script}", "-w", str(workspace)]
    assert main(["--once", "I always deploy to the eu-west-3 region.", *flags]) == 0
    kept = [json.loads(l) for l in (workspace / ".assistant" / "memory" / RECORDS).read_text().splitlines()]
    assert kept[0]["key"] == "I always deploy to the eu-west-3 region."  # embedded by the request
    assert not (workspace / ".assistant" / "memory" / INDEX).exists()  # --once did not wait for the model
    capsys.readouterr()
    assert main(["--once", "--json", "which cloud region do I deploy to?", *flags]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "eu-west-3" in out["recalled"][0]["text"] and out["recalled"][0]["kind"] == "turn"


def test_bad_record_lines_are_skipped_and_ids_are_never_given_twice(tmp_path, caplog):
    folder = tmp_path / "vs"
    store = VectorStore(folder, HashEmbedder())
    ids = store.update([{"text": f"note {i}", "kind": "note"} for i in range(3)])
    with open(folder / RECORDS, "a") as fh:
        fh.write('{"id": 7, "kind": "turn"}\n{"id": 1e400, "text": "x"}\n[1, 2]\n{"id": "8", "text": "y"}\n')
    again = VectorStore(folder, HashEmbedder()).load()
    assert sorted(again.records) == ids and "is not a record" in caplog.text
    again.remove([ids[-1]])
    assert again.update([{"text": "new", "kind": "note"}]) == [ids[-1] + 1]  # the removed id is not reused


def test_a_filtered_search_looks_past_the_records_it_filters_out(tmp_path):
    store = VectorStore(tmp_path / "vs", HashEmbedder())
    store.update([{"text": "deploy the service now", "kind": "turn", "session": "this"} for _ in range(60)]
                 + [{"text": "deploy the service later", "kind": "turn", "session": "earlier"}])
    hits = store.search("deploy the service", k=1, where=lambda r: r["session"] != "this")
    assert [h.record["text"] for h in hits] == ["deploy the service later"]


def test_two_sessions_syncing_the_same_notes_leave_one_record_each():
    from assistant.memory_bank.memory import Memory

    notes.remember("alpha note")
    notes.remember("beta note")
    settings = load_settings({"memory": True})
    first = Memory(settings, embedder=HashEmbedder())

    class Racing(HashEmbedder):
        """The second session embeds the notes while the first one syncs them."""

        def encode(self, texts, progress=None, batch_size=32):
            if not getattr(self, "raced", False):
                self.raced = True
                first.sync_notes()
            return super().encode(texts, progress, batch_size)

    second = Memory(settings, embedder=Racing())
    assert second.sync_notes() == (2, 0) and second.embedder.raced
    lines = [r["line"] for r in VectorStore(first.global_store.folder, HashEmbedder()).load().records.values()]
    assert sorted(lines) == sorted(notes.read_notes())

def test_embeddings_are_sentence_transformers_own(embedder):
    """The embedder runs the model folder's pipeline itself (see embeddings.py); it must give the same vectors."""
    from sentence_transformers import SentenceTransformer

    from assistant.models.registry import EMBEDDERS, cached_path

    texts = ["the staging server listens on port 8443", "def f(x):\n    return x * 2", "ünïcödé ☃ text", "",
             "word " * 400]  # the last is cut at 256 tokens by both
    ours = embedder.encode(texts, batch_size=2)
    folder = cached_path(EMBEDDERS["all-minilm-l6-v2"]).parent
    theirs = SentenceTransformer(str(folder), device="cpu").encode(texts, normalize_embeddings=True)
    assert ours.shape == (5, 384) and np.allclose(ours, theirs, atol=2e-5)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
