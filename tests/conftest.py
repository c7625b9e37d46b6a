"""Shared fixtures: a temporary ASSISTANT_HOME for every test, no third-party plugins, a scripted model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from assistant.config import load_settings
from assistant.models.scripted import ScriptedModel

# One model cache for the whole test run (and across runs): pulling and converting the model is slow.
SHARED_MODELS = Path(os.environ.get("ASSISTANT_TEST_MODELS_DIR", Path.home() / ".cache" / "assistant-test" / "models"))


@pytest.fixture(autouse=True, scope="session")
def interruptible():
    """The Ctrl-C tests send SIGINT to this process; a shell that starts jobs in the background (nohup, `&` in a
    script) leaves SIGINT ignored, which would make them fail for a reason that is not ours."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    for key in list(os.environ):
        if key.startswith(("ASSISTANT_", "CONTEXT7_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("ASSISTANT_HOME", str(home))
    monkeypatch.setenv("ASSISTANT_CONFIG", str(home / "config.toml"))
    monkeypatch.setenv("ASSISTANT_PLUGINS", "")  # never load the user's installed plugins
    monkeypatch.setenv("ASSISTANT_MODELS_DIR", str(home / "models"))
    return home


@pytest.fixture
def workspace(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "hello.py").write_text("print('hello')\n")
    return ws


@pytest.fixture
def make_session(workspace):
    """make_session(outputs, **settings) -> Session driven by a ScriptedModel replaying `outputs`."""
    from assistant.session import Session

    made = []

    def make(outputs=(), *, plugins=None, ask=None, interactive=False, **flags):
        flags.setdefault("workspace", str(workspace))
        flags.setdefault("memory", False)  # tests of memory turn it on; the others need no embedder
        settings = load_settings(flags)
        session = Session(settings, model=ScriptedModel(outputs), plugins=plugins, ask=ask, interactive=interactive)
        made.append(session)
        return session

    yield make
    for s in made:
        if s.audit.fd >= 0:
            s.close()


@pytest.fixture
def shared_models(monkeypatch):
    SHARED_MODELS.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("ASSISTANT_MODELS_DIR", str(SHARED_MODELS))
    return SHARED_MODELS


def call(name: str, **arguments) -> str:
    import json

    return json.dumps({"tool_calls": [{"name": name, "arguments": arguments}]})


def serve(handler_class):
    """Start a real HTTP server on 127.0.0.1 (a free port) in a thread; returns (base URL, server)."""
    import threading
    from http.server import ThreadingHTTPServer

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}", httpd


def respond(handler, code: int, body: bytes, content_type: str = "application/json") -> None:
    handler.send_response(code)
    handler.send_header("content-type", content_type)
    handler.send_header("content-length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
