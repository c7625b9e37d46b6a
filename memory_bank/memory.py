"""What the assistant remembers across sessions, recalled by meaning into each turn's prompt.

- Notes (`--remember`, `/remember`): the global notes file (memory_bank/global.md, one timestamped line each,
  editable by hand) is the truth; the global vector store mirrors it, synced by content when memory starts.
- Turns: each answered request ("User: ... / Assistant: ...") goes to the workspace's store,
  <workspace>/.assistant/memory, so one project's conversations are recalled in that project only.
- Recall: the top-k records of both stores above a score threshold, minus what the prompt already holds (the
  pinned notes, this session's turns, near-duplicates of each other), each cut to recall_chars.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from assistant.errors import AssistantError
from assistant.home import subdir
from assistant.memory_bank import notes, workspace_memory_dir
from assistant.text import clip, distinct

log = logging.getLogger("assistant.memory")

TURN_CHARS = 2000  # a kept turn is cut to this many characters before it is embedded


@dataclass
class Recalled:
    kind: str
    when: str
    text: str
    score: float

    def line(self) -> str:
        return f"- [{self.kind} {self.when}] {self.text}".rstrip()


def global_memory_dir(settings) -> Path:
    return Path(settings.memory_vector_dir).expanduser() if settings.memory_vector_dir else (
        subdir("memory_bank") / "vector_store")


class Memory:
    def __init__(self, settings, embedder=None, session: str = ""):
        self.settings = settings
        self.session = session
        self._embedder = embedder
        self._stores: tuple | None = None
        self._ready = threading.Event()
        self._error: str | None = None
        self._failed = False
        self._thread: threading.Thread | None = None

    # The stores (numpy, faiss) are made on first use, in the start-up thread: not on the REPL's path.

    @property
    def embedder(self):
        if self._embedder is None:
            from assistant.memory_bank.embeddings import shared_embedder

            self._embedder = shared_embedder()
        return self._embedder

    def _made(self) -> tuple:
        if self._stores is None:
            from assistant.memory_bank.store import VectorStore

            self._stores = (VectorStore(global_memory_dir(self.settings), self.embedder),
                            VectorStore(workspace_memory_dir(self.settings.workspace), self.embedder))
        return self._stores

    @property
    def global_store(self):
        return self._made()[0]

    @property
    def workspace_store(self):
        return self._made()[1]

    # --- start-up: off the REPL's path --------------------------------------------------------------

    def start(self) -> None:
        """Load the embedder and sync the notes in a background thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._prepare, name="memory-start", daemon=True)
            self._thread.start()

    def _prepare(self) -> None:
        try:
            self.sync_notes()
            self.workspace_store.load()  # embeds turns kept without vectors (keep_turn), repairs if need be
            if len(self.global_store) or len(self.workspace_store):
                self.embedder.encode(["warm up"])  # recall will need the model: load it now, off the prompt's path
        except AssistantError as exc:
            self._error = str(exc)
        except Exception as exc:  # noqa: BLE001 - memory trouble must not end the session
            self._error = f"{type(exc).__name__}: {exc}"
        finally:
            self._ready.set()

    def ready(self) -> bool:
        """Wait for start(); False (with a warning, once) when memory cannot work this session."""
        self.start()
        self._ready.wait()
        if self._error:
            log.warning("memory is off for this session: %s", self._error)
            self._error, self._failed = None, True
        return not self._failed

    def describe(self) -> dict:
        """Its size for the dashboard, without waiting for start-up."""
        if not self._ready.is_set():
            return {"state": "loading"}
        if self._failed or self._error or self._stores is None:
            return {"state": "off"}
        g, w = len(self._stores[0]), len(self._stores[1])
        return {"state": "ready", "items": g + w, "global": g, "workspace": w}

    def sync_notes(self) -> tuple[int, int]:
        """Make the global store's notes match the notes file; returns (added, removed)."""
        lines = notes.read_notes()
        store = self.global_store
        store.load()
        kept = {r.get("line") for r in store.records.values() if r.get("kind") == "note"}
        add = []
        for line in dict.fromkeys(lines):
            if line not in kept:
                when, text = notes.split_note(line)
                add.append({"kind": "note", "text": text, "line": line, "when": when})
        gone = kept - set(lines)
        if add or gone:  # by line, not id: two sessions syncing at once leave one record per note
            store.update(add, key="line", drop=gone)
        return len(add), len(gone)

    # --- writing ------------------------------------------------------------------------------------

    def remember(self, text: str) -> str:
        line = notes.remember(text)
        if self.ready():
            self.sync_notes()
        return line

    def forget_note(self, number: int) -> str:
        line = notes.forget(number)
        if self.ready():
            self.sync_notes()
        return line

    def keep_turn(self, request: str, answer: str) -> int | None:
        """Keep one answered request in the workspace's memory (embedded at the next recall or session, so a
        one-shot `--once` never waits for the model to keep it); None when memory is off."""
        if not self.ready():
            return None
        text = clip(f"User: {request}\nAssistant: {answer}", TURN_CHARS)
        # Embedded by the request alone: later questions resemble it, and a long or poor answer would blur it.
        return self.workspace_store.append([{"text": text, "key": clip(request, TURN_CHARS), "kind": "turn",
                                             "session": self.session, "when": time.strftime("%Y-%m-%d %H:%M")}])[0]

    # --- reading ------------------------------------------------------------------------------------

    def search(self, query: str, k: int = 5) -> list:
        """Both stores' hits (store.Hit), best first; this session's own turns left out (they are in the
        conversation)."""
        if not self.ready():
            return []
        hits = self.global_store.search(query, k)
        hits += self.workspace_store.search(query, k, where=lambda r: r.get("session") != self.session)
        return sorted(hits, key=lambda h: -h.score)[:k]

    def recall(self, query: str, exclude: list[str] = ()) -> list[Recalled]:
        """What to put in front of this request: top recall_k above recall_min_score, without duplicates of
        each other or of `exclude` (the pinned notes and the conversation so far), each cut to recall_chars."""
        s = self.settings
        if s.recall_k <= 0 or not query.strip():
            return []
        hits = [h for h in self.search(query, k=s.recall_k * 3) if h.score >= s.recall_min_score]
        keep = distinct([h.record["text"] for h in hits], list(exclude))[: s.recall_k]
        return [Recalled(hits[i].record.get("kind", "?"), hits[i].record.get("when", ""),
                         clip(hits[i].record["text"], s.recall_chars, one_line=True), hits[i].score) for i in keep]


