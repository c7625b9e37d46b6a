"""The tool-call grammar: built from the tools' schemas, enforced token by token (llguidance) on a byte-level
tokenizer made here, so no model is needed; a scripted "model" that keeps proposing broken calls is masked into
valid ones."""

from __future__ import annotations

import json
import random

import pytest

from assistant.errors import FormatError
from assistant.grammar import Constraint, ToolGrammar, answer_text, parse_constrained
from assistant.loader import load_plugins
from assistant.toolcalls import parse_tool_calls
from conftest import call


@pytest.fixture(scope="module")
def tools():
    return load_plugins().tools


@pytest.fixture(scope="module")
def byte_tokenizer():
    """A Hugging Face fast tokenizer whose tokens are the 256 bytes plus an end-of-sequence token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab["<eos>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")
    return hf


@pytest.fixture(scope="module")
def ll_tok(byte_tokenizer):
    from assistant.grammar import ll_tokenizer

    return ll_tokenizer(byte_tokenizer)


def matcher(grammar, ll_tok):
    import llguidance

    return llguidance.LLMatcher(ll_tok, grammar.lark, log_level=0)


def accepts(grammar, ll_tok, tokenizer, text: str) -> bool:
    m = matcher(grammar, ll_tok)
    return all(m.consume_token(t) for t in tokenizer.encode(text)) and m.is_accepting()


VALID = [
    call("read_file", path="src/app.py"),
    call("read_file", path="a.py", start_line=3, max_lines=10),
    call("list_files"),
    call("list_files", max_depth=2),
    call("run_python", code='print("héllo\\n")\nprint(3**5)'),
    call("run_command", command=["ls", "-la"]),
    call("edit_file", path="a.py", old_text="x = 1", new_text="x = 2"),
    '{"tool_calls":[{"name":"run_command","arguments":{"command":"git status","timeout":5}}]}',
    "The answer is 42.",
    "Here is a JSON example: {\"a\": 1}",
]

INVALID = [
    call("read_fil", path="a.py"),                                   # unknown tool
    call("read_file"),                                               # required argument missing
    call("read_file", path=3),                                       # wrong type
    call("read_file", path="a.py", colour="red"),                    # unknown argument
    call("run_python", code="print(1)", timeout="soon"),             # wrong type of an optional argument
    '{"tool_calls": [{"name": "list_files", "arguments": {}}',       # cut off
    '{"tool_calls": []}',                                            # no call
    " leading blank",                                                # an answer starts with a visible character
    "",                                                              # empty reply
    '{"name": "read_file", "arguments": {"path": "a"}}',             # not the envelope
]


@pytest.mark.parametrize("text", VALID)
def test_the_grammar_accepts_answers_and_valid_calls(tools, ll_tok, byte_tokenizer, text):
    assert accepts(ToolGrammar(tools), ll_tok, byte_tokenizer, text)


@pytest.mark.parametrize("text", INVALID)
def test_the_grammar_rejects_invalid_calls(tools, ll_tok, byte_tokenizer, text):
    assert not accepts(ToolGrammar(tools), ll_tok, byte_tokenizer, text)


def test_every_string_the_grammar_accepts_as_a_call_validates(tools):
    """The grammar and the validator agree: a constrained call always passes the JSON-schema check."""
    for text in VALID:
        if text.startswith("{"):
            calls = parse_constrained(text, tools)
            assert len(calls) == 1 and calls[0].name in tools


class BadProposer:
    """A stand-in for a small model: its logits favour, in turn, each byte of a scripted (broken) reply; where
    the grammar forbids that byte, the constrained choice falls to the best allowed token."""

    def __init__(self, tokenizer, script: str, seed: int):
        self.tokenizer, self.script = tokenizer, script.encode()
        self.rng = random.Random(seed)

    def logits(self, step: int):
        import torch

        vocab = len(self.tokenizer)
        scores = torch.tensor([[self.rng.random() for _ in range(vocab)]])
        if step < len(self.script):
            token = self.tokenizer.convert_tokens_to_ids(
                self.tokenizer.convert_ids_to_tokens(self.tokenizer.encode(chr(self.script[step])))[0])
            scores[0, token] = 10.0
        return scores


def decode_under(grammar, tokenizer, ll_tok, proposer, limit=4000) -> str:
    import torch

    c = Constraint(grammar, ll_tok)
    out = []
    for step in range(limit):
        logits = c.mask(proposer.logits(step))
        token = int(torch.argmax(logits))
        c.advance(token)
        if token == tokenizer.eos_token_id:
            break
        out.append(token)
        if c.done():
            break
    else:
        pytest.fail(f"no end within {limit} tokens")
    return tokenizer.decode(out)


BROKEN = [
    '{"tool_calls": [{"name": "read_fil", "arguments": {"pth": 3}}',
    '{"tool_calls": [{"name": "run_python", "arguments": {"code": print(1)}}]}',
    "{'tool_calls': [{'name': 'list_files', 'arguments': {}}]}",
    '{"tool_calls": [{"name": "read_file", "arguments": {"path": "a.py"}}]} and then some prose',
    '{"name": "run_command", "arguments": {"command": "ls"}}',
    '{"tool_calls": [{"name": "write_file", "arguments": {"path": "x", "content": "a"}}, {"name": "read_file"}]}',
]


@pytest.mark.parametrize("script", BROKEN)
def test_constrained_decoding_turns_a_broken_call_into_a_valid_one(tools, ll_tok, byte_tokenizer, script):
    for seed in range(3):
        text = decode_under(ToolGrammar(tools), byte_tokenizer, ll_tok, BadProposer(byte_tokenizer, script, seed))
        assert text.startswith("{")
        calls = parse_constrained(text, tools)  # raises FormatError if invalid
        assert len(calls) == 1
        # The tolerant parser (used without constraints) agrees on what it is.
        assert [c.name for c in parse_tool_calls(text, tools)] == [calls[0].name]


def test_random_logits_under_the_grammar_never_give_an_invalid_call(tools, ll_tok, byte_tokenizer):
    for seed in range(10):
        proposer = BadProposer(byte_tokenizer, "{" if seed % 2 else "", seed)
        text = decode_under(ToolGrammar(tools), byte_tokenizer, ll_tok, proposer)
        if text.startswith("{"):
            assert len(parse_constrained(text, tools)) == 1
        else:
            assert text and not text[0].isspace() and parse_constrained(text, tools) == []


def test_an_answer_with_a_call_inside_is_an_answer_when_constrained(tools):
    text = "You could run " + call("run_command", command="rm -rf /")
    assert parse_constrained(text, tools) == []
    assert parse_tool_calls(text, tools)  # the tolerant parser would have run it


def test_a_call_cut_off_by_the_budget_is_a_format_error(tools):
    with pytest.raises(FormatError, match="cut off"):
        parse_constrained('{"tool_calls": [{"name": "read_file", "arguments": {"path": "a', tools)


def test_json_only_servers_answer_inside_an_object(tools):
    assert parse_constrained('{"answer": "It is 42."}', tools) == []
    assert answer_text('{"answer": "It is 42."}') == "It is 42."
    assert answer_text("plain") == "plain"
    schema = ToolGrammar(tools).json_schema()
    import jsonschema

    jsonschema.validate(json.loads(call("read_file", path="a")), schema)
    jsonschema.validate({"answer": "x"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(call("read_file", colour="red")), schema)


def test_the_gbnf_names_every_tool_and_is_plain_gbnf(tools):
    g = ToolGrammar(tools)
    assert g.gbnf.startswith("root ::= call | answer")
    for name in tools:
        assert f'\\"{name}\\"' in g.gbnf
    assert "%json" not in g.gbnf and "::=" in g.gbnf


class GrammarScripted:
    """A scripted model that says it applies grammars and records what it was given."""

    supports_grammar = True

    def __init__(self, outputs):
        from assistant.models.scripted import ScriptedModel

        self.inner = ScriptedModel(outputs)
        self.name, self.context_window, self.grammars = "scripted-grammar", 8192, []

    def stream(self, messages, **kwargs):
        self.grammars.append(kwargs.get("grammar"))
        return self.inner.stream(messages, **kwargs)


@pytest.mark.parametrize("flag", [True, False])
def test_the_agent_passes_the_grammar_only_when_constrained(make_session, flag):
    from assistant.events import Answer, ToolCall

    quoted = "Run this: " + call("list_files")
    session = make_session([], approval="auto", constrain=flag)
    model = GrammarScripted([quoted, "Done."])
    session.agent.model = model
    events = list(session.agent.run_turn("How do I list files?"))
    if flag:  # strict reading: the reply opens with text, so it is the answer, and nothing runs
        assert isinstance(model.grammars[0], ToolGrammar)
        assert not [e for e in events if isinstance(e, ToolCall)]
        assert [e.text for e in events if isinstance(e, Answer)] == [quoted]
    else:  # free decoding: the tolerant parser finds the call inside the text
        assert model.grammars[0] is None
        assert [e.name for e in events if isinstance(e, ToolCall)] == ["list_files"]


def test_a_backend_without_grammars_is_never_read_strictly(make_session):
    from assistant.events import ToolCall

    session = make_session(["Sure: " + call("list_files"), "Done."], approval="auto")
    assert session.settings.constrain is True
    events = list(session.agent.run_turn("list files"))
    assert [e.name for e in events if isinstance(e, ToolCall)] == ["list_files"]


def test_logits_wider_than_the_tokenizer_are_masked_beyond_it(tools, ll_tok, byte_tokenizer):
    """Models often pad their vocabulary (Qwen2.5: 151936 logits, 151665 tokens); the padding is never allowed."""
    import torch

    c = Constraint(ToolGrammar(tools), ll_tok)
    width = len(byte_tokenizer) + 40
    masked = c.mask(torch.zeros(1, width))
    assert masked.shape == (1, width)
    assert torch.isinf(masked[0, len(byte_tokenizer):]).all()
    assert torch.isfinite(masked).any()


def test_rule_names_that_sanitise_alike_stay_apart(ll_tok, byte_tokenizer):
    from types import SimpleNamespace

    obj = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    tools = {"git": SimpleNamespace(name="git", parameters={"type": "object", "properties": {"log": obj},
                                                             "required": ["log"]}),
             "git_log": SimpleNamespace(name="git_log", parameters={"type": "object", "properties": {
                 "path": {"type": "string"}}, "required": ["path"]})}
    g = ToolGrammar(tools)
    assert accepts(g, ll_tok, byte_tokenizer, call("git", log={"n": 1}))
    assert accepts(g, ll_tok, byte_tokenizer, call("git_log", path="a"))
    assert not accepts(g, ll_tok, byte_tokenizer, call("git", log={"path": "a"}))


def test_the_agent_never_runs_a_call_cut_off_at_the_budget(make_session):
    """A call still open when --max-new-tokens runs out (the model looped inside a string) is a format error."""
    from assistant.events import Observation, ToolCall

    session = make_session([], approval="auto")
    session.agent.model = GrammarScripted(['{"tool_calls": [{"name": "write_file", "arguments": {"path": "a.txt", '
                                           '"content": "the first half of', "Sorry."])
    events = list(session.agent.run_turn("Write a.txt"))
    assert not [e for e in events if isinstance(e, ToolCall)]
    assert any("cut off" in e.text for e in events if isinstance(e, Observation))
    assert not (session.context.workspace.root / "a.txt").exists()
