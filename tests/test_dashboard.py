"""The dashboard: the board's sums, the log follower over logs being written, the run folders, the Textual app
driven by its pilot over a synthetic audit log appended while it runs, a remote telemetry source, and a snapshot
of the main screen (tests/snapshots/dashboard.txt; UPDATE_SNAPSHOTS=1 rewrites it)."""

from __future__ import annotations

import asyncio
import io
from collections import deque
import json
import os
import time
from pathlib import Path

import pytest

from conftest import call

from assistant.tui.board import Board, Filter, percentile
from assistant.tui.sources import LogFollower, RemoteFeed, SourceError, read_runs

T0 = 1_800_000_000.0  # a fixed clock: the snapshot does not move with the time of day
SNAPSHOT = Path(__file__).parent / "snapshots" / "dashboard.txt"


def rec(kind, data=None, *, session="s1", ts=0.0, **extra):
    return {"v": 1, "ts": T0 + ts, "session": session, "kind": kind, "data": data or {}, **extra}


def append(path: Path, *records, raw: bytes = b"") -> None:
    with open(path, "ab") as fh:
        for r in records:
            fh.write(json.dumps(r).encode() + b"\n")
        fh.write(raw)


def turn(session="s1", start=0.0, n=1, tool="run_command", ok=True, seconds=0.5):
    return [
        rec("user", {"text": f"question {n}", "turn": n}, session=session, ts=start),
        rec("model_output", {"text": call(tool, command="ls"), "completion_tokens": 20, "tokens_per_second": 10.0 * n},
            session=session, ts=start + 1),
        rec("tool_call", {"name": tool, "arguments": {"command": "ls"}, "id": "a"}, session=session, ts=start + 1.1),
        rec("observation", {"name": tool, "text": "a.py\nb.py", "ok": ok, "seconds": seconds, "id": "a"},
            session=session, ts=start + 1.6),
        rec("model_output", {"text": "Two files.", "tokens_per_second": 12.0}, session=session, ts=start + 2),
        rec("answer", {"text": "Two files."}, session=session, ts=start + 2.1),
    ]


# --- the board ----------------------------------------------------------------------------------------


def test_percentile_matches_numpy():
    import numpy as np

    values = [0.3, 1.5, 0.2, 7.0, 2.2, 0.9, 4.4]
    for q in (0, 50, 95, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))
    assert percentile([], 95) == 0.0


def test_board_sums_tools_rates_errors_and_repairs():
    board = Board(clock=lambda: T0 + 100)
    board.add([rec("session_start", {"model": "m1", "workspace": "/w"})] + turn(seconds=0.5)
              + turn(start=10, n=2, ok=False, seconds=1.5) + turn(start=20, n=3, tool="read_file", seconds=0.1))
    board.add([rec("error", {"message": "boom"}, ts=30), rec("repair", {"fn": "f", "passed": True}, ts=31),
               rec("repair", {"fn": "g", "passed": False}, ts=32)])
    run = board.tools["run_command"]
    assert (run.calls, run.ok) == (2, 1) and run.mean == pytest.approx(1.0) and run.p95 == pytest.approx(1.45)
    assert board.tools["read_file"].calls == 1
    assert list(board.rates) == [10.0, 12.0, 20.0, 12.0, 30.0, 12.0]
    assert [e["data"]["message"] for e in board.errors] == ["boom"]
    assert board.repairs == [1, 2]
    assert board.pass_rates()[0].value == 0.5
    view = board.sessions[("", "s1")]
    assert view.model == "m1" and view.turns == 3 and view.errors == 1
    assert [r["kind"] for r in view.turn_records()][0] == "user"
    assert view.turn_records()[0]["data"]["turn"] == 3
    assert [r["data"].get("text") for r in view.turn_records(2)][:1] == ["question 2"]
    assert len(view.turn_records(2)) == 6 and view.turn_records(7) == []


