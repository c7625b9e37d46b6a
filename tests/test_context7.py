"""The Context7 plugin against a real HTTP server on 127.0.0.1 that mimics the API's paths, parameters and replies."""

import functools
import json
import time
from http.server import BaseHTTPRequestHandler
from types import SimpleNamespace
from urllib.parse import parse_qs, urlparse

import pytest
from conftest import respond, serve

from assistant import home
from assistant.config import load_settings
from assistant.errors import ToolError
from assistant.loader import load_plugins
from assistant.plugins import context7 as c7
from assistant.text import ELLIPSIS
from assistant.tools import ToolContext

KEY = "ctx7sk-test-secret-0123"
DASHES = "-" * 32
LONG = "Set timeouts with httpx.Timeout(10.0, connect=5.0); every request accepts timeout=. " * 8
DOCS = f"""### Timeouts

Source: https://github.com/encode/httpx/blob/master/docs/advanced/timeouts.md

{LONG}

{DASHES}

### Timeouts

Source:   https://github.com/encode/httpx/blob/master/docs/advanced/timeouts.md

{LONG}

{DASHES}

### Client

Source: https://github.com/encode/httpx/blob/master/docs/advanced/clients.md

```python
import httpx
### not a heading: inside the fence
client = httpx.Client(timeout=3)
```
### Streaming

Source: https://github.com/encode/httpx/blob/master/docs/quickstart.md

Use client.stream("GET", url) to read a large response in chunks.
"""
LIBS = {"results": [
    {"id": "/reactjs/httpx-ui", "title": "httpx-ui", "description": "not it", "totalSnippets": 3},
    {"id": "/encode/httpx", "title": "HTTPX", "description": "A next generation HTTP client for Python.",
     "totalSnippets": 251, "trustScore": 9, "benchmarkScore": 88.5, "versions": []},
]}


class Context7Server:
    """Answers /api/v2/libs/search and /api/v2/context; `status`, `message`, `delay` and `docs` shape the replies."""

    def __init__(self):
        self.reset()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urlparse(self.path)
                params = {k: v[0] for k, v in parse_qs(url.query).items()}
                server.requests.append((url.path, params, self.headers.get("Authorization")))
                time.sleep(server.delay)
                if server.status != 200:
                    body = {"error": "failed", "message": server.message or f"failure {server.status}"}
                    respond(self, server.status, json.dumps(body).encode())
                elif url.path == "/api/v2/libs/search":
                    respond(self, 200, json.dumps(server.libs).encode())
                elif url.path == "/api/v2/context":
                    respond(self, 200, server.docs.encode(), "text/plain; charset=utf-8")
                else:
                    respond(self, 404, b'{"error": "not_found", "message": "Endpoint not found"}')

        base, self.httpd = serve(Handler)
        self.httpd.handle_error = lambda request, address: None  # a client that timed out closed the socket
        self.url = base + "/api"

    def reset(self):
        self.requests = []
        self.status, self.message, self.delay, self.docs, self.libs = 200, None, 0.0, DOCS, LIBS


@pytest.fixture(scope="module")
def shared_server():
    s = Context7Server()  # one for the module: each shutdown waits out serve_forever's half-second poll
    yield s
    s.httpd.shutdown()


@pytest.fixture
def server(shared_server):
    shared_server.reset()
    return shared_server


def settings_for(server, **flags):
    return load_settings({"context7_url": server.url, **flags})


@functools.cache
def registry():
    return load_plugins()


def run_tool(settings, **arguments):
    """Call the tool as the agent does: through the registry, with a ToolContext."""
    return registry().tools["context7"](arguments, ToolContext(workspace=None, settings=settings))


def test_tool_resolves_then_fetches_docs_without_a_key(server):
    text = run_tool(settings_for(server), library="httpx", topic="timeouts")
    (search, s_params, s_auth), (context, c_params, c_auth) = server.requests
    assert (search, s_params) == ("/api/v2/libs/search", {"libraryName": "httpx", "query": "timeouts"})
    # the result titled like the name wins over the first one
    assert context == "/api/v2/context"
    assert c_params == {"libraryId": "/encode/httpx", "query": "timeouts", "type": "txt"}
    assert s_auth is None and c_auth is None
    assert text.startswith("Context7 /encode/httpx on 'timeouts':\n\n[1] ### Timeouts")
    assert "[2] ### Client" in text and "[3] ### Streaming" in text and "[4]" not in text  # the twin was dropped
    assert DASHES not in text
    tool = registry().tools["context7"]
    assert tool.description.startswith("Look up current documentation of a library or framework (Context7)")
    assert tool.parameters["required"] == ["library"] and "topic" in tool.parameters["properties"]


def test_an_id_is_used_directly(server):
    run_tool(settings_for(server), library="/encode/httpx")
    assert [(p, q) for p, q, _ in server.requests] == [
        ("/api/v2/context", {"libraryId": "/encode/httpx", "query": "/encode/httpx", "type": "txt"})]


def test_passages_split_at_dashes_and_headings_but_not_in_code():
    found = c7.passages(DOCS)
    assert [p.splitlines()[0] for p in found] == ["### Timeouts", "### Timeouts", "### Client", "### Streaming"]
    assert "### not a heading: inside the fence" in found[2]
    v1 = "TITLE: A\nCODE:\n```\nx\n```\n\n" + "-" * 40 + "\n\nTITLE: B\nDESCRIPTION: b\n"
    assert c7.passages(v1) == ["TITLE: A\nCODE:\n```\nx\n```", "TITLE: B\nDESCRIPTION: b"]


