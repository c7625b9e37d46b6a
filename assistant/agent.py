"""The agent loop: the model reasons, calls a tool, sees the observation, and goes on until it answers."""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections import Counter
from typing import Iterator

from assistant import prompts
from assistant.errors import AssistantError, FormatError
from assistant.grammar import ToolGrammar, answer_text, parse_constrained
from assistant.events import Answer, Error, Event, Meta, Observation, Token, ToolCall
from assistant.text import clean_text
from assistant.toolcalls import Call, first_call_end, parse_tool_calls
from assistant.tools import ToolContext

log = logging.getLogger("assistant")
MAX_FORMAT_RETRIES = 3
MAX_SAME_CALL = 3
STOP = ["\nObservation:", "Observation from"]


REPEAT_NOTE = "[generation stopped: the model kept repeating the line above]"


def cut_loop(text: str, times: int = 10) -> str | None:
    """When the last `times` complete lines are one non-blank line repeated (a small model stuck), the text
    up to the first copy of that line, with a note; else None."""
    lines = text.split("\n")[:-1]
    tail = lines[-times:]
    if len(tail) < times or not tail[0].strip() or len(set(tail)) != 1:
        return None
    first = len(lines) - times
    while first > 0 and lines[first - 1] == tail[0]:
        first -= 1
    return "\n".join(lines[: first + 1] + [REPEAT_NOTE])


