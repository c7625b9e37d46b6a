"""dedupe: a planted corpus, exact repeats and clusters, malformed lines, in-place runs, Ctrl-C, the CLI and the
tool."""

from __future__ import annotations

import json
import random

import pytest
from conftest import call

from assistant import libcore
from assistant.cli import main
from assistant.events import Observation
from assistant.plugins.dedupe import dedupe_file

VOCAB = [f"w{i}" for i in range(20000)]


def edited(text: str, rng: random.Random, fraction: float) -> str:
    """The text with a share of its words replaced: fewer shared 5-gram shingles as the share grows."""
    words = text.split()
    for i in rng.sample(range(len(words)), max(1, int(len(words) * fraction))):
        words[i] = f"x{rng.getrandbits(32)}"
    return " ".join(words)


def shingle_set(text: str) -> set[int]:
    return set(libcore.backend().shingles(text.encode(), 5))


def jaccard(x: set, y: set) -> float:
    return len(x & y) / len(x | y)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """400 unrelated documents, then 60 edited copies of some of them, in a random order: half clearly above the
    threshold (Jaccard >= 0.8 with their original), half clearly below (<= 0.55)."""
    rng = random.Random(11)
    docs = [" ".join(rng.choice(VOCAB) for _ in range(rng.randrange(80, 300))) for _ in range(400)]
    copies = []
    for n in range(60):
        base = docs[rng.randrange(len(docs))]
        copies.append(edited(base, rng, 0.01 if n % 2 else 0.12))
        similarity = libcore.jaccard(base, copies[-1])
        assert similarity >= 0.8 or similarity <= 0.55, similarity
    rng.shuffle(copies)
    texts = docs + copies
    path = tmp_path_factory.mktemp("planted") / "in.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    sets = [shingle_set(t) for t in docs]
    want = {number for number, text in enumerate(copies, 401)
            if max(jaccard(shingle_set(text), x) for x in sets) >= 0.8}  # 1-based line numbers
    assert len(want) == 30
    return path, texts, want