def test_the_key_is_sent_only_when_set_and_never_shown(server):
    text = run_tool(settings_for(server, context7_api_key=KEY), library="httpx", topic="timeouts")
    assert [auth for _, _, auth in server.requests] == [f"Bearer {KEY}"] * 2
    assert KEY not in text
    server.status, server.message = 404, f"the key {KEY} cannot read this library"
    with pytest.raises(ToolError) as err:
        run_tool(settings_for(server, context7_api_key=KEY), library="other")
    assert str(err.value) == "Context7 answered HTTP 404 (the key *** cannot read this library)"


def test_401_is_one_clear_line(server):
    server.status, server.message = 401, f"Invalid API key {KEY}"
    with pytest.raises(ToolError) as err:
        run_tool(settings_for(server, context7_api_key=KEY), library="httpx")
    assert str(err.value) == "Context7 refused the request (HTTP 401): check --context7-api-key / CONTEXT7_API_KEY"


def test_server_error_and_rate_limit(server):
    server.status = 500
    with pytest.raises(ToolError, match=r"^Context7 server error \(HTTP 500\): try again later \(failure 500\)$"):
        run_tool(settings_for(server), library="httpx")
    server.status = 429
    with pytest.raises(ToolError, match=r"rate limited .*HTTP 429.*CONTEXT7_API_KEY"):
        run_tool(settings_for(server), library="httpx")


def test_timeout_and_unreachable_server(server):
    server.delay = 1.0
    start = time.monotonic()
    with pytest.raises(ToolError) as err:
        run_tool(settings_for(server, context7_timeout=0.3), library="httpx")
    assert time.monotonic() - start < 0.9
    assert str(err.value) == f"Context7 did not answer within 0.3 s ({server.url}/v2/libs/search)"
    with pytest.raises(ToolError, match=r"^cannot reach Context7 at http://127\.0\.0\.1:1/api/v2/libs/search: "):
        run_tool(load_settings({"context7_url": "http://127.0.0.1:1/api"}), library="httpx")  # nothing listens there


def test_fallback_returns_new_passages(server):
    settings = settings_for(server)
    found = c7.fallback("how do I set a timeout on httpx.Client requests", settings, limit=2)
    assert server.requests[0][1] == {"libraryName": "httpx", "query": "how do I set a timeout on httpx.Client requests"}
    assert [p.splitlines()[0] for p in found] == ["### Timeouts", "### Client"]


def test_fallback_reports_errors_instead_of_raising(server):
    server.status = 503
    found = c7.fallback("httpx timeouts", settings_for(server))
    assert found == ["context7: Context7 server error (HTTP 503): try again later (failure 503)"]


def test_fallback_guesses_library_words():
    assert c7.library_guesses("how do I use httpx.Client with a proxy") == ["httpx", "proxy"]
    assert c7.library_guesses("what is /encode/httpx about") == ["/encode/httpx"]
    assert c7.library_guesses("how to use it with the") == []
    assert c7.library_guesses("set a proxy in (httpx.)") == ["proxy", "httpx"]


def test_dedupe_drops_twins_and_local_texts(server):
    server.docs = f"### A\n\nalpha beta  gamma\n\n{DASHES}\n\n### A\nalpha   beta gamma.\n\n{DASHES}\n\n" \
                  f"### Local\n\nthe local answer\n\n{DASHES}\n\n### Part\n\nof a longer local text"
    local = ["### Local   the local answer", "here is part of a longer local text, found on disk"]
    assert c7.fallback("httpx", settings_for(server), local_texts=local) == ["### A\n\nalpha beta  gamma"]


def test_truncation_default_and_configured(server):
    text = run_tool(settings_for(server), library="httpx", topic="timeouts")
    first = text.split("\n\n[1] ", 1)[1].split("\n\n[2] ", 1)[0]
    assert 200 < len(first) <= 256 and first.endswith(ELLIPSIS)
    assert "[3] " + c7.passages(DOCS)[3] in text  # short passages are left whole
    found = c7.fallback("httpx timeouts", settings_for(server, context7_chars=40))
    assert found and all(len(p) <= 40 for p in found) and found[0].endswith(ELLIPSIS)
    assert c7.clip("abcdef", 6) == "abcdef" and c7.clip("abcdefg", 6) == "abcde" + ELLIPSIS


def test_replies_are_cached_on_disk(server):
    settings = settings_for(server)
    first = run_tool(settings, library="httpx", topic="timeouts")
    assert run_tool(settings, library="httpx", topic="timeouts") == first
    assert len(server.requests) == 2  # the second call never reached the server
    files = sorted((home.home() / "cache" / "context7").glob("*.json"))
    assert len(files) == 2 and not list(files[0].parent.glob("*.tmp"))
    files[0].write_text("{not json")  # a corrupt entry is ignored and replaced
    entry = json.loads(files[1].read_text())
    files[1].write_text(json.dumps({**entry, "saved": time.time() - 25 * 3600}))  # an expired one is refetched
    assert run_tool(settings, library="httpx", topic="timeouts") == first
    assert len(server.requests) == 4
    assert run_tool(settings, library="httpx", topic="timeouts") == first and len(server.requests) == 4


def test_turned_off_means_no_request(server):
    settings = settings_for(server, context7=False)
    with pytest.raises(ToolError, match=r"^Context7 is turned off \(--no-context7\)$"):
        run_tool(settings, library="httpx")
    assert c7.fallback("httpx timeouts", settings) == []
    assert server.requests == []


def test_slash_command(server):
    command = registry().commands["context7"].function
    session = SimpleNamespace(settings=settings_for(server))
    assert command("", session).startswith("usage: /context7 LIBRARY")
    assert command("httpx stream a response", session).startswith("Context7 /encode/httpx on 'stream a response':")
    assert server.requests[-1][1]["query"] == "stream a response"
    server.libs = {"results": []}
    assert command("nosuchlib", session) == "error: Context7 knows no library called 'nosuchlib'"