def resident_bytes() -> int | None:
    """This process's resident set size (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def summarize(text: str, limit: int) -> str:
    """Head and tail of a long observation, with a marker saying how much the model does not see."""
    if limit <= 0 or len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters not shown ...]\n{text[-half:]}"


class Agent:
    """One conversation: `run_turn(text)` yields the events of one user turn."""

    def __init__(self, model, registry, settings, context: ToolContext, notes: list[str] = (), memory=None):
        self.model = model
        self.registry = registry
        self.settings = settings
        self.context = context
        self.notes = list(notes)
        self.memory = memory  # assistant.memory_bank.memory.Memory, or None (--no-memory)
        context.emit = self._emit  # tools may record what they found (the repair tool's verdict)
        self.reset()

    def reset(self) -> None:
        tools = self.registry.tools
        self.messages: list[dict] = []
        if not self.settings.disable_system_prompt:
            self.messages.append(prompts.system_message(tools, self.context.workspace.root.as_posix(),
                                                        self.notes, self.settings.system_prompt))
        self.messages += prompts.few_shot(tools)
        self.grammar = ToolGrammar(tools) if tools else None
        self.turns = 0
        self._last: Event | None = None

    def _emit(self, event: Event) -> Event:
        self.registry.hook.on_event(event=event)
        self._last = event
        return event

    def run_turn(self, text: str) -> Iterator[Event]:
        try:
            yield from self._turn(text)
        finally:  # for watchers (the dashboard): what the session holds after each turn, however it ended
            self._emit_resources()

    def resources(self) -> dict:
        """The process's resident memory, the model, the memory bank's size and the sandbox layer; never waits."""
        describe = getattr(self.model, "describe", None)
        data = {"rss_bytes": resident_bytes(), "model": describe() if describe else {"name": getattr(self.model, "name", "")}}
        if self.memory is not None:
            data["memory"] = self.memory.describe()
        box = self.context.sandbox
        if box is not None:
            data["sandbox"] = {"policy": box.policy, "layer": box.chosen_layer}
        return data

    def _emit_resources(self) -> None:
        """Never raises: it runs in run_turn's finally, where an exception would replace the turn's own (or make
        closing the generator fail), and a closed session's log is no reason to."""
        try:
            data = self.resources()
        except Exception as exc:  # noqa: BLE001 - a gauge must never end a turn
            data = {"error": f"{type(exc).__name__}: {exc}"}
        try:
            self.registry.hook.on_event(event=Meta("resources", data))
        except Exception as exc:  # noqa: BLE001
            log.debug("the resources record was not written: %s", exc)

    def _turn(self, text: str) -> Iterator[Event]:
        text = clean_text(text)
        self.turns += 1
        yield self._emit(Meta("user", {"text": text, "turn": self.turns}))
        recalled = yield from self._recall(text)
        self.messages.append({"role": "user", "content": recalled + text})
        format_errors, actions, seen, nudged = 0, 0, Counter(), False
        s = self.settings
        try:
            for _step in range(s.max_steps):
                constrained = self.constrained()
                output = yield from self._generate(constrained)
                self.messages.append({"role": "assistant", "content": output})
                try:
                    parse = parse_constrained if constrained else parse_tool_calls
                    calls = parse(output, self.registry.tools)
                except FormatError as exc:
                    format_errors += 1
                    yield self._emit(Observation("format", f"Error: {exc}", ok=False))
                    if format_errors > MAX_FORMAT_RETRIES:
                        yield self._emit(Error(f"the model sent {format_errors} malformed tool calls; turn ended"))
                        return
                    self.messages.append({"role": "user", "content": f"Error: {exc}\nReply with one valid tool call "
                                          f"like {prompts.CALL_FORMAT}, or answer in plain text."})
                    continue
                if not calls:
                    # Small models sometimes echo the loop's own instruction; it is never part of an answer.
                    answer = answer_text(output).replace(prompts.FINAL_MARK, "").strip()
                    if not answer:
                        yield self._emit(Error("the model gave an empty answer"))
                        return
                    yield self._emit(Answer(answer))
                    yield from self._keep(text, answer)
                    return
                room = s.max_actions_per_turn - actions
                if room <= 0:
                    if nudged:
                        yield self._emit(Error(f"the model kept calling tools after the turn's {s.max_actions_per_turn} "
                                               "allowed actions (raise --max-actions-per-turn)"))
                        return
                    nudged = True
                    self.messages.append(prompts.final_message())
                    continue
                for call in calls[:room]:
                    seen[call.key()] += 1
                    if seen[call.key()] >= MAX_SAME_CALL:
                        yield self._emit(Error(f"the model repeated the same {call.name} call {MAX_SAME_CALL} times; turn ended"))
                        return
                    actions += 1
                    yield self._emit(ToolCall(call.name, call.arguments, call.id))
                    obs = self._execute(call)
                    yield self._emit(obs)
                    self.messages.append(prompts.observation_message(call.name, obs.text))
                if len(calls) > room:
                    self.messages.append({"role": "user", "content": f"({len(calls) - room} further calls were not run: "
                                          f"at most {s.max_actions_per_turn} per turn.)"})
                if actions >= s.max_actions_per_turn:
                    self.messages.append(prompts.final_message())
            yield self._emit(Error(f"no answer after {s.max_steps} model steps (raise --max-steps)"))
        except KeyboardInterrupt:
            yield from self._interrupted()
        except GeneratorExit:  # the consumer stopped iterating (Ctrl-C in the REPL)
            if not isinstance(self._last, (Answer, Error)):  # not merely closed after the turn's last event
                self._emit(Meta("interrupted", {"turn": self.turns, "by": "consumer"}))
            raise
        except AssistantError as exc:
            yield self._emit(Error(str(exc)))
        except Exception as exc:  # noqa: BLE001 - a bug must end the turn, not the session
            self._emit(Meta("internal_error", {"traceback": traceback.format_exc()}))
            yield self._emit(Error(f"internal error: {type(exc).__name__}: {exc} (traceback in the audit log)"))

    def _recall(self, text: str) -> Iterator[Event]:
        """Memories relevant to this request (a "recall" event), returned as a block to put before it ("" when
        none or memory is off)."""
        if self.memory is None:
            return ""
        from assistant.memory_bank.memory import recall_block

        try:
            recalled = self.memory.recall(text, exclude=self.notes + [m["content"] for m in self.messages])
        except Exception as exc:  # noqa: BLE001 - memory trouble costs the recall, never the turn
            yield self._emit(Meta("memory_error", {"error": f"recall failed: {exc}"}))
            return ""
        if recalled:
            yield self._emit(Meta("recall", {"items": [{"kind": r.kind, "when": r.when, "text": r.text,
                                                        "score": round(r.score, 3)} for r in recalled]}))
        return recall_block(recalled)

    def _keep(self, text: str, answer: str) -> Iterator[Event]:
        if self.memory is None:
            return
        try:
            self.memory.keep_turn(text, answer)
        except Exception as exc:  # noqa: BLE001 - the answer stands even when it cannot be kept
            yield self._emit(Meta("memory_error", {"error": f"this turn was not kept in memory: {exc}"}))

    def _interrupted(self) -> Iterator[Event]:
        self.messages.append({"role": "user", "content": "(The user interrupted this turn.)"})
        yield self._emit(Meta("interrupted", {"turn": self.turns}))
        yield self._emit(Error("interrupted"))

    def constrained(self) -> bool:
        """Decode under the tool grammar? When --constrain is on and the backend applies grammars."""
        return bool(self.settings.constrain and self.grammar and getattr(self.model, "supports_grammar", False))

    def _generate(self, constrained: bool = False) -> Iterator[Event]:
        """Stream one model reply, yielding Token events; stops early once a complete tool call is out."""
        s = self.settings
        started, pieces = time.monotonic(), []
        stream = self.model.stream(self.messages, max_new_tokens=s.max_new_tokens, stop=STOP,
                                   temperature=s.temperature, grammar=self.grammar if constrained else None)
        try:
            for piece in stream:
                pieces.append(piece)
                yield self._emit(Token(piece))
                if "}" in piece and s.max_actions_per_turn == 1:
                    end = first_call_end("".join(pieces), self.registry.tools)
                    if end is not None:
                        pieces = ["".join(pieces)[:end]]
                        break
                if "\n" in piece:
                    kept = cut_loop("".join(pieces))
                    if kept is not None:
                        pieces = [kept]
                        break
        finally:
            close = getattr(stream, "close", None)
            if close:
                close()
            output = "".join(pieces)
            usage = getattr(self.model, "last_usage", None)
            data = {"text": output, "seconds": round(time.monotonic() - started, 4), "constrained": constrained}
            if usage:
                data.update(prompt_tokens=usage.prompt_tokens, cached_tokens=usage.cached_tokens,
                            completion_tokens=usage.completion_tokens,
                            tokens_per_second=round(usage.tokens_per_second, 2),
                            first_token_seconds=usage.first_token_seconds)
            self._emit(Meta("model_output", data))
        return output

    def _execute(self, call: Call) -> Observation:
        ctx = self.context
        veto = self.registry.hook.before_tool_call(call=call, context=ctx)
        start = time.monotonic()
        if veto:
            text, ok = f"Denied: {veto}", False
        else:
            try:
                text, ok = str(call.tool(call.arguments, ctx)), True
            except KeyboardInterrupt:
                raise
            except AssistantError as exc:
                text, ok = f"Error: {exc}", False
            except Exception as exc:  # noqa: BLE001 - a failing tool is an observation, never a crash
                text, ok = f"Error: {type(exc).__name__}: {exc}", False
                self._emit(Meta("tool_exception", {"tool": call.name, "traceback": traceback.format_exc()}))
        self.registry.hook.after_tool_call(call=call, result=text, context=ctx)
        text = clean_text(text)
        shown = summarize(text, self.settings.observation_summary_chars)
        return Observation(call.name, shown, ok=ok, seconds=round(time.monotonic() - start, 4), id=call.id,
                           full=text if shown != text else None)