def test_finds_exactly_the_planted_near_duplicates(planted, tmp_path):
    path, texts, want = planted
    report = dedupe_file(path, tmp_path / "out.jsonl")
    removed = {d["line"] for dups in report.clusters.values() for d in dups}
    assert removed == want
    assert report.near_duplicates == len(want) and report.exact_duplicates == 0
    assert report.kept == len(texts) - len(want) == report.documents - len(want)
    kept = [json.loads(line)["text"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert kept == [t for n, t in enumerate(texts, 1) if n not in want]  # first occurrences, in order
    for kept_line, dups in report.clusters.items():
        assert kept_line <= 400 and all(d["kind"] == "near" and d["similarity"] >= 0.7 for d in dups)
        for d in dups:  # each names the original it was copied from
            assert libcore.jaccard(texts[kept_line - 1], texts[d["line"] - 1]) >= 0.8
    saved = json.loads((tmp_path / "out.jsonl.report.json").read_text())
    assert saved["near_duplicates"] == len(want) and (saved["bands"], saved["rows"]) == (25, 10)
    assert sum(c["size"] - 1 for c in saved["clusters"]) == len(want)


def test_the_reference_implementation_gives_the_same_report(planted, tmp_path):
    path, _, _ = planted
    small = tmp_path / "small.jsonl"
    small.write_text("".join(path.read_text().splitlines(keepends=True)[380:440]))
    c = dedupe_file(small, tmp_path / "c.jsonl", num_perm=64, threshold=0.6)
    ref = dedupe_file(small, tmp_path / "r.jsonl", num_perm=64, threshold=0.6, impl="reference")
    assert c.clusters == ref.clusters and c.clusters
    assert (tmp_path / "c.jsonl").read_bytes() == (tmp_path / "r.jsonl").read_bytes()


def test_exact_repeats_join_the_cluster_of_what_they_repeat(tmp_path):
    rng = random.Random(5)
    a = " ".join(rng.choice(VOCAB) for _ in range(100))
    b = edited(a, rng, 0.01)
    c = " ".join(rng.choice(VOCAB) for _ in range(100))
    rows = [a, c, b, b, a, c, "", ""]  # b near a; its repeat follows it into a's cluster
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    report = dedupe_file(src, tmp_path / "out.jsonl")
    assert report.clusters == {
        1: [{"line": 3, "kind": "near", "similarity": pytest.approx(0.95, abs=0.05)},
            {"line": 4, "kind": "exact", "similarity": 1.0}, {"line": 5, "kind": "exact", "similarity": 1.0}],
        2: [{"line": 6, "kind": "exact", "similarity": 1.0}],
        7: [{"line": 8, "kind": "exact", "similarity": 1.0}]}
    assert [json.loads(l)["text"] for l in (tmp_path / "out.jsonl").read_text().splitlines()] == [a, c, ""]
    only = dedupe_file(src, tmp_path / "exact.jsonl", exact_only=True)
    assert only.exact_duplicates == 4 and only.near_duplicates == 0 and only.kept == 4 and only.bands == 0


def test_malformed_lines_are_counted_reported_and_kept_on_request(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"text": "one two three"}\n'
                    b'{"text": "one two\n'  # cut short
                    b'[1, 2]\n'
                    b'{"body": "no text field"}\n'
                    b'{"text": 42}\n'
                    b'\n'
                    b'{"text": "caf\xe9"}\n'  # Latin-1, not UTF-8
                    b'{"text": "one two three"}')  # an exact repeat without a final newline
    report = dedupe_file(src, tmp_path / "out.jsonl")
    assert report.malformed == 5 and report.documents == 2 and report.kept == 1 and report.blank_lines == 1
    assert [(m["line"], m["reason"].split(" (")[0]) for m in report.malformed_examples] == [
        (2, "invalid JSON"), (3, "not a JSON object"), (4, "no field 'text'"), (5, "field 'text' is int, not a string"),
        (7, "not UTF-8")]
    assert (tmp_path / "out.jsonl").read_bytes() == b'{"text": "one two three"}\n'
    assert "5 malformed lines (first: line 2: invalid JSON" in report.summary()
    dedupe_file(src, tmp_path / "kept.jsonl", keep_malformed=True)
    out = (tmp_path / "kept.jsonl").read_bytes().splitlines()
    assert len(out) == 6 and out[5] == b'{"text": "caf\xe9"}'


def test_a_nested_field_and_in_place(tmp_path):
    src = tmp_path / "chats.jsonl"
    rows = [{"messages": [{"content": "q"}, {"content": t}]} for t in ("alpha beta", "gamma", "alpha beta")]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = dedupe_file(src, src, field="messages.1.content")
    assert report.exact_duplicates == 1 and len(src.read_text().splitlines()) == 2
    assert (tmp_path / "chats.jsonl.report.json").exists()


def test_ctrl_c_after_batches_are_in_flight_leaves_everything_as_it_was(planted, tmp_path, monkeypatch):
    import threading

    from assistant.plugins import dedupe as dedupe_plugin

    monkeypatch.setattr(dedupe_plugin, "BATCH", 40)  # several batches through the worker before the interrupt
    path = tmp_path / "in.jsonl"
    path.write_bytes(planted[0].read_bytes())
    before, lines = path.read_bytes(), []

    def interrupt(n):
        lines.append(n)
        if len(lines) == 300:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        dedupe_file(path, path, progress=interrupt)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["in.jsonl"]
    assert not [t for t in threading.enumerate() if t.name.startswith("dedupe")]


def test_texts_without_words_are_never_near_duplicates(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["!!!", "--- ---", "{}", "#", "#"]))
    report = dedupe_file(src, tmp_path / "out.jsonl")
    assert report.near_duplicates == 0 and report.clusters == {4: [{"line": 5, "kind": "exact", "similarity": 1.0}]}