def test_filter_narrows_and_recounts():
    board = Board(clock=lambda: T0)
    board.add(turn() + turn(session="s2", start=5, tool="read_file"))
    board.set_filter("tool:read")
    assert set(board.tools) == {"read_file"}
    assert [s.id for s in board.ordered_sessions()] == ["s2"]
    board.set_filter("session:s1 b.py")  # a field and a word: both must hold
    assert Filter("session:s1 B.PY").matches(turn()[3]) and not Filter("session:s2").matches(turn()[3])
    assert set(board.tools) == {"run_command"}
    board.set_filter("")
    assert set(board.tools) == {"run_command", "read_file"}


HOSTILE = [
    {"kind": "user", "data": "oops", "ts": "yesterday"},
    {"kind": "observation", "data": {"name": ["x"], "ok": "yes", "seconds": "slow", "text": 5}, "ts": float("nan")},
    {"kind": "tool_exception", "data": {"tool": 7, "traceback": None}, "ts": 1e300},
    {"kind": "session_start", "session": "weird", "data": {"pid": 2 ** 40, "host": ["h"]}},
    {"kind": "session_start", "session": "negative", "data": {"pid": -1}},
    {"kind": "resources", "data": {"rss_bytes": "lots", "model": "m", "memory": [], "sandbox": 3}},
    {"kind": "model_output", "data": {"text": "x" * 200_000, "tokens_per_second": float("inf")}},
    {"kind": "train_step", "data": {"step": "one", "loss": None}},
    {"kind": 5}, [], "text", None,
]


def test_hostile_records_are_kept_harmless():
    board = Board(clock=lambda: T0)
    assert board.add(HOSTILE) == 8
    from assistant.tui.board import summary

    for view in board.sessions.values():
        view.state(T0)
        for record in view.records:
            summary(record)  # none raises
    assert board.sessions[("", "weird")].pid is None and board.sessions[("", "negative")].pid is None
    assert board.tools["['x']"].durations == deque()  # a duration that is not a number is not one
    kept = next(r for r in board.sessions[("", "?")].records if r["kind"] == "model_output")
    assert len(kept["data"]["text"]) < 17_000 and "more characters in the log" in kept["data"]["text"]
    assert board.train == {} and list(board.rates) == []


def test_clearing_the_filter_brings_back_the_figures_over_everything(monkeypatch):
    import assistant.tui.board as board_module

    monkeypatch.setattr(board_module, "RECORDS_PER_SESSION", 10)  # a session keeps its newest 10 records
    board = Board(clock=lambda: T0)
    board.add([r for n in range(6) for r in turn(session="s1", start=10 * n, n=n + 1)])
    assert len(board.sessions[("", "s1")].records) == 10
    before = (board.tools["run_command"].calls, list(board.rates))
    assert before[0] == 6  # over everything seen, not only what is kept
    board.set_filter("kind:observation")
    assert board.tools["run_command"].calls == 2 and list(board.rates) == []  # the kept records that match
    board.set_filter("")
    assert (board.tools["run_command"].calls, list(board.rates)) == before


def test_sessions_are_bounded_and_ended_ones_go_first(monkeypatch):
    import assistant.tui.board as board_module

    monkeypatch.setattr(board_module, "MAX_SESSIONS", 3)
    board = Board(clock=lambda: T0)
    board.add([rec("session_start", session="old-running", ts=0), rec("session_start", session="ended", ts=1),
               rec("session_end", session="ended", ts=2), rec("session_start", session="c", ts=3),
               rec("session_start", session="d", ts=4)])
    assert {k[1] for k in board.sessions} == {"old-running", "c", "d"}


def test_session_state_tells_a_dead_process_from_a_live_one():
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    board = Board(clock=lambda: time.time())
    host = __import__("socket").gethostname()
    now = time.time() - T0
    board.add([rec("session_start", {"pid": proc.pid, "host": host}, session="dead", ts=now),
               rec("session_start", {"pid": os.getpid(), "host": host}, session="alive", ts=now)])
    assert board.sessions[("", "dead")].state(time.time()) == "gone"
    assert board.sessions[("", "alive")].state(time.time()) == "live"
    assert board.newest_active().id == "alive"


# --- what a session writes for the dashboard --------------------------------------------------------------


