"""The grammar of a reply: a plain-text answer, or exactly one tool call whose arguments fit the tool's schema.

One GBNF grammar is built from the tools' JSON schemas. In-process models decode under it through llguidance
(a token mask before each choice), llama.cpp takes the same GBNF (its server's `grammar` field, or
llama-cpp-python), and vLLM takes it as a structured-output grammar. A reply made under it is classified by its
first character: `{` opens the call, anything else is the answer (so JSON inside an answer is never run).

Arguments follow the schema's property order, required ones always present, optional ones optional; whitespace
between tokens is at most one space, so a small model cannot wander off into blank output inside a call.
"""

from __future__ import annotations

import json
import re
from typing import Any

from assistant.errors import FormatError

ANSWER_START = "[^{ \\t\\r\\n]"
COMMON = r'''ws ::= " "?
string ::= "\"" char* "\""
char ::= [^"\\\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])
integer ::= "-"? ("0" | [1-9] [0-9]*)
number ::= integer ("." [0-9]+)? ([eE] [-+]? [0-9]+)?
boolean ::= "true" | "false"
null ::= "null"
value ::= object | array | string | number | boolean | null
object ::= "{" ws ( string ws ":" ws value ( ws "," ws string ws ":" ws value )* )? ws "}"
array ::= "[" ws ( value ( ws "," ws value )* )? ws "]"
'''


class _Builder:
    def __init__(self) -> None:
        self.rules: dict[str, str] = {}

    def rule(self, name: str, body: str) -> str:
        base = name = re.sub(r"[^a-zA-Z0-9-]", "-", name)
        n = 1
        while name in self.rules:  # tool "git" property "log" and tool "git_log" both sanitise to "git-log"
            n += 1
            name = f"{base}-{n}"
        self.rules[name] = body
        return name

    def value(self, schema: Any, name: str) -> str:
        """The rule (or inline expression) for a value of `schema`."""
        if not isinstance(schema, dict):
            return "value"
        if "enum" in schema:
            return "(" + " | ".join(_literal(v) for v in schema["enum"]) + ")"
        if "const" in schema:
            return _literal(schema["const"])
        for key in ("anyOf", "oneOf"):
            if key in schema:
                parts = [self.value(s, f"{name}-{i}") for i, s in enumerate(schema[key])]
                return "(" + " | ".join(parts) + ")"
        kind = schema.get("type")
        if isinstance(kind, list):
            return "(" + " | ".join(self.value({**schema, "type": k}, f"{name}-{k}") for k in kind) + ")"
        if kind == "string":
            return "string"
        if kind == "integer":
            return "integer"
        if kind == "number":
            return "number"
        if kind == "boolean":
            return "boolean"
        if kind == "null":
            return "null"
        if kind == "array":
            item = self.value(schema.get("items", {}), f"{name}-item")
            body = f'"[" ws ( {item} ( ws "," ws {item} )* )? ws "]"'
            if schema.get("minItems", 0) >= 1:
                body = f'"[" ws {item} ( ws "," ws {item} )* ws "]"'
            return self.rule(name, body)
        if kind == "object" and "properties" in schema:
            return self.rule(name, self.object(schema, name))
        if kind == "object":
            return "object"
        return "value"

    def object(self, schema: dict, name: str) -> str:
        """Properties in schema order; required ones always, optional ones each optional."""
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        fields = [(k, f'{_literal(k)} ws ":" ws {self.value(v, f"{name}-{k}")}', k in required) for k, v in props.items()]
        if not fields:
            return '"{" ws "}"'

        def tail(i: int) -> str:
            """Fields i.. after at least one field was written (each preceded by a comma)."""
            out = []
            for _key, text, req in fields[i:]:
                piece = f'ws "," ws {text}'
                out.append(piece if req else f"( {piece} )?")
            return " ".join(out)

        # The first field written is the first required one, or any optional one before it.
        starts = []
        for i, (_key, text, req) in enumerate(fields):
            starts.append(f"{text} {tail(i + 1)}".strip())
            if req:
                break
        else:
            starts.append("")  # nothing required: the empty object
        alternatives = " | ".join(f"( {s} )" if s else '""' for s in starts)
        return f'"{{" ws ( {alternatives} ) ws "}}"'