def test_a_deeply_nested_line_is_malformed_not_fatal(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"text": ' + b"[" * 100_000 + b"\n" + b'{"text": "fine"}\n')
    report = dedupe_file(src, tmp_path / "out.jsonl")
    assert report.kept == 1 and report.malformed_examples == [{"line": 1, "reason": "invalid JSON (nested too deeply)"}]


def test_links_and_permissions(tmp_path):
    """The report never goes through a planted link; an in-place run keeps the file's mode and a linked OUT
    writes its target."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    src = tmp_path / "data.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["a b", "a b", "c"]))
    src.chmod(0o644)
    (tmp_path / "data.jsonl.report.json").symlink_to(victim)
    dedupe_file(src, src)
    assert victim.read_text() == "precious" and not (tmp_path / "data.jsonl.report.json").is_symlink()
    assert src.stat().st_mode & 0o777 == 0o644 and len(src.read_text().splitlines()) == 2
    link = tmp_path / "link.jsonl"
    link.symlink_to(src)
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["x", "x"]))
    dedupe_file(link, link)
    assert link.is_symlink() and src.read_text() == json.dumps({"text": "x"}) + "\n"


def test_ctrl_c_leaves_input_and_output_as_they_were(planted, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(planted[0].read_bytes())
    before = path.read_bytes()
    out = tmp_path / "out.jsonl"
    out.write_text("previous\n")

    def interrupt(n):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        dedupe_file(path, out, progress=interrupt)
    with pytest.raises(KeyboardInterrupt):
        dedupe_file(path, path, progress=interrupt)
    assert path.read_bytes() == before and out.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]  # no temporary files left


def test_cli(planted, tmp_path, capsys):
    path, _, want = planted
    assert main(["dedupe", str(path), str(tmp_path / "o.jsonl"), "--report", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert f"{len(want)} near duplicates removed" in out and "25 bands x 10 rows" in out
    assert json.loads((tmp_path / "r.json").read_text())["near_duplicates"] == len(want)
    assert main(["dedupe", str(path), str(tmp_path / "o.jsonl"), "--threshold", "1.5"]) == 1
    assert "--threshold must be between 0 and 1" in capsys.readouterr().err
    assert main(["dedupe", str(tmp_path / "missing.jsonl"), str(tmp_path / "o.jsonl")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_the_tool(make_session, workspace):
    (workspace / "data.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in ["a b c", "d e", "a b c"]))
    session = make_session([call("dedupe", input="data.jsonl", output="clean.jsonl"), "Done."], approval="auto")
    events = list(session.agent.run_turn("dedupe data.jsonl"))
    obs = next(e for e in events if isinstance(e, Observation))
    assert obs.ok and "kept 2 of 3 documents: 1 exact" in obs.text and "line 1 has 1 duplicates (lines 3)" in obs.text
    assert (workspace / "clean.jsonl").read_text().count("\n") == 2
    session = make_session([call("dedupe", input="../outside.jsonl", output="x.jsonl"), "No."], approval="auto")
    obs = next(e for e in session.agent.run_turn("dedupe it") if isinstance(e, Observation))
    assert not obs.ok and "outside" in obs.text


def test_the_slash_command(make_session, workspace):
    (workspace / "d.jsonl").write_text("".join(json.dumps({"t": t}) + "\n" for t in ["a b c", "x", "a b c"]))
    session = make_session()
    command = session.registry.commands["dedupe"].function
    text = command("d.jsonl out.jsonl --field t", session)
    assert "kept 2 of 3 documents: 1 exact" in text and (workspace / "out.jsonl").read_text().count("\n") == 2
    assert "usage: /dedupe" in command("d.jsonl", session)  # OUT missing
    assert "usage: /dedupe" in command("d.jsonl o.jsonl --threshold many", session)


def test_the_benchmark_chart(tmp_path):
    from assistant.bench_dedupe import chart

    summary = {"docs": 100, "threshold": 0.7, "num_perm": 256, "runs": {
        "libcore (2 threads)": {"docs_per_second": 80_000.0, "f1": 0.94},
        "datasketch": {"docs_per_second": 950.0, "f1": 0.93}}}
    chart(tmp_path / "c.png", summary)
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