def test_a_session_streams_its_reply_beside_the_log_and_records_resources(make_session):
    from assistant.logs.audit import read_records

    s = make_session([call("run_command", command="echo hi"), "Done."], yes=True)
    live = s.live.path
    assert live.parent == s.audit.path.parent and live.suffix == ".live"
    during = []
    for event in s.agent.run_turn("go"):
        if event.kind == "tool_call":
            during.append(live.read_text())  # the first reply has streamed and ended
    lines = [json.loads(line) for line in live.read_text().splitlines()]
    assert "".join(p.get("t", "") for p in lines) == call("run_command", command="echo hi") + "Done."
    assert [p for p in lines if "end" in p] == [{"end": 1}, {"end": 1}]
    assert during[0].rstrip().endswith('{"end": 1}')
    resources = [r["data"] for r in read_records(s.audit.path) if r["kind"] == "resources"]
    assert len(resources) == 1 and resources[0]["rss_bytes"] > 10 << 20
    assert resources[0]["model"]["name"] == "scripted"
    assert resources[0]["sandbox"] == {"policy": "auto", "layer": s.sandbox.chosen_layer}
    assert s.sandbox.chosen_layer is not None  # the command ran, so a layer was chosen
    s.close()
    assert not live.exists()  # the stream goes with the session; the audit log stays
    start = next(read_records(s.audit.path))
    assert start["data"]["pid"] == os.getpid() and start["data"]["host"]


def test_a_stream_that_cannot_be_written_costs_the_session_nothing(make_session):
    import logging

    s = make_session(["Hello."])
    s.live.path.mkdir()  # a folder where the file should be: every write fails
    said = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())
    logging.getLogger("assistant").addHandler(handler)
    try:
        events = list(s.agent.run_turn("hi"))
        list(s.agent.run_turn("again"))
    finally:
        logging.getLogger("assistant").removeHandler(handler)
    assert events[-1].kind == "answer" and s.live._off
    assert len([m for m in said if "not shared with watchers" in m]) == 1  # said once


# --- following logs -----------------------------------------------------------------------------------


def test_follower_reads_only_complete_lines_and_new_files(tmp_path):
    log = tmp_path / "a.jsonl"
    append(log, rec("session_start"), raw=b'{"v": 1, "ts": 1, "session": "s1", "kind": "us')
    follower = LogFollower(tmp_path)
    assert [r["kind"] for r in follower.poll().records] == ["session_start"]
    assert follower.poll().records == []  # half a line is not a record yet
    append(log, raw=b'er", "data": {"text": "hi", "turn": 1}}\n')
    assert [r["kind"] for r in follower.poll().records] == ["user"]
    append(tmp_path / "b.jsonl", rec("session_start", session="s2"))  # a session that starts later
    append(log, raw=b"not json\n")
    polled = follower.poll()
    assert [r["session"] for r in polled.records] == ["s2"]
    assert "1 lines that are not JSON" in polled.note


def test_follower_starts_at_the_tail_of_big_logs_and_rereads_replaced_ones(tmp_path):
    log = tmp_path / "big.jsonl"
    append(log, *[rec("observation", {"name": "t", "text": "x" * 100}, ts=i) for i in range(1000)])
    follower = LogFollower(tmp_path, tail_bytes=2000)
    first = follower.poll().records
    assert 5 < len(first) < 20 and first[-1]["ts"] == T0 + 999  # the newest records, no torn first line
    log.unlink()
    append(log, rec("session_start", session="new"))
    assert [r["session"] for r in follower.poll().records] == ["new"]


def test_follower_streams_the_live_file(tmp_path):
    log = tmp_path / "shared.jsonl"  # the stream is named by the session, not the log (logs may be shared)
    append(log, rec("session_start", session="s9"))
    live = tmp_path / "s9.live"
    live.write_text('{"t": "Hel"}\n{"t": "lo"}\n')
    follower = LogFollower(tmp_path)
    polled = follower.poll()
    assert polled.streams == [(("", "s9"), "Hello", False)]
    with open(live, "a") as fh:
        fh.write('{"end": 1}\n{"t": "Next"}\n')
    assert follower.poll().streams == [(("", "s9"), "", True), (("", "s9"), "Next", False)]
    # A second session in the same log streams into its own file.
    append(log, rec("session_start", session="s10"))
    assert follower.poll().streams == []
    (tmp_path / "s10.live").write_text('{"t": "other"}\n')  # appears after its records were read
    assert follower.poll().streams == [(("", "s10"), "other", False)]


