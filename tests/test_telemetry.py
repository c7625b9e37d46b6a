"""Telemetry: a real server on 127.0.0.1 and workers (sessions with --monitor) sending to it."""

from __future__ import annotations

import io
import json
import socket
import threading

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
    assert body["workers"]["w1"]["events"] == 2 and body["seq"] == 3


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
    assert "413 from 127.0.0.1" in srv.out.getvalue()
    # a declared length over the limit is refused before the body is read: no need to send it
    with socket.create_connection(srv.server_address[:2], timeout=5) as sock:
        sock.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer pw\r\n"
                     b"Content-Length: 99999999\r\n\r\n{}")
        assert sock.recv(200).startswith(b"HTTP/1.1 413")
    assert httpx.post(srv.url + "/events", content=b"not json", headers={"Authorization": "Bearer pw"},
                      timeout=5).status_code == 400
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
        sock.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")  # and nothing more
        sock.settimeout(5)
        assert sock.recv(100) == b""  # closed by the server, not left holding a thread
    assert post(srv, {"worker": "w", "records": [{"kind": "k"}]}).status_code == 200


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
    assert srv.store.seq == 0 and srv.refused >= 1 and session.monitor.dropped >= 3
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
