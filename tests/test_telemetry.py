"""Telemetry: a real server on 127.0.0.1 and workers (sessions with --monitor) sending to it."""

from __future__ import annotations

import io
import json
import socket
import threading
import time

import httpx
import pytest
from conftest import call

from assistant.cli import main
from assistant.errors import AssistantError
from assistant.telemetry import TelemetryServer


@pytest.fixture
def server():
    """start(password=None, **options) -> a running server on a free loopback port; its notes in .out."""
    started = []

    def start(password=None, **options):
        srv = TelemetryServer("127.0.0.1", 0, password, out=io.StringIO(), **options)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.shutdown()
        srv.server_close()


def post(srv, body, password=None, **kwargs):
    headers = {"Authorization": f"Bearer {password}"} if password else {}
    return httpx.post(srv.url + "/events", json=body, headers=headers, timeout=5, **kwargs)


def get(srv, since=0, password=None):
    headers = {"Authorization": f"Bearer {password}"} if password else {}
    return httpx.get(srv.url + f"/events?since={since}", headers=headers, timeout=5)


def test_authorised_events_arrive_and_are_read_back_in_order(server):
    srv = server("s3cret")
    reply = post(srv, {"worker": "w1", "records": [{"kind": "user", "data": {"text": "hi"}}, {"kind": "answer"}]},
                 "s3cret")
    assert reply.status_code == 200 and reply.json() == {"seq": 2, "accepted": 2}
    post(srv, {"worker": "w2", "records": [{"kind": "tool_call"}]}, "s3cret")
    body = get(srv, 0, "s3cret").json()
    assert [(r["seq"], r["worker"], r["kind"]) for r in body["records"]] == [
        (1, "w1", "user"), (2, "w1", "answer"), (3, "w2", "tool_call")]
    assert [r["seq"] for r in get(srv, 2, "s3cret").json()["records"]] == [3]
    assert body["workers"]["w1"]["events"] == 2 and body["seq"] == 3 and body["next"] == 3
    page = httpx.get(srv.url + "/events?since=0&limit=2", headers={"Authorization": "Bearer s3cret"}).json()
    assert [r["seq"] for r in page["records"]] == [1, 2] and page["next"] == 2  # resume there, skip nothing
    assert get(srv, 3, "s3cret").json()["next"] == 3


def test_a_wrong_or_missing_password_is_refused_and_logged(server):
    srv = server("s3cret")
    assert post(srv, {"worker": "w", "records": [{"kind": "x"}]}, "guess").status_code == 401
    assert post(srv, {"worker": "w", "records": [{"kind": "x"}]}).status_code == 401
    assert get(srv, 0, "guess").status_code == 401
    assert srv.store.seq == 0 and srv.refused == 3
    notes = srv.out.getvalue()
    assert "401 POST /events from 127.0.0.1: wrong password" in notes and "no password" in notes
    assert "s3cret" not in notes and "guess" not in notes


def test_oversized_and_malformed_bodies_are_refused(server):
    srv = server("pw", max_body=2048)
    big = {"worker": "w", "records": [{"kind": "x", "data": "a" * 4096}]}
    assert post(srv, big, "pw").status_code == 413
    assert "413 POST /events from 127.0.0.1: 4" in srv.out.getvalue()
    # a declared length over the limit is refused before the body is read: no need to send it
    with socket.create_connection(srv.server_address[:2], timeout=5) as sock:
        sock.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer pw\r\n"
                     b"Content-Length: 99999999\r\n\r\n{}")
        assert sock.recv(200).startswith(b"HTTP/1.1 413")
    assert httpx.post(srv.url + "/events", content=b"not json", timeout=5,
                      headers={"Authorization": "Bearer pw", "Content-Type": "application/json"}).status_code == 400
    assert httpx.post(srv.url + "/events", content=b"{}", headers={"Authorization": "Bearer pw"},
                      timeout=5).status_code == 415  # a browser's text/plain POST, say
    assert post(srv, {"worker": "w", "records": [{}] * 1001}, "pw").status_code == 413
    assert post(srv, {"worker": "w", "records": "nope"}, "pw").status_code == 400
    assert srv.store.seq == 0