def _literal(value: Any) -> str:
    """A GBNF string literal matching exactly the JSON encoding of `value` (a key, a tool name, an enum value)."""
    encoded = json.dumps(value, ensure_ascii=False)
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ToolGrammar:
    """The reply grammar for a set of tools (each with .name and .parameters, a JSON schema)."""

    def __init__(self, tools: dict[str, Any]):
        if not tools:
            raise ValueError("a tool grammar needs at least one tool")
        self.tools = tools
        b = _Builder()
        calls = []
        for name, tool in tools.items():
            args = b.value({**tool.parameters, "type": "object"}, f"args-{name}")
            if args == "object":  # an object without declared properties
                args = b.rule(f"args-{name}", '"{" ws "}"')
            calls.append(b.rule(f"call-{name}", f'"{{" ws {_literal("name")} ws ":" ws {_literal(name)} ws "," ws '
                                                f'{_literal("arguments")} ws ":" ws {args} ws "}}"'))
        lines = [
            "root ::= call | answer",
            f'call ::= "{{" ws {_literal("tool_calls")} ws ":" ws "[" ws ( {" | ".join(calls)} ) ws "]" ws "}}"',
            f"answer ::= {ANSWER_START} [^\\x00]*",
        ]
        lines += [f"{k} ::= {v}" for k, v in b.rules.items()]
        self.gbnf = "\n".join(lines) + "\n" + COMMON
        self._lark: str | None = None

    @property
    def lark(self) -> str:
        """The same grammar in llguidance's Lark dialect (converted once)."""
        if self._lark is None:
            from llguidance.gbnf_to_lark import gbnf_to_lark

            self._lark = gbnf_to_lark(self.gbnf)
        return self._lark

    def json_schema(self) -> dict:
        """A JSON schema for servers that only constrain to JSON (`response_format`): the call envelope, or
        {"answer": "..."} for a plain answer."""
        calls = [{"type": "object", "properties": {"name": {"const": name}, "arguments": tool.parameters},
                  "required": ["name", "arguments"], "additionalProperties": False}
                 for name, tool in self.tools.items()]
        envelope = {"type": "object", "properties": {"tool_calls": {"type": "array", "items": {"anyOf": calls},
                                                                    "minItems": 1, "maxItems": 1}},
                    "required": ["tool_calls"], "additionalProperties": False}
        answer = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"],
                  "additionalProperties": False}
        return {"anyOf": [envelope, answer]}


def parse_constrained(text: str, tools: dict[str, Any]) -> list:
    """The calls in a reply made under the grammar: one call when it opens with `{` ({"answer": ...} from a
    JSON-only server is an answer), none otherwise. A call the token budget cut off (a small model can loop
    inside a string until it runs out) is a FormatError: it never runs."""
    from assistant.toolcalls import parse_tool_calls

    stripped = text.strip()
    if not stripped.startswith("{"):
        return []
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise FormatError(f"the tool call was cut off ({exc.msg} at character {exc.pos}); raise --max-new-tokens "
                          "or send a shorter call") from None
    if isinstance(value, dict) and set(value) == {"answer"}:
        return []
    return parse_tool_calls(stripped, tools)


def answer_text(text: str) -> str:
    """The answer of a reply from a JSON-only server ({"answer": ...}), or the text itself."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            return text
        if isinstance(value, dict) and set(value) == {"answer"} and isinstance(value["answer"], str):
            return value["answer"]
    return text


class Constraint:
    """Decoding state of one reply under a ToolGrammar: masks logits, follows the chosen tokens (llguidance)."""

    def __init__(self, grammar: ToolGrammar, tokenizer: Any):
        import llguidance
        import numpy as np

        self.matcher = llguidance.LLMatcher(tokenizer, grammar.lark, log_level=0)
        if self.matcher.is_error():
            raise ValueError(f"tool grammar rejected: {self.matcher.get_error()}")
        # The tokenizer's own size, which the mask must have; the model's logits may be longer (padded vocab).
        self.vocab_size = tokenizer.vocab_size
        words = (self.vocab_size + 31) // 32
        self._bits = np.zeros((1, words), dtype=np.int32)

    def mask(self, logits: Any) -> Any:
        """The (1, vocab) logits with every token the grammar does not allow next set to -inf."""
        import numpy as np
        import torch

        v = self._bits[0]
        self.matcher.unsafe_compute_mask_ptr(v.ctypes.data, v.size * v.itemsize)
        allowed = np.unpackbits(self._bits.view(np.uint8), bitorder="little")[: self.vocab_size]
        width = logits.shape[-1]
        allowed = allowed[:width] if len(allowed) >= width else np.pad(allowed, (0, width - len(allowed)))
        if not allowed.any():
            raise ValueError(f"the tool grammar allows no token here: {self.matcher.get_error()}")
        return logits.masked_fill(torch.from_numpy(allowed == 0), float("-inf"))

    def advance(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            raise ValueError(f"token {token} does not fit the tool grammar: {self.matcher.get_error()}")

    def done(self) -> bool:
        return self.matcher.is_stopped()


_TOKENIZERS: dict[int, Any] = {}


def ll_tokenizer(hf_tokenizer: Any) -> Any:
    """llguidance's view of a Hugging Face fast tokenizer (about a second to build; cached per tokenizer)."""
    key = id(hf_tokenizer)
    if key not in _TOKENIZERS:  # kept with its entry, so the id cannot be reused while cached
        import llguidance.hf

        _TOKENIZERS[key] = (hf_tokenizer, llguidance.hf.from_tokenizer(hf_tokenizer))
    return _TOKENIZERS[key][1]
