"""The OpenAI-compatible backend against a real HTTP server on 127.0.0.1 that the test starts."""

import json
import socket
from http.server import BaseHTTPRequestHandler

import pytest
from conftest import respond, serve

from assistant.errors import ModelError
from assistant.models.openai_backend import OpenAIModel


class Server:
    """A tiny chat-completions server; `plan` lists what to do for each successive request."""

    def __init__(self):
        self.plan = []
        self.requests = []
        self.owner = None  # what /models says serves the model ("llamacpp", "vllm", ...)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append(("GET", self.path, None))
                entry = {"id": "served-model", **({"owned_by": server.owner} if server.owner else {})}
                self._send(200, {"data": [entry]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                server.requests.append(("POST", self.path, body))
                action = server.plan.pop(0) if server.plan else ("stream", ["Hello", " world"])
                kind, arg = action
                if kind == "status":
                    self._send(arg, {"error": {"message": f"failure {arg}"}})
                elif kind == "stream":
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream")
                    self.end_headers()
                    for piece in arg:
                        chunk = {"choices": [{"delta": {"content": piece}}]}
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                        self.wfile.flush()
                    self.wfile.write(b"data: [DONE]\n\n")
                elif kind == "raw":
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(arg)

            def _send(self, code, payload):
                respond(self, code, json.dumps(payload).encode())

        base, self.httpd = serve(Handler)
        self.url = base + "/v1"


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()


def messages():
    return [{"role": "user", "content": "hi"}]


def test_streams_text(server):
    model = OpenAIModel(server.url, "m1", api_key="test-key")
    assert list(model.stream(messages(), max_new_tokens=20)) == ["Hello", " world"]
    _, path, body = server.requests[-1]
    assert path == "/v1/chat/completions" and body["stream"] is True and body["max_tokens"] == 20
    assert body["model"] == "m1" and body["messages"] == messages()
    assert model.last_usage.completion_tokens == 2


def test_model_name_from_the_server(server):
    assert OpenAIModel(server.url, None).model_name == "served-model"


def test_stop_strings(server):
    server.plan.append(("stream", ["The answer", " is 4.\nObserv", "ation: fake"]))
    model = OpenAIModel(server.url, "m")
    assert "".join(model.stream(messages(), max_new_tokens=20, stop=["\nObservation:"])) == "The answer is 4."


def test_http_error_is_one_line(server):
    server.plan.append(("status", 401))
    with pytest.raises(ModelError, match="^the model server answered HTTP 401: failure 401$"):
        list(OpenAIModel(server.url, "m").stream(messages(), max_new_tokens=5))


def test_503_is_retried(server):
    server.plan += [("status", 503), ("status", 503), ("stream", ["ok"])]
    model = OpenAIModel(server.url, "m", retry_delays=(0.01, 0.01, 0.01))
    assert list(model.stream(messages(), max_new_tokens=5)) == ["ok"]
    assert len([r for r in server.requests if r[0] == "POST"]) == 3


def test_garbage_is_a_clear_error(server):
    server.plan.append(("raw", b"<html>definitely not SSE</html>\n"))
    with pytest.raises(ModelError, match="not a server-sent event"):
        list(OpenAIModel(server.url, "m").stream(messages(), max_new_tokens=5))
    server.plan.append(("raw", b"data: {broken json\n\n"))
    with pytest.raises(ModelError, match="malformed JSON"):
        list(OpenAIModel(server.url, "m").stream(messages(), max_new_tokens=5))


def test_dead_server_retries_then_says_so():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    model = OpenAIModel(f"http://127.0.0.1:{port}/v1", "m", retry_delays=(0.01, 0.02))
    with pytest.raises(ModelError, match=r"cannot reach the model server at http://127.0.0.1:\d+/v1 .*is it running\?"):
        list(model.stream(messages(), max_new_tokens=5))
