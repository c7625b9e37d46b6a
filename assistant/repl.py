"""The interactive REPL (prompt-toolkit): history, multiline input, completion, streaming, slash commands.

Enter sends; Alt-Enter (or Esc then Enter) starts a new line. Ctrl-C cancels the running generation or tool and
returns to the prompt; Ctrl-D exits.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Callable

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import Completer, Completion, PathCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory
from prompt_toolkit.key_binding import KeyBindings

from assistant.errors import AssistantError
from assistant.events import Answer, Error, Meta, Observation, Token, ToolCall
from assistant.home import home
from assistant.text import escape_control as safe

BUILTIN_HELP = {
    "help": "this list",
    "tools": "the tools the model can call",
    "model": "show the model, or /model SPEC to switch",
    "clear": "forget the conversation (the audit log keeps it)",
    "history": "the conversation so far",
    "remember": "/remember NOTE: keep a note for later sessions",
    "memory": "the notes and what memory holds; /memory search QUERY; /memory forget N",
    "audit": "the audit log of this session and whether its chain verifies",
    "undo": "restore the files the last tool call changed",
    "exit": "leave (Ctrl-D works too)",
}


class Style:
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled else text


class ReplCompleter(Completer):
    """Slash commands at the start of the line; file paths for the word under the cursor elsewhere."""

    def __init__(self, names: Callable[[], list[str]], workspace: Path):
        self.names = names
        self.paths = PathCompleter(get_paths=lambda: [str(workspace)], expanduser=True)

    def get_completions(self, document: Document, complete_event):
        text = document.text_before_cursor
        if text.startswith("/") and " " not in text:
            for name in self.names():
                if name.startswith(text[1:]):
                    yield Completion("/" + name, start_position=-len(text))
            return
        word = document.get_word_before_cursor(WORD=True)
        if word and ("/" in word or "." in word):
            sub = Document(word, len(word))
            yield from self.paths.get_completions(sub, complete_event)


class Repl:
    def __init__(self, settings, *, input=None, output=None, out=None):
        from assistant.session import Session

        self.out = out or sys.stdout
        self.style = Style(self.out.isatty())
        self.prompt_session = PromptSession(
            history=FileHistory(str(self._history_path())), input=input, output=output,
            multiline=False, key_bindings=self._bindings(), bottom_toolbar=self._toolbar, refresh_interval=0.5,
            completer=None, complete_while_typing=False,
        )
        self.ask_session = PromptSession(input=input, output=output)  # answers stay out of the history file
        self.session = Session(settings, interactive=True, ask=self.ask)
        self.prompt_session.completer = ReplCompleter(self._command_names, self.session.workspace.root)
        self.running = True

    @staticmethod
    def _history_path() -> Path:
        home().mkdir(parents=True, exist_ok=True)
        return home() / "history"

    @staticmethod
    def _bindings() -> KeyBindings:
        kb = KeyBindings()

        @kb.add("escape", "enter")
        def _(event):
            event.current_buffer.insert_text("\n")

        return kb

    def _command_names(self) -> list[str]:
        return sorted(set(BUILTIN_HELP) | set(self.session.registry.commands))

    def _toolbar(self) -> str:
        model = self.session.model
        state = getattr(model, "state", "ready")
        if state == "failed":
            state = "failed: " + (getattr(model, "error", "") or "")[:60]
        usage = getattr(model, "last_usage", None)
        speed = f" | {usage.tokens_per_second:.1f} tok/s" if usage and usage.completion_tokens else ""
        return f" {self.session.model_name} | {state}{speed} | {self.session.workspace.root}  (Alt-Enter: new line, /help)"

    def write(self, text: str = "", end: str = "\n") -> None:
        self.out.write(text + end)
        self.out.flush()

    def ask(self, question: str) -> bool:
        self.write(self.style("33", safe(question)))
        try:
            reply = self.ask_session.prompt("allow? [y/N] ")
        except (EOFError, KeyboardInterrupt):
            return False
        return reply.strip().lower() in ("y", "yes")

    # --- the loop ------------------------------------------------------------------------------------

    def run(self) -> int:
        self.write(f"assistant: {self.session.model_name} in {self.session.workspace.root}. /help for commands, Ctrl-D to leave.")
        try:
            while self.running:
                try:
                    text = self.prompt_session.prompt("› ")
                except KeyboardInterrupt:
                    continue
                except EOFError:
                    break
                text = text.strip()
                if not text:
                    continue
                try:
                    if text.startswith("/"):
                        self.command(text)
                    else:
                        self.turn(text)
                except AssistantError as exc:
                    self.write(self.style("31", f"error: {exc}"))
        finally:
            self.session.close()
        return 0

    def turn(self, text: str) -> None:
        model = self.session.model
        if getattr(model, "state", "ready") == "loading":
            self.write(self.style("2", f"(waiting for {self.session.model_name} to load ...)"))
        events = self.session.agent.run_turn(text)
        self._streamed = ""
        try:
            for event in events:
                self.render(event)
        except KeyboardInterrupt:
            events.close()
            self.write(self.style("33", "\n^C: turn interrupted"))

    def render(self, event) -> None:
        s = self.style
        if isinstance(event, Token):
            self.write(s("2", safe(event.text)), end="")
            self._streamed += event.text
            return
        streamed, self._streamed = self._streamed, ""
        if streamed and not streamed.endswith("\n"):
            self.write()
        if isinstance(event, ToolCall):
            self.write(s("36", f"→ {event.name} {json.dumps(event.arguments, ensure_ascii=False)[:300]}"))
        elif isinstance(event, Observation):
            lines = safe(event.text).splitlines()
            shown = "\n".join(lines[:20]) + (f"\n… ({len(lines) - 20} more lines)" if len(lines) > 20 else "")
            self.write(s("2" if event.ok else "31", shown))
        elif isinstance(event, Answer):
            if event.text != streamed.strip():  # already on screen as it streamed, unless it was cleaned up
                self.write(s("1", safe(event.text)))
        elif isinstance(event, Meta) and event.name == "recall":
            for item in event.data["items"]:
                self.write(s("2", safe(f"(recalled {item['kind']} {item['when']}: {item['text'][:100]})")))
        elif isinstance(event, Meta) and event.name == "memory_error":
            self.write(s("33", safe(f"warning: {event.data['error']}")))
        elif isinstance(event, Error) and event.message == "interrupted":
            self.write(s("33", "^C: turn interrupted"))
        elif isinstance(event, Error):
            self.write(s("31", f"error: {safe(event.message)}"))

    # --- slash commands --------------------------------------------------------------------------------

    def command(self, line: str) -> None:
        name, _, rest = line[1:].partition(" ")
        rest = rest.strip()
        handler = getattr(self, f"cmd_{name}", None)
        command = self.session.registry.commands.get(name)
        if handler is None and command is None:
            self.write(self.style("31", f"unknown command /{name}; /help lists them"))
            return
        try:
            result = handler(rest) if handler else command.function(rest, self.session)
        except AssistantError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug in a command (a plugin's too) must not end the session
            self.write(self.style("31", f"error: /{name} failed: {type(exc).__name__}: {safe(str(exc))}"))
            return
        if result:
            self.write(str(result))

    def cmd_help(self, rest: str) -> None:
        for name, text in BUILTIN_HELP.items():
            self.write(f"/{name:<10} {text}")
        for name, cmd in sorted(self.session.registry.commands.items()):
            self.write(f"/{name:<10} {cmd.help} [{cmd.plugin}]")
        self.write("Enter sends; Alt-Enter adds a line; Ctrl-C cancels a running turn; Ctrl-D leaves.")

    def cmd_tools(self, rest: str) -> None:
        labels = {"ask": " (asks first)", "auto": " (runs without asking: --approval auto)",
                  "never": " (turned off: --approval never)"}
        for tool in self.session.registry.tools.values():
            flag = labels.get(self.session.settings.approval, "") if tool.needs_approval else ""
            self.write(f"{tool.name:<14} {tool.description.splitlines()[0]}{flag}  [{tool.plugin}]")
        try:
            self.write(f"commands and code run in the {self.session.sandbox.layer} sandbox layer "
                       f"(--sandbox {self.session.settings.sandbox}); `assistant doctor` says more")
        except AssistantError as exc:
            self.write(f"commands and code cannot run: {exc}")

    def cmd_model(self, rest: str) -> None:
        if rest:
            from assistant.models.builtin import load_model

            old = self.session.settings.model
            self.session.settings.model = rest
            try:
                model = load_model(self.session.settings, self.session.registry)
            except AssistantError:
                self.session.settings.model = old
                raise
            self.session.model = self.session.agent.model = model
            self.write(f"switching to {rest} (loading in the background)")
            return
        model = self.session.model
        ready = getattr(model, "state", "ready") == "ready"
        decoding = getattr(model, "decoding", None) if ready else None  # only a loaded model is asked
        constrained = ("tool grammar on" if self.session.agent.constrained() else "tool grammar off") if ready else ""
        extra = ", ".join(x for x in (decoding, constrained) if x)
        self.write(f"{self.session.model_name}: {getattr(model, 'state', 'ready')}, "
                   f"context window {model.context_window or '?'} tokens, "
                   f"load {getattr(model, 'load_seconds', None) or 0:.1f}s" + (f"; {extra}" if extra else ""))

    def cmd_clear(self, rest: str) -> None:
        self.session.agent.reset()
        self.session.registry.hook.on_event(event=Meta("clear", {}))
        self.write("conversation cleared")

    def cmd_history(self, rest: str) -> None:
        skip = len(self.session.agent.messages) - self._conversation_length()
        for msg in self.session.agent.messages[skip:]:
            self.write(f"{msg['role']:>9}: {msg['content'][:500]}")

    def _conversation_length(self) -> int:
        from assistant import prompts

        agent = self.session.agent
        preamble = (0 if agent.settings.disable_system_prompt else 1) + len(prompts.few_shot(agent.registry.tools))
        return len(agent.messages) - preamble

    def cmd_remember(self, rest: str) -> None:
        from assistant.memory_bank.notes import remember

        memory = self.session.memory
        self.write("remembered: " + (memory.remember(rest) if memory else remember(rest)))

    def cmd_memory(self, rest: str) -> None:
        from assistant.memory_bank.memory import memory_command

        self.write(memory_command(rest, self.session.memory))

    def cmd_audit(self, rest: str) -> None:
        from assistant.commands import render_record
        from assistant.logs.audit import read_records, verify

        path = self.session.audit.path
        count, problem = verify(path)
        self.write(f"{path}: {count} records, " + (f"BROKEN at line {problem.line}: {problem.message}" if problem else "chain OK"))
        for rec in list(read_records(path))[-10:]:
            self.write(render_record(rec))

    def cmd_undo(self, rest: str) -> None:
        done = self.session.undo.undo()
        if done is None:
            self.write("nothing to undo")
            return
        label, paths = done
        self.session.registry.hook.on_event(event=Meta("undo", {"label": label, "paths": [str(p) for p in paths]}))
        names = ", ".join(str(p.relative_to(self.session.workspace.root)) for p in paths) or "no files"
        self.write(f"undid {label}: restored {names}")

    def cmd_exit(self, rest: str) -> None:
        self.running = False

    cmd_quit = cmd_exit


def run_repl(settings, **kwargs) -> int:
    # Ctrl-C must cancel a turn even when we were started with SIGINT ignored (e.g. as a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return Repl(settings, **kwargs).run()