def test_memory_is_bounded(server):
    srv = server(None, max_events=5)
    for n in range(3):
        post(srv, {"worker": "w", "records": [{"kind": "k", "n": n * 4 + i} for i in range(4)]})
    records = get(srv).json()["records"]
    assert [r["n"] for r in records] == [7, 8, 9, 10, 11] and len(srv.store.records) == 5
    assert srv.store.workers["w"]["events"] == 12  # the counts survive the ring's turnover


def test_memory_is_bounded_in_bytes_and_workers_too(server, monkeypatch):
    from assistant import telemetry

    monkeypatch.setattr(telemetry, "MAX_WORKERS", 3)
    srv = server(None, max_bytes=10_000)
    for n in range(6):  # about 3 KB each: only the newest three fit
        post(srv, {"worker": f"w{n}", "records": [{"kind": "k", "n": n, "data": "x" * 3000}]})
    assert [r["n"] for r in get(srv).json()["records"]] == [3, 4, 5] and srv.store.bytes <= 10_000
    assert list(srv.store.workers) == ["w3", "w4", "w5"]  # the longest silent forgotten first


def test_a_client_that_goes_silent_is_cut_off(server, monkeypatch):
    from assistant import telemetry

    monkeypatch.setattr(telemetry.Handler, "timeout", 0.5)
    srv = server(None)
    with socket.create_connection(srv.server_address[:2], timeout=5) as sock:
        sock.sendall(b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{")  # and no more
        sock.settimeout(5)
        assert sock.recv(100) == b""  # closed by the server, not left holding a thread
    assert post(srv, {"worker": "w", "records": [{"kind": "k"}]}).status_code == 200


def test_without_a_password_only_loopback_hosts_are_answered(server):
    """A web page can reach 127.0.0.1 through a name it rebinds: its Host gives it away."""
    srv = server(None)
    post(srv, {"worker": "w", "records": [{"kind": "secret prompt"}]})
    rebound = httpx.get(srv.url + "/events", headers={"Host": "rebind.evil.example"}, timeout=5)
    assert rebound.status_code == 403 and "secret" not in rebound.text
    assert httpx.get(srv.url + "/events", headers={"Host": "localhost:7779"}, timeout=5).status_code == 200
    assert httpx.get(srv.url + "/events", headers={"Host": "[::1]:7779"}, timeout=5).status_code == 200


def test_notes_escape_what_clients_send(server):
    srv = server("pw")
    with socket.create_connection(srv.server_address[:2], timeout=5) as sock:
        sock.sendall(b"GET /events?\x1b[2J\x1b[31mFAKE HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 401")
    notes = srv.out.getvalue()
    assert "\x1b" not in notes and "\\x1b[2J" in notes


def test_too_many_connections_are_closed_not_queued(server, monkeypatch):
    from assistant import telemetry

    monkeypatch.setattr(telemetry, "MAX_CONNECTIONS", 2)
    srv = server(None)
    idle = [socket.create_connection(srv.server_address[:2], timeout=5) for _ in range(2)]
    try:
        time.sleep(0.3)
        with socket.create_connection(srv.server_address[:2], timeout=5) as third:
            third.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert third.recv(100) == b""
        deadline = time.monotonic() + 2
        while "2 already open" not in srv.out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "2 already open" in srv.out.getvalue()
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.3)
    assert httpx.get(srv.url + "/health", timeout=5).status_code == 200


@pytest.mark.parametrize("password", ["pw ", "p\u00e4ss", "two\nlines"])
def test_a_password_that_cannot_travel_in_a_header_is_a_clear_error(make_session, monkeypatch, password):
    monkeypatch.setenv("TELEMETRY_PASS", password)
    with pytest.raises(AssistantError, match="printable ASCII"):
        make_session([], monitor="http://127.0.0.1:1")
    with pytest.raises(AssistantError, match="printable ASCII"):
        TelemetryServer("127.0.0.1", 0, password)


def test_big_events_are_split_into_bodies_the_server_takes(server, make_session, monkeypatch):
    srv = server(None)
    monkeypatch.delenv("TELEMETRY_PASS", raising=False)
    # 30 calls of 40 KB: 1.2 MB, over the server's 1 MiB body limit if sent as one batch
    session = make_session([call("write_file", path=f"f{i}.txt", content="x" * 40_000) for i in range(30)]
                           + ["Done."], monitor=srv.url, approval="auto", max_steps=40, max_actions_per_turn=40)
    list(session.agent.run_turn("write them"))
    session.close()
    kinds = [r["kind"] for r in httpx.get(srv.url + "/events?limit=10000", timeout=5).json()["records"]]
    assert kinds.count("tool_call") == 30 and kinds[-1] == "session_end" and session.monitor.dropped == 0
    huge = json.loads(session.monitor._encoded({"kind": "tool_call", "data": {"content": "y" * (1 << 20)}}))
    assert huge["kind"] == "tool_call" and huge["data"]["truncated"] and huge["data"]["bytes"] > 1 << 20


def test_a_hung_server_does_not_hold_the_session(make_session, monkeypatch):
    """A server that accepts and never answers: the turn runs at its own pace, and close waits at most 3 s."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    monkeypatch.delenv("TELEMETRY_PASS", raising=False)
    try:
        session = make_session(["Fine."], monitor=f"http://127.0.0.1:{listener.getsockname()[1]}")
        start = time.monotonic()
        assert list(session.agent.run_turn("hello"))[-1].text == "Fine."
        assert time.monotonic() - start < 1.0
        start = time.monotonic()
        session.close()
        assert time.monotonic() - start < 3.5
    finally:
        listener.close()


def test_a_public_address_needs_a_password():
    with pytest.raises(AssistantError, match="refusing to listen on 0.0.0.0 without TELEMETRY_PASS"):
        TelemetryServer("0.0.0.0", 0, None)


def test_the_cli_refuses_too(monkeypatch, capsys):
    monkeypatch.delenv("TELEMETRY_PASS", raising=False)
    assert main(["telemetry", "serve", "--host", "0.0.0.0", "--port", "0"]) == 1
    assert "without TELEMETRY_PASS" in capsys.readouterr().err


def test_a_worker_session_sends_its_whole_turn(server, make_session, monkeypatch):
    srv = server("pw")
    monkeypatch.setenv("TELEMETRY_PASS", "pw")
    session = make_session([call("list_files", path="."), "There is hello.py."], monitor=srv.url)
    list(session.agent.run_turn("what is here?"))
    session.close()  # sends what is queued
    records = get(srv, 0, "pw").json()["records"]
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "session_start" and kinds[-1] == "session_end"
    assert {"user", "tool_call", "observation", "answer"} <= set(kinds)
    assert {r["session"] for r in records} == {session.id}
    answer = next(r for r in records if r["kind"] == "answer")
    assert answer["data"]["text"] == "There is hello.py."


def test_a_worker_never_waits_on_a_refusing_server(server, make_session, monkeypatch):
    from assistant import telemetry

    said = []
    monkeypatch.setattr(telemetry.log, "warning", said.append)
    srv = server("pw")
    monkeypatch.setenv("TELEMETRY_PASS", "wrong")
    session = make_session(["Fine."], monitor=srv.url)
    events = list(session.agent.run_turn("hello"))
    assert events[-1].text == "Fine."
    session.close()
    assert srv.store.seq == 0 and srv.refused >= 1 and session.monitor.dropped >= 1
    assert len(said) == 1 and "telemetry: cannot send to" in said[0] and "HTTP 401" in said[0]  # said once


def test_a_monitor_url_must_be_http(make_session):
    with pytest.raises(AssistantError, match="--monitor needs an http"):
        make_session([], monitor="ftp://example")


def test_a_workspace_config_cannot_send_events_elsewhere(workspace):
    from assistant.config import load_settings

    (workspace / ".assistant").mkdir()
    (workspace / ".assistant" / "config.toml").write_text('monitor = "http://attacker.example:7779"\n')
    assert load_settings({"workspace": str(workspace)}).monitor is None


def test_records_are_json_the_dashboard_can_read(server):
    srv = server(None)
    post(srv, {"worker": "w", "records": [{"kind": "user", "data": {"text": "caf\u00e9 \u65e5"}}]})
    raw = httpx.get(srv.url + "/events", timeout=5).content
    assert json.loads(raw)["records"][0]["data"]["text"] == "caf\u00e9 \u65e5"
    assert httpx.get(srv.url + "/health", timeout=5).json() == {"ok": True}
