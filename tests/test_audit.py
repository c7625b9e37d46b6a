"""The audit log: hash chain, verification, torn-line repair, SIGKILL durability, concurrent writers."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from assistant.errors import AuditError
from assistant.logs.audit import GENESIS, AuditLog, line_hash, read_records, verify

WRITER = """
import sys
from assistant.logs.audit import AuditLog
log = AuditLog(sys.argv[1], sys.argv[2])
for i in range(int(sys.argv[3])):
    rec = log.append("note", {"i": i, "pad": "x" * 300})
    print(rec["data"]["i"], flush=True)  # acknowledged: the record is on disk
"""


def test_chain_links_each_line_to_the_previous(tmp_path):
    log = AuditLog(tmp_path / "a.jsonl", "s1")
    for i in range(5):
        log.append("note", {"i": i})
    lines = (tmp_path / "a.jsonl").read_bytes().splitlines()
    recs = [json.loads(l) for l in lines]
    assert recs[0]["prev"] == GENESIS
    assert all(recs[i]["prev"] == line_hash(lines[i - 1]) for i in range(1, 5))
    assert [r["seq"] for r in recs] == [0, 1, 2, 3, 4]
    assert set(recs[0]) == {"v", "ts", "session", "seq", "kind", "data", "prev"} and recs[0]["v"] == 1
    assert verify(tmp_path / "a.jsonl") == (5, None)


def test_verify_names_the_first_edited_record(tmp_path):
    path = tmp_path / "a.jsonl"
    log = AuditLog(path, "s1")
    for i in range(6):
        log.append("note", {"i": i})
    lines = path.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"i": 3', b'"i": 33')
    path.write_bytes(b"".join(lines))
    count, problem = verify(path)
    assert count == 4 and problem.line == 5 and "prev hash does not match" in problem.message


def test_verify_reports_a_removed_record(tmp_path):
    path = tmp_path / "a.jsonl"
    log = AuditLog(path, "s1")
    for i in range(4):
        log.append("note", {"i": i})
    lines = path.read_bytes().splitlines(keepends=True)
    del lines[1]
    path.write_bytes(b"".join(lines))
    assert verify(path)[1].line == 2


def test_torn_last_line_is_repaired_on_open(tmp_path):
    path = tmp_path / "a.jsonl"
    log = AuditLog(path, "s1")
    log.append("note", {"i": 0})
    log.append("note", {"i": 1})
    log.close()
    with open(path, "ab") as fh:
        fh.write(b'{"v": 1, "ts": 1, "sess')  # a crash mid-write
    assert verify(path)[1].message == "torn last line (incomplete record)"
    log = AuditLog(path, "s2")
    log.append("note", {"i": 2})
    assert verify(path) == (3, None)
    assert [r["data"]["i"] for r in read_records(path)] == [0, 1, 2]


def test_sigkill_during_appends_never_loses_an_acknowledged_record(tmp_path):
    path = tmp_path / "kill.jsonl"
    acknowledged = -1
    for round_ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"r{round_}", "100000"],
                                stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 0.05 + 0.03 * round_
        last = None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line:
                last = int(line)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Reopening repairs a torn tail; then every acknowledged record must be there and the chain valid.
        AuditLog(path, "check").close()
        count, problem = verify(path)
        assert problem is None
        recs = [r for r in read_records(path) if r["session"] == f"r{round_}"]
        if last is not None:
            assert [r["data"]["i"] for r in recs][: last + 1] == list(range(last + 1))
        acknowledged = max(acknowledged, last or -1)
    assert acknowledged > 0


def test_two_processes_share_one_log(tmp_path):
    path = tmp_path / "shared.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, "150"], stdout=subprocess.DEVNULL)
             for name in ("p1", "p2")]
    for p in procs:
        assert p.wait(timeout=60) == 0
    assert verify(path) == (300, None)
    sessions = [r["session"] for r in read_records(path)]
    assert sessions.count("p1") == 150 and sessions.count("p2") == 150


def test_write_failure_is_an_error_and_leaves_no_partial_line(tmp_path, monkeypatch):
    path = tmp_path / "full.jsonl"
    log = AuditLog(path, "s")
    log.append("note", {"i": 0})
    real_write = os.write

    def short_write(fd, data):
        return real_write(fd, data[: len(data) // 2])  # like a disk that filled up mid-record

    monkeypatch.setattr(os, "write", short_write)
    with pytest.raises(AuditError, match="cannot write the audit log"):
        log.append("note", {"i": 1})
    monkeypatch.setattr(os, "write", real_write)
    assert verify(path) == (1, None)
    log.append("note", {"i": 2})
    assert verify(path) == (2, None)


def test_a_log_that_is_not_a_regular_file_is_refused():
    with pytest.raises(AuditError, match="must be a regular file"):
        AuditLog("/dev/null", "s")
