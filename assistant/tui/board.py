"""What the dashboard knows, built from records (audit log lines or telemetry events) as they arrive: sessions,
the current turn, per-tool stats, tokens/s, resources, repair and benchmark pass rates, training loss, errors.

Plain Python with no Textual in it, so it is tested on its own (tests/test_dashboard.py) and the app only draws
it. Memory is bounded: each session keeps its newest records, and the oldest ended sessions are let go."""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

RECORDS_PER_SESSION = 5_000
MAX_SESSIONS = 200
DURATIONS_KEPT = 2_000  # per tool, for the mean and p95
SERIES = 240  # points kept for a sparkline
LIVE_CHARS = 16_000  # of a reply still streaming
ERRORS_KEPT = 500
TEXT_KEPT = 16_000  # characters of any one string in a record (the log keeps them all; the detail view says so)
TRAIN_POINTS = 10_000
ERROR_KINDS = {"error", "internal_error", "tool_exception", "memory_error"}
HOST = socket.gethostname()


def key_of(record: dict) -> tuple[str, str]:
    """(worker, session): a local record has no worker."""
    return str(record.get("worker") or ""), str(record.get("session") or "?")


def _data(record: dict) -> dict:
    data = record.get("data")
    return data if isinstance(data, dict) else {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def _trim(value: Any, depth: int = 0) -> Any:
    """The value with long strings cut and big or deep containers shortened: what one record may cost."""
    if isinstance(value, str):
        return value if len(value) <= TEXT_KEPT else \
            value[:TEXT_KEPT] + f"… [{len(value) - TEXT_KEPT:,} more characters in the log]"
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        if depth > 8:
            return "…"
        return {str(k)[:200]: _trim(v, depth + 1) for k, v in list(value.items())[:200]}
    if isinstance(value, list):
        return "…" if depth > 8 else [_trim(v, depth + 1) for v in value[:200]]
    return value


def normalise(record: Any) -> dict | None:
    """A record as the board keeps it: a str kind, a float ts (0 when absent or absurd), a dict data (anything
    else is put under "value"), strings and containers cut to size. None when it is not a record at all."""
    if not isinstance(record, dict) or not isinstance(record.get("kind"), str) or not record["kind"]:
        return None
    ts = _number(record.get("ts"))
    data = record.get("data")
    out = {k: _trim(v) for k, v in list(record.items())[:20] if k not in ("kind", "ts", "session", "worker", "data")}
    out.update(kind=record["kind"][:100], ts=ts if ts is not None and 0 <= ts < 1e11 else 0.0,
               session=str(record.get("session") or "?")[:200],
               data=_trim(data) if isinstance(data, dict) else {} if data is None else {"value": _trim(data)})
    if record.get("worker"):
        out["worker"] = str(record["worker"])[:200]
    return out


def valid_pid(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 1 << 22 else None


def one_line(text: Any, width: int = 120) -> str:
    text = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False, default=repr)
    text = " ".join(text[: width * 4].split())
    return text if len(text) <= width else text[: width - 1] + "…"


def summary(record: dict, width: int = 120) -> str:
    """One line saying what a record is about."""
    kind, data = record.get("kind"), _data(record)
    if kind == "user":
        return one_line(data.get("text", ""), width)
    if kind == "model_output":
        rate, count = data.get("tokens_per_second"), data.get("completion_tokens")
        figures = ([f"{count} tok"] if count is not None else []) + ([f"{rate} tok/s"] if rate is not None else [])
        head = f"[{', '.join(figures)}] " if figures else ""
        return one_line(head + str(data.get("text", "")), width)
    if kind == "tool_call":
        return one_line(f"{data.get('name', '?')} {json.dumps(data.get('arguments', {}), ensure_ascii=False)}", width)
    if kind == "observation":
        mark = "ok" if data.get("ok", True) else "FAILED"
        seconds = _number(data.get("seconds"))
        took = f" {seconds:.2f}s" if seconds is not None else ""
        return one_line(f"{data.get('name', '?')} {mark}{took}: {data.get('text', '')}", width)
    if kind in ("answer",):
        return one_line(data.get("text", ""), width)
    if kind == "error":
        return one_line(data.get("message", ""), width)
    if kind == "repair":
        verdict = "passed" if data.get("passed") else "failed"
        return one_line(f"{data.get('fn', '?')} {verdict} {data.get('examples_passed', 0)}/"
                        f"{data.get('examples_total', 0)} examples, {data.get('candidates', 0)} candidates", width)
    if kind in ("internal_error", "tool_exception"):
        lines = str(data.get("traceback", "")).strip().splitlines()
        return one_line((f"{data['tool']}: " if data.get("tool") else "") + (lines[-1] if lines else ""), width)
    if kind == "resources":
        parts = [f"resident {human_bytes(data.get('rss_bytes'))}"]
        memory, box = data.get("memory"), data.get("sandbox")
        if isinstance(memory, dict):
            parts.append(f"memory {memory['items']} item{'' if memory['items'] == 1 else 's'}"
                         if isinstance(memory.get("items"), int)
                         else f"memory {memory.get('state', '?')}")
        if isinstance(box, dict):
            parts.append(f"sandbox {box.get('layer') or 'not used yet'}")
        return one_line(", ".join(parts), width)
    return one_line(data, width)


def human_bytes(n: Any) -> str:
    n = _number(n)
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "?"


def human_count(n: Any) -> str:
    n = _number(n)
    if n is None:
        return "?"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation, as numpy's default."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class ToolStats:
    calls: int = 0
    ok: int = 0
    durations: deque = field(default_factory=lambda: deque(maxlen=DURATIONS_KEPT))

    @property
    def success(self) -> float:
        return self.ok / self.calls if self.calls else 0.0

    @property
    def mean(self) -> float:
        return sum(self.durations) / len(self.durations) if self.durations else 0.0

    @property
    def p95(self) -> float:
        return percentile(list(self.durations), 95)


@dataclass
class SessionView:
    worker: str
    id: str
    model: str = ""
    workspace: str = ""
    pid: int | None = None
    host: str = ""
    started: float | None = None
    last: float = 0.0
    ended: bool = False
    turns: int = 0
    records: deque = field(default_factory=lambda: deque(maxlen=RECORDS_PER_SESSION))
    seen: int = 0  # records ever added (the deque keeps the newest)
    live: str = ""  # the reply streaming now (from the .live file; local sessions only)
    streaming: bool = False
    resources: dict = field(default_factory=dict)
    errors: int = 0
    tokens_per_second: float | None = None
    max_seq: int = -1  # of the local records added: one again (a log read twice) is dropped
    matched: int = 0  # kept records that match the board's filter

    @property
    def key(self) -> tuple[str, str]:
        return self.worker, self.id

    @property
    def label(self) -> str:
        return f"{self.worker}/{self.id}" if self.worker else self.id

    @property
    def short(self) -> str:
        """The label without the session id's date (YYYYMMDD-): the sessions table is narrow."""
        short = self.id[9:] if len(self.id) > 9 and self.id[:8].isdigit() and self.id[8] == "-" else self.id
        return f"{self.worker}/{short}" if self.worker else short

    def state(self, now: float) -> str:
        if self.ended:
            return "ended"
        if self.pid and not self.worker and self.host == HOST:  # a local session: is its process still there?
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return "gone"  # ended without session_end: killed, or crashed
            except (OSError, OverflowError):
                pass
        if self.streaming:
            return "generating"
        return "live" if now - self.last < 600 else "idle"

    def turn_records(self, turn: int | None = None) -> list[dict]:
        """The records of a turn (default: the latest), from its user record on; all kept records if none yet."""
        records = list(self.records)
        starts = [i for i, r in enumerate(records) if r.get("kind") == "user"]
        if not starts:
            return records
        if turn is None:
            return records[starts[-1]:]
        for n, i in enumerate(starts):
            if _data(records[i]).get("turn") == turn:
                end = starts[n + 1] if n + 1 < len(starts) else len(records)
                return records[i:end]
        return []


def record_text(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, default=repr).lower()


class Filter:
    """Words that must all appear: `kind:K`, `tool:NAME`, `session:ID`, `worker:W` match those fields
    (by prefix); any other word must appear somewhere in the record. Case does not matter."""

    FIELDS = ("kind", "tool", "session", "worker")

    def __init__(self, text: str = ""):
        self.text = text.strip()
        self.fields: list[tuple[str, str]] = []
        self.words: list[str] = []
        for word in self.text.lower().split():
            name, sep, value = word.partition(":")
            if sep and name in self.FIELDS and value:
                self.fields.append((name, value))
            else:
                self.words.append(word)

    def __bool__(self) -> bool:
        return bool(self.text)

    def matches(self, record: dict) -> bool:
        for name, value in self.fields:
            if name == "tool":
                data = _data(record)
                got = data.get("name") if record.get("kind") in ("tool_call", "observation") else data.get("tool")
            else:
                got = record.get(name)
            if not str(got or "").lower().startswith(value):
                return False
        if self.words:
            text = record_text(record)
            return all(w in text for w in self.words)
        return True


@dataclass
class Bench:
    """One figure for the pass-rate chart: `value` is a share (0..1)."""

    name: str
    value: float
    detail: str = ""
    ts: float = 0.0
    history: list[float] = field(default_factory=list)


@dataclass
class TrainRun:
    name: str
    steps: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    ts: float = 0.0


class Counts:
    """The figures a filter narrows: tool stats, tokens/s, errors, the repair pass rate."""

    def __init__(self):
        self.tools: dict[str, ToolStats] = {}
        self.rates: deque = deque(maxlen=SERIES)  # tokens/s of each reply, in arrival order
        self.errors: deque = deque(maxlen=ERRORS_KEPT)
        self.repairs = [0, 0]  # passed, total

    def add(self, record: dict) -> None:
        kind, data = record["kind"], record["data"]
        if kind == "observation":
            stats = self.tools.setdefault(str(data.get("name", "?"))[:100], ToolStats())
            stats.calls += 1
            stats.ok += bool(data.get("ok", True))
            seconds = _number(data.get("seconds"))
            if seconds is not None:
                stats.durations.append(seconds)
        elif kind == "model_output":
            rate = _number(data.get("tokens_per_second"))
            if rate is not None:
                self.rates.append(rate)
        elif kind == "repair":
            self.repairs[0] += bool(data.get("passed"))
            self.repairs[1] += 1
        if kind in ERROR_KINDS:
            self.errors.append(record)


class Board:
    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self.sessions: dict[tuple[str, str], SessionView] = {}
        self.filter = Filter()
        self.everything = Counts()  # always kept, over every record seen
        self.filtered: Counts | None = None  # with a filter: over the kept records that match it
        self.benches: list[Bench] = []
        self.train: dict[str, TrainRun] = {}  # from run folders and train_step records
        self.workers: dict[str, dict] = {}  # from a telemetry server
        self.records_seen = 0
        self.version = 0  # bumped on every change the app should draw

    @property
    def counts(self) -> Counts:
        return self.filtered if self.filtered is not None else self.everything

    @property
    def tools(self) -> dict[str, ToolStats]:
        return self.counts.tools

    @property
    def rates(self) -> deque:
        return self.counts.rates

    @property
    def errors(self) -> deque:
        return self.counts.errors

    @property
    def repairs(self) -> list[int]:
        return self.counts.repairs

    # --- feeding ---------------------------------------------------------------------------------------

    def add(self, records: Iterable[Any]) -> int:
        added = 0
        for raw in records:
            record = normalise(raw)
            if record is not None and self._add(record):
                added += 1
        if added:
            self.version += 1
        return added

    def _session(self, key: tuple[str, str]) -> SessionView:
        view = self.sessions.get(key)
        if view is None:
            view = self.sessions[key] = SessionView(*key)
            if len(self.sessions) > MAX_SESSIONS:  # let go of an ended session, else an idle one, else the oldest
                now = self.clock()
                others = [s for s in self.sessions.values() if s is not view]
                ended = [s for s in others if s.ended]
                quiet = [s for s in others if s.state(now) not in ("live", "generating")]
                victim = min(ended or quiet or others, key=lambda s: s.last)
                del self.sessions[victim.key]
        return view

    def _add(self, record: dict) -> bool:
        key = key_of(record)
        seq = record.get("seq")
        local = not key[0] and isinstance(seq, int) and not isinstance(seq, bool)
        view = self.sessions.get(key)
        if local and view is not None and seq <= view.max_seq:
            return False  # already here: a log read again from its start (replaced or cut)
        view = view or self._session(key)
        if local:
            view.max_seq = seq
        self.records_seen += 1
        kind, data, ts = record["kind"], record["data"], record["ts"]
        view.records.append(record)
        view.seen += 1
        view.last = max(view.last, ts)
        if view.started is None or ts < view.started:
            view.started = ts
        if kind == "session_start":
            view.model = str(data.get("model", ""))[:200]
            view.workspace = str(data.get("workspace", ""))[:500]
            view.pid = valid_pid(data.get("pid"))
            view.host = str(data.get("host", ""))[:200]
        elif kind == "session_end":
            view.ended = True
            view.streaming, view.live = False, ""
        elif kind == "user":
            turn = _number(data.get("turn"))
            view.turns = int(turn) if turn is not None and 0 < turn < 1e9 else view.turns + 1
        elif kind == "model_output":
            view.streaming, view.live = False, ""
            rate = _number(data.get("tokens_per_second"))
            if rate is not None:
                view.tokens_per_second = rate
        elif kind == "resources":
            view.resources = data
        elif kind == "train_step":
            self._train_point(str(data.get("run") or view.label)[:200], data, ts)
        if kind in ERROR_KINDS:
            view.errors += 1
        self.everything.add(record)
        if self.filtered is not None and self.filter.matches(record):
            self.filtered.add(record)
            view.matched += 1
        return True

    def set_filter(self, text: str) -> None:
        """A new filter: its figures are counted over the kept records that match (in time order); no filter
        brings back the figures over everything seen."""
        self.filter = Filter(text)
        for view in self.sessions.values():
            view.matched = 0
        if not self.filter:
            self.filtered = None
        else:
            self.filtered = Counts()
            kept = sorted(((r, s) for s in self.sessions.values() for r in s.records), key=lambda p: p[0]["ts"])
            for record, view in kept:
                if self.filter.matches(record):
                    self.filtered.add(record)
                    view.matched += 1
        self.version += 1

    def stream(self, key: tuple[str, str], text: str, ended: bool) -> None:
        """Streamed text of a session's reply in progress (ended: the reply is over)."""
        view = self.sessions.get(key)
        if view is None:
            return
        if text:
            view.live = (view.live + text)[-LIVE_CHARS:]
            view.streaming = True
        if ended:
            view.streaming, view.live = False, ""
        self.version += 1

    def _train_point(self, name: str, data: dict, ts: float) -> None:
        step, loss = _number(data.get("step")), _number(data.get("loss"))
        if step is None or loss is None:
            return
        run = self.train.setdefault(name, TrainRun(name))
        run.steps.append(step)
        run.loss.append(loss)
        ev = _number(data.get("eval_loss"))
        if ev is not None:
            run.eval_loss.append(ev)
        if len(run.steps) > TRAIN_POINTS:
            del run.steps[:-TRAIN_POINTS], run.loss[:-TRAIN_POINTS]
        del run.eval_loss[:-TRAIN_POINTS]
        run.ts = max(run.ts, ts)

    def set_runs(self, benches: list[Bench], train: list[TrainRun]) -> None:
        if benches != self.benches or any(self.train.get(t.name) != t for t in train):
            self.benches = benches
            for run in train:
                self.train[run.name] = run
            self.version += 1

    # --- reading -----------------------------------------------------------------------------------------

    def ordered_sessions(self) -> list[SessionView]:
        """Most recently active first; with a filter, the sessions with a kept record that matches it (its
        session_start says what the session is: model, workspace)."""
        views = sorted(self.sessions.values(), key=lambda s: s.last, reverse=True)
        return [s for s in views if s.matched] if self.filter else views

    def newest_active(self) -> SessionView | None:
        """The session to follow: the most recently active one still running, else the most recent of all."""
        views = self.ordered_sessions()
        now = self.clock()
        active = [s for s in views if s.state(now) in ("generating", "live")]
        return (active or views or [None])[0]

    def latest_resources(self) -> tuple[SessionView | None, dict]:
        with_data = [s for s in self.sessions.values() if s.resources]
        if not with_data:
            return None, {}
        view = max(with_data, key=lambda s: s.last)
        return view, view.resources

    def pass_rates(self) -> list[Bench]:
        rates = list(self.benches)
        passed, total = self.repairs
        if total:
            rates.insert(0, Bench("repair tool (sessions)", passed / total, f"{passed}/{total}"))
        return rates

    def latest_train(self) -> TrainRun | None:
        runs = [r for r in self.train.values() if r.loss]
        return max(runs, key=lambda r: r.ts) if runs else None
