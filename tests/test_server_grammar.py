"""HTTP backends and the tool grammar: each server kind is asked in its own way (a real HTTP server on 127.0.0.1
records what it was sent), picked by what /models says, and the agent reads the replies accordingly."""

from __future__ import annotations

import json

import pytest
from test_openai_backend import Server

from assistant.grammar import ToolGrammar
from assistant.loader import load_plugins
from assistant.models.openai_backend import OpenAIModel


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()


@pytest.fixture(scope="module")
def grammar():
    return ToolGrammar(load_plugins().tools)


def sent(server) -> dict:
    return [body for method, _path, body in server.requests if method == "POST"][-1]


@pytest.mark.parametrize("owner, mode", [("llamacpp", "gbnf"), ("vllm", "vllm"), ("library", "off"), (None, "off")])
def test_auto_picks_the_grammar_field_by_what_serves_the_model(server, grammar, owner, mode):
    server.owner = owner
    model = OpenAIModel(server.url, "served-model", retry_delays=())
    assert model.grammar_mode == mode
    assert model.supports_grammar == (mode != "off")
    "".join(model.stream([{"role": "user", "content": "hi"}], max_new_tokens=8, grammar=grammar))
    body = sent(server)
    if mode == "gbnf":
        assert body["grammar"] == grammar.gbnf
    elif mode == "vllm":
        assert body["structured_outputs"] == {"grammar": grammar.gbnf}
    else:
        assert not {"grammar", "structured_outputs", "response_format"} & set(body)


def test_json_mode_sends_a_json_schema_and_no_grammar(server, grammar):
    model = OpenAIModel(server.url, "served-model", retry_delays=(), grammar_mode="json")
    "".join(model.stream([{"role": "user", "content": "hi"}], max_new_tokens=8, grammar=grammar))
    body = sent(server)
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == grammar.json_schema()
    assert "grammar" not in body


def test_without_a_grammar_nothing_extra_is_sent(server):
    model = OpenAIModel(server.url, "served-model", retry_delays=(), grammar_mode="gbnf")
    "".join(model.stream([{"role": "user", "content": "hi"}], max_new_tokens=8))
    assert "grammar" not in sent(server)


def test_auto_asks_models_once(server):
    server.owner = "vllm"
    model = OpenAIModel(server.url, None, retry_delays=())  # the name comes from /models too
    assert model.model_name == "served-model" and model.grammar_mode == "vllm" and model.supports_grammar
    assert [r for r in server.requests if r[0] == "GET"] == [("GET", "/v1/models", None)]


def test_the_agent_runs_a_json_mode_call_and_reads_a_json_mode_answer(server, make_session):
    """A JSON-only server answers {"answer": ...}: the user sees the text, not the object."""
    from assistant.events import Answer, ToolCall

    call = json.dumps({"tool_calls": [{"name": "list_files", "arguments": {"path": "."}}]})
    server.plan = [("stream", [call[:20], call[20:]]), ("stream", ['{"answer": ', '"There is hello.py."}'])]
    session = make_session([], approval="auto", server_grammar="json")
    session.agent.model = OpenAIModel(server.url, "served-model", retry_delays=(), grammar_mode="json")
    events = list(session.agent.run_turn("Which files are here?"))
    assert [e.name for e in events if isinstance(e, ToolCall)] == ["list_files"]
    assert [e.text for e in events if isinstance(e, Answer)] == ["There is hello.py."]
    assert "response_format" in sent(server)


def test_the_agent_under_a_grammar_never_runs_a_call_quoted_in_an_answer(server, make_session):
    from assistant.events import Answer, ToolCall

    quoted = "You could run " + json.dumps({"tool_calls": [{"name": "run_command", "arguments": {"command": "ls"}}]})
    server.owner = "llamacpp"
    server.plan = [("stream", [quoted])]
    session = make_session([], approval="auto")
    session.agent.model = OpenAIModel(server.url, "served-model", retry_delays=())
    events = list(session.agent.run_turn("How do I list files?"))
    assert not [e for e in events if isinstance(e, ToolCall)]
    assert [e.text for e in events if isinstance(e, Answer)] == [quoted]
    assert sent(server)["grammar"].startswith("root ::=")
