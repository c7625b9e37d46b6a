"""The system prompt and the few-shot examples that teach a small model the tool-call format.

Measured on the embedded 135M model (see docs/prompting.md): full JSON schemas in the system prompt and
examples that end in answers made it answer without calling; a short signature list, one complete example
(call, observation, answer) and four call-only examples made it call tools, and a separate "Now answer my
request in plain text." after the last observation of a turn made it answer after one.
"""

from __future__ import annotations

import json

from assistant.tools import Tool

CALL_FORMAT = '{"tool_calls": [{"name": "TOOL_NAME", "arguments": {...}}]}'
FINAL_MARK = "Now answer my request in plain text."

SYSTEM = """You are a coding assistant working in the user's project folder.
To use a tool, reply with only this JSON: {call_format}
After the Observation, answer the user in plain text.
Tools:
{tools}
"""

# (request, tool, arguments, observation, answer); the first is shown whole, the rest as calls only.
EXAMPLES = [
    ("How many lines does setup.cfg have?", "run_command", {"command": "wc -l setup.cfg"},
     "exit status 0\nstdout:\n12 setup.cfg", "setup.cfg has 12 lines."),
    ("Which files are here?", "list_files", {"path": "."}, None, None),
    ("What is 3**5? Use Python.", "run_python", {"code": "print(3**5)"}, None, None),
    ("Read setup.cfg.", "read_file", {"path": "setup.cfg"}, None, None),
    ("Run git status.", "run_command", {"command": "git status"}, None, None),
]


def _type(schema: dict) -> str:
    if "anyOf" in schema:
        return "|".join(_type(s) for s in schema["anyOf"])
    if schema.get("type") == "array":
        return _type(schema.get("items", {})) + "[]"
    return schema.get("type", "any")


def signature(tool: Tool) -> str:
    """`name(arg: type, opt: type=default): first line of the description` from the tool's JSON schema."""
    args = []
    for pname, schema in tool.parameters["properties"].items():
        default = f"={json.dumps(schema['default'])}" if "default" in schema else ""
        args.append(f"{pname}: {_type(schema)}{default}")
    return f"- {tool.name}({', '.join(args)}): {tool.description.splitlines()[0]}"


def observation_message(name: str, text: str) -> dict:
    return {"role": "user", "content": f"Observation from {name}:\n{text}"}


def final_message() -> dict:
    """Sent after the last observation a turn allows: a message of its own (the model echoed it when appended)."""
    return {"role": "user", "content": FINAL_MARK}


def call_message(name: str, arguments: dict) -> dict:
    return {"role": "assistant", "content": json.dumps({"tool_calls": [{"name": name, "arguments": arguments}]})}


def system_message(tools: dict[str, Tool], workspace: str, notes: list[str] = (), custom: str | None = None) -> dict:
    listing = "\n".join(signature(t) for t in tools.values())
    text = (custom or SYSTEM).replace("{workspace}", workspace).replace("{call_format}", CALL_FORMAT)
    text = text.replace("{tools}", listing)
    if notes:
        text += "Notes the user asked you to remember:\n" + "\n".join(notes) + "\n"
    return {"role": "system", "content": text}


def few_shot(tools: dict[str, Tool]) -> list[dict]:
    messages = []
    for request, tool, args, observation, answer in EXAMPLES:
        if tool not in tools:
            continue
        messages += [{"role": "user", "content": request}, call_message(tool, args)]
        if observation is not None:
            messages += [observation_message(tool, observation), final_message(),
                         {"role": "assistant", "content": answer}]
    return messages