def recall_block(recalled: list[Recalled]) -> str:
    """The text put before a request when something was recalled."""
    if not recalled:
        return ""
    return "From memory (earlier notes and conversations; use them if they help):\n" + "\n".join(
        r.line() for r in recalled) + "\n\n"


MEMORY_USAGE = "/memory [list] · /memory search QUERY · /memory forget N (a note's number from the list)"


def memory_command(args: str, memory: Memory | None) -> str:
    """/memory and `assistant memory`: list the notes (numbered) and what the stores hold, search, forget."""
    action, _, rest = args.strip().partition(" ")
    rest = rest.strip()
    if action in ("", "list"):
        lines = [f"{n:>3}. {line[2:] if line.startswith('- ') else line}" for n, line in enumerate(notes.read_notes(), 1)]
        out = ["notes (" + str(notes.notes_path()) + "):"] + (lines or ["  (none yet: /remember NOTE)"])
        if memory is not None and memory.ready():
            g, w = memory.global_store, memory.workspace_store
            w.search("", k=0)
            out.append(f"vector stores: global {len(g)} records ({g.folder}), this workspace {len(w)} turns "
                       f"({w.folder})")
        elif memory is None:
            out.append("memory is off (--no-memory): nothing is recalled or kept")
        return "\n".join(out)
    if action == "forget":
        if not rest.isdigit():
            return "usage: " + MEMORY_USAGE
        line = memory.forget_note(int(rest)) if memory is not None else notes.forget(int(rest))
        return "forgot: " + line
    if action == "search":
        if not rest:
            return "usage: " + MEMORY_USAGE
        if memory is None:
            return "memory is off (--no-memory)"
        hits = memory.search(rest, k=10)
        return "\n".join(f"{h.score:5.2f} [{h.record.get('kind')} {h.record.get('when', '')}] "
                         f"{clip(h.record['text'], 200, one_line=True)}" for h in hits) or "nothing recalled"
    return "usage: " + MEMORY_USAGE
