"""`assistant bench tools`: how often the model answers a request that needs a tool with a valid call to the right
tool, with and without the tool grammar. Figures, not a test.

Each prompt of the set (tests/data/tool_eval.jsonl: a request, the expected tool, other acceptable tools) is put
to the model once per mode as the first turn of a conversation, built exactly as the agent builds it (system
prompt, few-shot examples); the reply is classified, nothing is run:
  valid call    the reply is a tool call that parses and validates against the tool's schema
  invalid call  the reply tries to call a tool but the call does not parse or validate (FormatError)
  cut           a call still open when --max-new-tokens ran out (cut off; the agent does not run it)
  answer        plain text, no call
Reported per mode: valid-call rate (valid calls / calls the model finished), cut at budget (count), valid of
tried (valid / all calls tried, cut ones included), right-tool rate (valid calls to an acceptable tool / all
prompts), call rate, seconds per reply.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from assistant.errors import AssistantError, FormatError

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def load_set(path: Path) -> list[dict]:
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise AssistantError(f"cannot read the tool-use set {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise AssistantError(f"{path}: not JSON lines ({exc.msg})") from None
    for row in rows:
        if not {"prompt", "tool"} <= set(row):
            raise AssistantError(f"{path}: every line needs \"prompt\" and \"tool\"")
    return rows


def classify(reply: str, tools: dict, constrained: bool) -> tuple[str, str | None]:
    """('valid' | 'invalid' | 'answer', tool name of the first call), read as the agent reads it."""
    from assistant.grammar import parse_constrained
    from assistant.toolcalls import parse_tool_calls

    try:
        calls = (parse_constrained if constrained else parse_tool_calls)(reply, tools)
    except FormatError:
        return "invalid", None
    return ("valid", calls[0].name) if calls else ("answer", None)


def bench_tools(settings, *, data: Path | None = None, limit: int | None = None, modes=("constrained", "free"),
                out=sys.stdout, command: str = "assistant bench tools") -> int:
    from assistant import prompts
    from assistant.grammar import ToolGrammar
    from assistant.loader import load_plugins
    from assistant.tools import select_tools
    from assistant.models.builtin import load_model

    rows = load_set(data or DATA / "tool_eval.jsonl")[:limit]
    registry = load_plugins()
    registry.tools = select_tools(registry.tools, settings.tools)  # --tools: what the agent would be given
    tools = registry.tools
    grammar = ToolGrammar(tools)
    model = load_model(settings, registry)
    model.wait()
    if "constrained" in modes and not getattr(model, "supports_grammar", False):
        print(f"note: {model.name} does not apply grammars; 'constrained' is measured as free decoding", file=out)
    workspace = str(DATA / "tool_eval_workspace")
    base = [prompts.system_message(tools, workspace)] + prompts.few_shot(tools)
    results: dict[str, list[dict]] = {mode: [] for mode in modes}
    show = sys.stderr.isatty()
    for i, row in enumerate(rows, 1):
        accepted = {row["tool"], *row.get("also", [])}
        for mode in modes:
            constrained = mode == "constrained"
            start = time.monotonic()
            reply = "".join(model.stream(base + [{"role": "user", "content": row["prompt"]}],
                                         max_new_tokens=settings.max_new_tokens, stop=["\nObservation:"],
                                         temperature=0.0, grammar=grammar if constrained else None))
            kind, name = classify(reply, tools, constrained)
            tokens = getattr(getattr(model, "last_usage", None), "completion_tokens", 0)
            if kind == "invalid" and tokens >= settings.max_new_tokens:
                kind = "cut"  # a call still open when the token budget ran out
            results[mode].append({"id": row.get("id", str(i)), "kind": kind, "tool": name, "tokens": tokens,
                                  "right": kind == "valid" and name in accepted, "expected": row["tool"],
                                  "seconds": round(time.monotonic() - start, 3), "reply": reply})
        if show:
            print(f"\r  {i}/{len(rows)} prompts", end="", file=sys.stderr, flush=True)
    if show:
        print("\r\033[K", end="", file=sys.stderr)
    report(results, model.name, len(rows), out, command)
    from assistant.charts import Panel, save_run

    sums = {mode: summary(items) for mode, items in results.items()}
    save_run("bench-tools", {"model": model.name, "command": command, "results": results},
             f"tool use: {model.name}, {len(rows)} prompts", [
                 Panel("right tool (% of prompts)", list(sums), [100 * s["right_tool_rate"] for s in sums.values()],
                       fmt="{:.0f}%", ylim=(0, 110)),
                 Panel("valid calls (% of calls tried)", list(sums),
                       [100 * s["usable_call_rate"] for s in sums.values()], fmt="{:.0f}%", ylim=(0, 110))], out)
    return 0


def summary(items: list[dict]) -> dict:
    kinds = Counter(r["kind"] for r in items)
    finished = kinds["valid"] + kinds["invalid"]
    tried = finished + kinds["cut"]
    n = len(items) or 1
    return {"prompts": len(items), "valid": kinds["valid"], "invalid": kinds["invalid"], "cut": kinds["cut"],
            "answers": kinds["answer"], "valid_call_rate": kinds["valid"] / finished if finished else 0.0,
            "usable_call_rate": kinds["valid"] / tried if tried else 0.0, "call_rate": tried / n,
            "right_tool_rate": sum(r["right"] for r in items) / n,
            "seconds_median": statistics.median(r["seconds"] for r in items) if items else 0.0}


def report(results: dict[str, list[dict]], model: str, prompts: int, out, command: str) -> None:
    print(f"model: {model}   prompts: {prompts}   machine: {platform.machine()}, {os.cpu_count()} cpus", file=out)
    print(f"  {'mode':<12} {'calls tried':>11} {'valid-call rate':>15} {'cut at budget':>13} {'valid of tried':>14} "
          f"{'right tool':>10} {'answers':>8} {'s/reply':>8}", file=out)
    for mode, items in results.items():
        s = summary(items)
        print(f"  {mode:<12} {s['call_rate']:>11.0%} {s['valid_call_rate']:>15.0%} {s['cut']:>13} "
              f"{s['usable_call_rate']:>14.0%} {s['right_tool_rate']:>10.0%} {s['answers']:>8} "
              f"{s['seconds_median']:>8.2f}", file=out)
    for mode, items in results.items():
        by_tool: dict[str, list[bool]] = {}
        for r in items:
            by_tool.setdefault(r["expected"], []).append(r["right"])
        parts = ", ".join(f"{tool} {sum(v)}/{len(v)}" for tool, v in sorted(by_tool.items()))
        print(f"  right tool by expected tool ({mode}): {parts}", file=out)
    print(f"command: {command}", file=out)