def test_follower_reads_only_the_newest_logs_at_start_then_what_the_others_append(tmp_path):
    for i in range(4):
        path = tmp_path / f"{i}.jsonl"
        append(path, rec("session_start", session=f"s{i}"))
        os.utime(path, (T0 + i, T0 + i))
    follower = LogFollower(tmp_path, recent=2)
    assert sorted(r["session"] for r in follower.poll().records) == ["s2", "s3"]
    assert follower.poll().records == []  # the two older logs are not read in full later either
    append(tmp_path / "0.jsonl", rec("user", {"text": "back", "turn": 1}, session="s0"))
    assert [r["session"] for r in follower.poll().records] == ["s0"]


def test_follower_survives_a_cut_log_and_what_is_not_a_file(tmp_path):
    log = tmp_path / "a.jsonl"
    append(log, rec("session_start", seq=0), raw=b'{"v": 1, "ts": 1, "session": "s1", "seq": 1, "kind": "to')
    (tmp_path / "b.jsonl").mkdir()  # not a file: said, and the others are still read
    (tmp_path / "s1.live").mkdir()
    follower = LogFollower(tmp_path)
    polled = follower.poll()
    assert [r["kind"] for r in polled.records] == ["session_start"] and "not a regular file" in polled.note
    # What audit.py does when it opens a log with a torn last line: cut it, then append whole records.
    with open(log, "r+b") as fh:
        data = fh.read()
        fh.truncate(data.rfind(b"\n") + 1)
    append(log, rec("user", {"text": "hi", "turn": 1}, seq=1))
    assert [(r["kind"], r["seq"]) for r in follower.poll().records] == [("user", 1)]
    # A log replaced by a copy of itself is read again; the board drops what it has.
    board = Board()
    board.add([rec("session_start", seq=0), rec("user", {"text": "hi", "turn": 1}, seq=1)])
    copy = tmp_path / "copy"
    copy.write_bytes(log.read_bytes())
    os.replace(copy, log)
    again = follower.poll().records
    assert len(again) == 2 and board.add(again) == 0 and len(board.sessions[("", "s1")].records) == 2


def test_follower_refuses_a_missing_folder(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        LogFollower(tmp_path / "nope")


def test_read_runs_finds_benchmarks_and_training(tmp_path):
    he = tmp_path / "humaneval" / "k1"
    he.mkdir(parents=True)
    (he / "summary.json").write_text(json.dumps({"done": 10, "total": 10, "raw": 3, "agent": 5, "leaky": False}))
    (tmp_path / "repair-suite").mkdir()
    (tmp_path / "repair-suite" / "1.json").write_text(json.dumps({"passed": 8, "total": 10}))
    (tmp_path / "bench-tools").mkdir()
    (tmp_path / "bench-tools" / "1.json").write_text(json.dumps({"results": {"constrained": [
        {"right": True}, {"right": False}]}}))
    (tmp_path / "bench-dedupe").mkdir()
    (tmp_path / "bench-dedupe" / "1.json").write_text("{ torn")  # half-written: skipped
    train = tmp_path / "train" / "run1"
    train.mkdir(parents=True)
    (train / "metrics.jsonl").write_text('{"step": 1, "loss": 2.5}\n{"step": 2, "loss": 2.0, "eval_loss": 2.1}\nbad\n')
    benches, runs = read_runs(tmp_path)
    assert {b.name: round(b.value, 2) for b in benches} == {
        "HumanEval raw": 0.3, "HumanEval agent": 0.5, "repair suite (hidden)": 0.8, "tool choice (constrained)": 0.5}
    assert runs[0].name == "run1" and runs[0].loss == [2.5, 2.0] and runs[0].eval_loss == [2.1]


# --- the app, driven by its pilot -------------------------------------------------------------------------


async def until(pilot, condition, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def rows(app, table_id: str) -> list[list[str]]:
    from textual.widgets import DataTable

    table = app.query_one(table_id, DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def static_text(app, selector: str) -> str:
    from textual.widgets import Static

    return str(app.query_one(selector, Static).content)


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def make_app(logs: Path, runs: Path | None = None, clock=lambda: T0 + 60):
    from assistant.tui.app import Dashboard

    return Dashboard(LogFollower(logs), runs=runs, interval=0.05, clock=clock)


def test_dashboard_follows_a_log_being_written(tmp_path, utc):
    from assistant.tui.app import DetailScreen

    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "s1.jsonl"
    append(log, rec("session_start", {"model": "smollm2-135m", "workspace": "/w"}))

    async def scenario():
        app = make_app(logs)
        async with app.run_test(size=(160, 48)) as pilot:
            await until(pilot, lambda: rows(app, "#sessions"), "the session")
            assert "smollm2-135m" in rows(app, "#sessions")[0][4]
            # A turn is written while the dashboard runs: its records show up in the current turn.
            append(log, *turn()[:4])
            await until(pilot, lambda: len(rows(app, "#turn")) == 4, "the turn's records")
            assert [r[1] for r in rows(app, "#turn")] == ["user", "model_output", "tool_call", "observation"]
            assert "run_command ok 0.50s" in rows(app, "#turn")[3][2]
            assert rows(app, "#tools") == [["run_command", "1", "100%", "0.50", "0.50"]]
            # The reply streaming now, from the .live file beside the log.
            (logs / "s1.live").write_text('{"t": "I think "}\n{"t": "the answer"}\n')
            await until(pilot, lambda: "I think the answer" in static_text(app, "#live"), "the streamed text")
            assert rows(app, "#sessions")[0][1] == "generating"
            append(log, *turn()[4:], rec("error", {"message": "the model gave an empty answer"}, ts=3),
                   rec("resources", {"rss_bytes": 300 << 20, "model": {"name": "smollm2-135m", "backend": "transformers",
                                     "parameters": 134_515_008, "weights_bytes": 538_060_032, "dtype": "float32"},
                                     "memory": {"state": "ready", "items": 7, "global": 5, "workspace": 2},
                                     "sandbox": {"policy": "auto", "layer": "bwrap"}}, ts=3))
            with open(logs / "s1.live", "a") as fh:
                fh.write('{"end": 1}\n')
            await until(pilot, lambda: rows(app, "#errors"), "the error")
            await until(pilot, lambda: "generating" not in static_text(app, "#live"), "the stream to end")
            assert "empty answer" in rows(app, "#errors")[0][2]
            resources = static_text(app, "#resources")
            assert "134.5M params" in resources and "bwrap" in resources and "7 items" in resources
            assert "300.0 MB resident" in resources and "last 12.0" in resources
            # Enter on a record opens it whole; Esc closes it.
            app.query_one("#turn").focus()
            await pilot.press("up", "up", "up", "enter")  # from the last row (resources) to the reply
            await until(pilot, lambda: isinstance(app.screen, DetailScreen), "the detail view")
            assert app.screen.record["kind"] == "model_output"
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, DetailScreen), "the detail view to close")
            # The filter: only failing tools' records count.
            append(log, *turn(start=10, n=2, tool="read_file", ok=False))
            await until(pilot, lambda: len(rows(app, "#tools")) == 2, "the second tool")
            await pilot.press("slash", *"tool:read", "enter")
            await until(pilot, lambda: [r[0] for r in rows(app, "#tools")] == ["read_file"], "the filter")
            assert rows(app, "#tools")[0][2] == "0%"
            assert "filter: tool:read" in static_text(app, "#status")
            await pilot.press("escape")
            await until(pilot, lambda: len(rows(app, "#tools")) == 2, "the filter to clear")

    asyncio.run(scenario())


def test_dashboard_keeps_reading_through_hostile_lines(tmp_path, utc):
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "s1.jsonl"
    append(log, rec("session_start", {"model": "m", "pid": 2 ** 40}))

    async def scenario():
        app = make_app(logs)
        async with app.run_test(size=(160, 48)) as pilot:
            await until(pilot, lambda: rows(app, "#sessions"), "the session")
            append(log, *[{**h, "session": "s1"} if isinstance(h, dict) else h for h in HOSTILE],
                   raw=b"\xff\xfe not json\n")
            append(log, rec("answer", {"text": "still reading"}, ts=50))
            await until(pilot, lambda: any("still reading" in r[2] for r in rows(app, "#turn")), "the next record")
            await until(pilot, lambda: rows(app, "#errors"), "the tool exception")
            await pilot.pause(1.2)  # the once-a-second redraw of the sessions (pid 2**40: os.kill overflows)
            assert app.is_running and rows(app, "#sessions")[0][1] != ""
            assert "drawing failed" not in static_text(app, "#status")

    asyncio.run(scenario())


def test_dashboard_picks_a_session_and_shows_all_turns(tmp_path, utc):
    logs = tmp_path / "logs"
    logs.mkdir()
    append(logs / "a.jsonl", rec("session_start", {"model": "a-model"}, session="a"), *turn(session="a"),
           *turn(session="a", start=5, n=2))
    append(logs / "b.jsonl", rec("session_start", {"model": "b-model"}, session="b", ts=20),
           *turn(session="b", start=21))

    async def scenario():
        app = make_app(logs)
        async with app.run_test(size=(160, 48)) as pilot:
            await until(pilot, lambda: len(rows(app, "#sessions")) == 2, "both sessions")
            assert "b" in app.query_one("#turn-panel").border_title  # the newest is followed
            await pilot.press("down", "enter")  # pick the older one
            await until(pilot, lambda: "· a ·" in app.query_one("#turn-panel").border_title, "session a")
            assert "turn 2" in app.query_one("#turn-panel").border_title
            assert len(rows(app, "#turn")) == 6
            await pilot.press("a")
            await until(pilot, lambda: len(rows(app, "#turn")) == 13, "all turns")
            await pilot.press("f")
            await until(pilot, lambda: "· b ·" in app.query_one("#turn-panel").border_title, "following again")

    asyncio.run(scenario())


def test_dashboard_shows_a_remote_worker_through_the_telemetry_server(tmp_path, monkeypatch):
    import threading

    import httpx

    from assistant.telemetry import TelemetryServer
    from assistant.tui.app import Dashboard

    server = TelemetryServer("127.0.0.1", 0, "s3cret-pass")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        body = {"worker": "gpu-box:42", "records": [
            {"ts": T0, "session": "w1", "kind": "session_start", "data": {"model": "big-model"}},
            *({k: v for k, v in r.items() if k != "v"} for r in turn(session="w1"))]}
        reply = httpx.post(server.url + "/events", json=body, headers={"Authorization": "Bearer s3cret-pass"})
        assert reply.status_code == 200
        with pytest.raises(SourceError, match="refused the password"):
            RemoteFeed(server.url, "wrong-pass").poll()

        async def refused():
            app = Dashboard(RemoteFeed(server.url, "wrong-pass"), interval=0.05, clock=lambda: T0)
            async with app.run_test(size=(160, 48)) as pilot:
                await until(pilot, lambda: "refused the password" in static_text(app, "#status"), "the refusal")
                assert rows(app, "#sessions") == []

        asyncio.run(refused())
        monkeypatch.setenv("TELEMETRY_PASS", "s3cret-pass")
        feed = RemoteFeed(server.url)

        async def scenario():
            app = Dashboard(feed, interval=0.05, clock=lambda: T0 + 60)
            async with app.run_test(size=(160, 48)) as pilot:
                await until(pilot, lambda: rows(app, "#sessions"), "the worker's session")
                assert rows(app, "#sessions")[0][0].strip().endswith("gpu-box:42/w1")
                await until(pilot, lambda: len(rows(app, "#turn")) == 6, "its turn")
                assert "1 worker ·" in app.query_one("#sessions-panel").border_subtitle
                # More events arrive while the dashboard polls.
                httpx.post(server.url + "/events", headers={"Authorization": "Bearer s3cret-pass"}, json={
                    "worker": "gpu-box:42", "records": [{"ts": T0 + 9, "session": "w1", "kind": "error",
                                                        "data": {"message": "disk full"}}]})
                await until(pilot, lambda: rows(app, "#errors"), "the remote error")
                assert "disk full" in rows(app, "#errors")[0][2]

        asyncio.run(scenario())
    finally:
        server.shutdown()
        server.server_close()


def test_remote_feed_reports_a_dead_server():
    feed = RemoteFeed("http://127.0.0.1:9", None, timeout=1.0)
    with pytest.raises(SourceError, match="cannot reach"):
        feed.poll()


def screen_text(app) -> str:
    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, record=True,
                      color_system="truecolor", legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return "\n".join(line.rstrip() for line in console.export_text().splitlines())


def test_snapshot_of_the_main_screen(tmp_path, utc):
    logs, runs = tmp_path / "logs", tmp_path / "runs"
    logs.mkdir()
    append(logs / "a.jsonl", rec("session_start", {"model": "smollm2-135m"}, session="20261130-101500-aaaaaa"),
           *turn(session="20261130-101500-aaaaaa"), rec("session_end", session="20261130-101500-aaaaaa", ts=3))
    s = "20261130-102000-bbbbbb"
    append(logs / "b.jsonl", rec("session_start", {"model": "smollm2-135m"}, session=s, ts=5),
           *turn(session=s, start=6), *turn(session=s, start=10, n=2, tool="read_file", ok=False, seconds=0.02),
           rec("repair", {"fn": "largest", "passed": True}, session=s, ts=14),
           rec("error", {"message": "the model repeated the same read_file call 3 times; turn ended"}, session=s, ts=15),
           rec("resources", {"rss_bytes": 912 << 20, "model": {"name": "smollm2-135m", "backend": "transformers",
                             "parameters": 134_515_008, "weights_bytes": 538_060_032, "dtype": "float32",
                             "device": "cpu", "decoding": "lean loop, prefix cache, int8 weights", "load_seconds": 3.4},
                             "memory": {"state": "ready", "items": 12, "global": 9, "workspace": 3},
                             "sandbox": {"policy": "auto", "layer": "bwrap"}}, session=s, ts=16))
    he = runs / "humaneval" / "k"
    he.mkdir(parents=True)
    (he / "summary.json").write_text(json.dumps({"done": 164, "total": 164, "raw": 18, "agent": 26}))
    train = runs / "train" / "lora-1"
    train.mkdir(parents=True)
    (train / "metrics.jsonl").write_text("".join(json.dumps({"step": i, "loss": 2.5 / (1 + i / 10)}) + "\n"
                                                 for i in range(40)))

    async def scenario():
        app = make_app(logs, runs, clock=lambda: T0 + 20)
        async with app.run_test(size=(150, 44)) as pilot:
            await until(pilot, lambda: len(rows(app, "#sessions")) == 2 and app.board.benches
                        and app.board.latest_train(), "everything")
            # The screen once it has settled: the same text twice, 0.3 s apart (layout can take a few frames).
            last, text = None, screen_text(app)
            while text != last:
                await pilot.pause(0.3)
                last, text = text, screen_text(app)
            return text

    text = asyncio.run(scenario()).replace(str(tmp_path), "TMP")
    if os.environ.get("UPDATE_SNAPSHOTS") or not SNAPSHOT.exists():
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(text + "\n")
        if not os.environ.get("UPDATE_SNAPSHOTS"):
            pytest.fail(f"no snapshot yet: wrote {SNAPSHOT}; look at it and commit it")
    assert text + "\n" == SNAPSHOT.read_text(), "the main screen changed; if on purpose: UPDATE_SNAPSHOTS=1 pytest " \
        "tests/test_dashboard.py -k snapshot, then look at the diff"
