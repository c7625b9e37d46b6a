"""`assistant dashboard`: a Textual app that watches sessions live, from this machine's audit logs or from a
telemetry server. Reading happens in worker threads (assistant/tui/sources.py); what the records add up to is
assistant/tui/board.py; this file only draws it. Layout and colours: dashboard.tcss."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.syntax import Syntax
from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Header, Input, Sparkline, Static
from textual.worker import get_current_worker

from assistant.tui.board import Board, SessionView, _number, human_bytes, human_count, summary
from assistant.tui.sources import Polled, RunsWatcher, SourceError, wait

BLOCKS = " ▁▂▃▄▅▆▇█"
BATCH = 2_000  # records handed to the app at a time


def age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def clock_time(ts) -> str:
    ts = _number(ts)
    return time.strftime("%H:%M:%S", time.localtime(ts)) if ts and 0 < ts < 1e11 else "--:--:--"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word[:-1] + 'ies' if word.endswith('y') else word + 's'}"


def bar(share: float, width: int = 20) -> str:
    share = min(max(_number(share) or 0.0, 0.0), 1.0)
    filled = share * width
    whole = int(filled)
    part = BLOCKS[int((filled - whole) * 8)] if whole < width else ""
    return ("█" * whole + part.strip()).ljust(width, "·")


def spark(values: list[float], width: int = 12) -> str:
    """A sparkline in text (for the history beside a bar)."""
    values = [v for v in (_number(v) for v in values[-width:]) if v is not None]
    if len(values) < 2:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(BLOCKS[1 + round((v - low) / span * 7)] for v in values)


def fill(table: DataTable, rows: list[tuple[str, list]]) -> None:
    """Show rows [(key, cells)] in a table: cells updated in place when the keys are the same as shown (no
    jump), else rebuilt with the cursor kept on the same key where it still is, and the scroll kept."""
    keys = [key for key, _ in rows]
    shown = [k.value for k in table.rows]
    columns = [c.key for c in table.ordered_columns]
    if keys == shown:
        for key, cells in rows:
            for column, cell in zip(columns, cells):
                if table.get_cell(key, column) != cell:
                    table.update_cell(key, column, cell)
        return
    at = shown[table.cursor_row] if shown and 0 <= table.cursor_row < len(shown) else None
    scroll = table.scroll_y
    table.clear()
    for key, cells in rows:
        table.add_row(*cells, key=key)
    if rows:
        table.move_cursor(row=keys.index(at) if at in keys else min(table.cursor_row, len(rows) - 1),
                          animate=False, scroll=False)
        table.scroll_to(y=scroll, animate=False)


class DetailScreen(ModalScreen):
    """One record, whole, as JSON."""

    BINDINGS = [Binding("escape,q,enter", "dismiss", "Close")]

    def __init__(self, record: dict):
        super().__init__()
        self.record = record

    def compose(self) -> ComposeResult:
        text = json.dumps(self.record, indent=2, ensure_ascii=False, default=repr)
        with VerticalScroll(id="detail"):
            yield Static(Syntax(text, "json", word_wrap=True, theme="ansi_dark"), id="detail-body")

    def on_mount(self) -> None:
        scroll = self.query_one("#detail")
        scroll.border_title = f"{self.record.get('kind', 'record')} · {clock_time(self.record.get('ts'))}"
        scroll.border_subtitle = "Esc to close"


class Dashboard(App):
    CSS_PATH = "dashboard.tcss"
    AUTO_FOCUS = "#sessions"
    TITLE = "assistant dashboard"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("slash", "filter", "Filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("f", "follow", "Follow newest"),
        Binding("a", "all_turns", "All turns"),
        Binding("p", "pause", "Pause"),
        Binding("r", "reload", "Reload runs"),
    ]

    def __init__(self, source, *, runs: Path | None = None, interval: float = 0.25, clock=time.time):
        super().__init__()
        self.source = source
        self.runs = RunsWatcher(runs) if runs else None
        self.interval = interval
        self.board = Board(clock=clock)
        self.clock = clock
        self.selected: tuple[str, str] | None = None  # the session shown; None: follow the newest active one
        self.all_turns = False
        self.paused = False
        self.note = ""  # the source's (bad lines, a server gone)
        self.own_note = ""
        self.drawn = -1
        self.turn_key: tuple | None = None
        self.turn_rows: list[dict] = []
        self.error_rows: dict[str, dict] = {}  # row key -> record
        self.session_rows: dict[str, tuple[str, str]] = {}  # row key -> session key

    # --- layout ------------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="top"):
            with Vertical(id="sessions-panel", classes="panel"):
                yield DataTable(id="sessions", cursor_type="row", zebra_stripes=True)
            with Vertical(id="turn-panel", classes="panel"):
                yield DataTable(id="turn", cursor_type="row")
                yield Static("", id="live")
        with Horizontal(id="middle"):
            with Vertical(id="tools-panel", classes="panel"):
                yield DataTable(id="tools", cursor_type="none", zebra_stripes=True)
            with Vertical(id="resources-panel", classes="panel"):
                yield Static("", id="resources")
                yield Sparkline([], id="rate")
        with Horizontal(id="bottom"):
            with Vertical(id="bench-panel", classes="panel"):
                yield Static("", id="bench")
            with Vertical(id="train-panel", classes="panel"):
                yield Static("", id="train")
                yield Sparkline([], id="loss")
            with Vertical(id="errors-panel", classes="panel"):
                yield DataTable(id="errors", cursor_type="row")
        yield Input(placeholder="filter: words, kind:K tool:NAME session:ID worker:W  (Enter applies, Esc clears)",
                    id="filter")
        yield Static("", id="status")
        yield Footer()

    def on_mount(self) -> None:
        titles = {"sessions-panel": "Sessions", "turn-panel": "Current turn", "tools-panel": "Tools",
                  "resources-panel": "Model, memory, sandbox", "bench-panel": "Pass rates",
                  "train-panel": "Training loss", "errors-panel": "Errors"}
        for panel, title in titles.items():
            self.query_one(f"#{panel}").border_title = title
        # Fixed widths: the layout does not depend on what came first (long cells are cut; Enter shows them).
        for table, columns in (("sessions", (("session", 18), ("state", 10), ("last", 4), ("turns", 5), ("model", 16))),
                               ("turn", (("time", 7), ("kind", 13), ("what", 200))),
                               ("tools", (("tool", 16), ("calls", 5), ("ok", 4), ("mean s", 6), ("p95 s", 6))),
                               ("errors", (("time", 8), ("session", 7), ("what", 160)))):
            widget = self.query_one(f"#{table}", DataTable)
            for label, width in columns:
                widget.add_column(label, width=width)
        self.sub_title = self.source.description
        self.query_one("#sessions", DataTable).focus()
        self.draw(force=True)
        self._follow()
        if self.runs:
            self._watch_runs()
        self.set_interval(1.0, self.draw_ages)

    # --- workers: all I/O happens here, off the event loop -----------------------------------------------

    def _deliver(self, handler, value) -> bool:
        """Hand what a worker read to the app's thread; False when the app is closing. A bug in drawing is
        said in the status line: reading goes on."""
        if not self.is_running:
            return False
        try:
            self.call_from_thread(handler, value)
        except Exception as exc:  # noqa: BLE001
            if not self.is_running:
                return False
            try:
                self.call_from_thread(self.say, f"drawing failed: {type(exc).__name__}: {exc}")
            except Exception:  # noqa: BLE001
                return self.is_running
        return True

    def say(self, note: str) -> None:
        """A note of the app's own (drawing, the run folders), beside the source's."""
        self.own_note = note
        self.draw_status()

    @work(thread=True, exclusive=True, group="feed", exit_on_error=False)
    def _follow(self) -> None:
        worker = get_current_worker()
        delay = self.interval
        while not worker.is_cancelled:
            try:
                polled, delay = self.source.poll(), self.interval
            except SourceError as exc:
                polled, delay = Polled(note=str(exc)), min(max(delay * 2, 1.0), 5.0)
            except Exception as exc:  # noqa: BLE001 - a reading bug is shown, and reading goes on
                polled, delay = Polled(note=f"reading failed: {type(exc).__name__}: {exc}"), 5.0
            # In slices, so that a big first read (many logs) keeps the app answering keys while it is drawn.
            while len(polled.records) > BATCH:
                if not self._deliver(self.apply, Polled(polled.records[:BATCH], note=polled.note, more=True)):
                    return
                polled.records = polled.records[BATCH:]
            if polled.records or polled.streams or polled.note != self.note or polled.workers is not None:
                if not self._deliver(self.apply, polled):
                    return
            if wait(lambda: worker.is_cancelled, delay):
                return

    @work(thread=True, exclusive=True, group="runs", exit_on_error=False)
    def _watch_runs(self) -> None:
        worker = get_current_worker()
        while not worker.is_cancelled:
            try:
                found = self.runs.poll()
            except Exception as exc:  # noqa: BLE001
                found = None
                if not self._deliver(self.say, f"reading the run folders failed: {type(exc).__name__}: {exc}"):
                    return
            if found is not None and not self._deliver(self.apply_runs, found):
                return
            if wait(lambda: worker.is_cancelled, 2.0):
                return

    def apply(self, polled: Polled) -> None:
        self.board.add(polled.records)
        if polled.more:  # drawn once the slices of this read are all in
            return
        for key, text, ended in polled.streams:
            self.board.stream(key, text, ended)
        if polled.workers is not None:
            self.board.workers = polled.workers
        said = polled.note != self.note
        self.note = polled.note
        self.draw()
        if said:  # a server gone or back, without any new record
            self.draw_status()

    def apply_runs(self, found) -> None:
        self.board.set_runs(*found)
        self.draw()

    # --- drawing -------------------------------------------------------------------------------------------

    def current(self) -> SessionView | None:
        if self.selected and self.selected in self.board.sessions:
            return self.board.sessions[self.selected]
        return self.board.newest_active()

    def draw(self, force: bool = False) -> None:
        if self.paused and not force:
            return
        if self.board.version == self.drawn and not force:
            return
        self.drawn = self.board.version
        self.draw_sessions()
        self.draw_turn()
        self.draw_tools()
        self.draw_resources()
        self.draw_bench()
        self.draw_train()
        self.draw_errors()
        self.draw_status()

    def draw_ages(self) -> None:
        """Once a second: the ages and states in the sessions table move on without any new record."""
        if not self.paused:
            self.draw_sessions()

    def draw_sessions(self) -> None:
        table = self.query_one("#sessions", DataTable)
        now = self.clock()
        views = self.board.ordered_sessions()
        shown = self.current()
        rows = []
        for view in views:
            state = view.state(now)
            style = {"generating": "bold green", "live": "green", "gone": "red", "ended": "dim"}.get(state, "")
            mark = "▶ " if shown is not None and view.key == shown.key else "  "
            rows.append((view.key, [Text(mark + view.short, style="bold" if mark.strip() else ""),
                                    Text(state, style=style), age(now - view.last), str(view.turns),
                                    Text(view.model or "?")]))
        fill(table, [(repr(key), cells) for key, cells in rows])
        self.session_rows = {repr(key): key for key, _ in rows}
        panel = self.query_one("#sessions-panel")
        workers = f" · {plural(len(self.board.workers), 'worker')}" if self.board.workers else ""
        panel.border_subtitle = f"{plural(len(views), 'session')}{workers} · " + ("following newest" if self.selected is None
                                                                         else "Enter picks, f follows")

    def draw_turn(self) -> None:
        view = self.current()
        table = self.query_one("#turn", DataTable)
        panel = self.query_one("#turn-panel")
        live = self.query_one("#live", Static)
        if view is None:
            panel.border_title = "Current turn"
            table.clear()
            self.turn_rows, self.turn_key = [], None
            live.update(Text("no sessions yet: start one (`assistant`) and it shows here", style="dim"))
            return
        which = "all turns" if self.all_turns else f"turn {view.turns}" if view.turns else "before the first turn"
        panel.border_title = f"Current turn · {view.label} · {which}"
        key = (view.key, self.all_turns, self.board.filter.text, view.seen)
        if key != self.turn_key:
            records = list(view.records) if self.all_turns else view.turn_records()
            if self.board.filter:
                records = [r for r in records if self.board.filter.matches(r)]
            start = records[0].get("ts") if records else None
            at_end = table.cursor_row >= table.row_count - 1
            same = self.turn_key is not None and self.turn_key[:3] == key[:3] and \
                [id(r) for r in records[: len(self.turn_rows)]] == [id(r) for r in self.turn_rows]
            if not same:
                table.clear()
                self.turn_rows = []
            for record in records[len(self.turn_rows):]:
                ts = record.get("ts") if isinstance(record.get("ts"), (int, float)) else None
                offset = f"+{ts - start:.1f}s" if ts is not None and isinstance(start, (int, float)) else ""
                kind = str(record.get("kind"))
                style = {"user": "bold cyan", "answer": "bold green", "error": "bold red", "tool_call": "yellow",
                         "observation": "" if (record.get("data") or {}).get("ok", True) else "red"}.get(kind, "dim")
                table.add_row(offset, Text(kind, style=style), summary(record, 200), key=str(len(self.turn_rows)))
                self.turn_rows.append(record)
            if at_end and table.row_count:
                table.move_cursor(row=table.row_count - 1, animate=False)
            self.turn_key = key
        if view.live and view.state(self.clock()) == "generating":  # not a dead session's last words
            tail = "\n".join(view.live.splitlines()[-4:])[-600:]
            live.update(Text.assemble(("generating… ", "bold green"), (tail, ""), ("▌", "green")))
        else:
            live.update(Text("", style="dim"))

    def draw_tools(self) -> None:
        table = self.query_one("#tools", DataTable)
        table.clear()
        for name, stats in sorted(self.board.tools.items(), key=lambda kv: -kv[1].calls):
            ok = Text(f"{stats.success:.0%}", style="green" if stats.success >= 0.9 else "yellow"
                      if stats.success >= 0.5 else "red")
            table.add_row(name, str(stats.calls), ok, f"{stats.mean:.2f}", f"{stats.p95:.2f}")
        self.query_one("#tools-panel").border_subtitle = f"{sum(s.calls for s in self.board.tools.values())} calls"

    def draw_resources(self) -> None:
        view, res = self.board.latest_resources()
        lines = Text()
        model = res.get("model") if isinstance(res.get("model"), dict) else {}
        if view is None:
            shown = self.current()
            lines.append("model    ", "bold")
            lines.append(f"{shown.model if shown else '?'} (figures come at the end of the first turn)\n")
        else:
            parts = [model.get("backend", "")]
            if model.get("parameters"):
                parts.append(f"{human_count(model['parameters'])} params")
            if model.get("weights_bytes"):
                parts.append(f"{human_bytes(model['weights_bytes'])} {model.get('dtype', '')}".rstrip())
            if model.get("device"):
                parts.append(str(model["device"]))
            if model.get("url"):
                parts.append(str(model["url"]))
            lines.append("model    ", "bold")
            lines.append(f"{model.get('name', view.model)} ({', '.join(p for p in parts if p)})")
            if _number(model.get("load_seconds")) is not None:
                lines.append(f", loaded in {model['load_seconds']:.1f} s")
            lines.append("\n")
            if model.get("decoding"):
                lines.append("decoding ", "bold").append(f"{model['decoding']}\n")
            lines.append("process  ", "bold").append(f"{human_bytes(res.get('rss_bytes'))} resident ({view.label})\n")
            memory = res.get("memory")
            lines.append("memory   ", "bold")
            if isinstance(memory, dict) and memory.get("state") == "ready":
                lines.append(f"{plural(memory.get('items', 0), 'item')} (global {memory.get('global', 0)}, "
                             f"workspace {memory.get('workspace', 0)})\n")
            else:
                lines.append(f"{memory.get('state', '?') if isinstance(memory, dict) else 'off'}\n")
            box = res.get("sandbox") if isinstance(res.get("sandbox"), dict) else {}
            lines.append("sandbox  ", "bold").append(
                f"{box.get('layer') or 'no command run yet'} (policy {box.get('policy', '?')})\n")
        rates = list(self.board.rates)
        lines.append("tokens/s ", "bold")
        if rates:
            lines.append(f"last {rates[-1]:.1f} · mean {sum(rates) / len(rates):.1f} · {plural(len(rates), 'reply')}")
        else:
            lines.append("no replies yet", "dim")
        self.query_one("#resources", Static).update(lines)
        self._spark("#rate", rates[-120:])

    def _spark(self, selector: str, values: list[float]) -> None:
        line = self.query_one(selector, Sparkline)
        line.display = len(values) > 1
        line.data = values

    def draw_bench(self) -> None:
        rates = self.board.pass_rates()
        text = Text()
        if not rates:
            text.append("no figures yet: they come from `assistant bench humaneval`, `assistant bench tools`, "
                        "`assistant bench dedupe`, `assistant repair --suite` and the repair tool in sessions", "dim")
        width = max((len(b.name) for b in rates), default=0)
        for b in rates:
            colour = "green" if b.value >= 0.7 else "yellow" if b.value >= 0.4 else "red"
            text.append(f"{b.name:<{width}} ")
            text.append(bar(b.value, 12), colour)
            text.append(f" {b.value * 100:5.1f}% {b.detail:>6} ")
            text.append(spark(b.history), "cyan")
            text.append("\n")
        self.query_one("#bench", Static).update(text)

    def draw_train(self) -> None:
        run = self.board.latest_train()
        if run is None:
            self.query_one("#train", Static).update(Text(
                "no training runs yet: training (step 8) writes <home>/runs/train/RUN/metrics.jsonl", style="dim"))
            self._spark("#loss", [])
            return
        text = Text()
        text.append(f"{run.name}", "bold").append(f": step {run.steps[-1]:g}, loss {run.loss[-1]:.4f} "
                                                   f"(min {min(run.loss):.4f})")
        if run.eval_loss:
            text.append(f", eval {run.eval_loss[-1]:.4f}")
        self.query_one("#train", Static).update(text)
        self._spark("#loss", run.loss[-240:])

    def draw_errors(self) -> None:
        table = self.query_one("#errors", DataTable)
        errors = list(self.board.errors)[-200:][::-1]  # newest first
        keyed = {str(id(r)): r for r in errors}
        if list(keyed) == list(self.error_rows):
            return
        fill(table, [(key, [clock_time(r["ts"]), r["session"][-6:], summary(r, 160)]) for key, r in keyed.items()])
        self.error_rows = keyed
        self.query_one("#errors-panel").border_subtitle = f"{len(self.board.errors)}"

    def draw_status(self) -> None:
        parts = [self.source.description, f"{self.board.records_seen} records"]
        if self.board.filter:
            parts.append(f"filter: {self.board.filter.text}")
        if self.paused:
            parts.append("PAUSED (p resumes)")
        parts += [note for note in (self.note, self.own_note) if note]
        self.query_one("#status", Static).update(" · ".join(parts))

    # --- actions -----------------------------------------------------------------------------------------

    @on(DataTable.RowSelected, "#sessions")
    def pick_session(self, event: DataTable.RowSelected) -> None:
        key = self.session_rows.get(event.row_key.value)
        if key is not None:
            self.selected = key
            self.turn_key = None
            self.draw(force=True)

    @on(DataTable.RowSelected, "#turn")
    def turn_detail(self, event: DataTable.RowSelected) -> None:
        index = int(event.row_key.value)
        if 0 <= index < len(self.turn_rows):
            self.push_screen(DetailScreen(self.turn_rows[index]))

    @on(DataTable.RowSelected, "#errors")
    def error_detail(self, event: DataTable.RowSelected) -> None:
        record = self.error_rows.get(event.row_key.value)
        if record is not None:
            self.push_screen(DetailScreen(record))

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.value = self.board.filter.text
        box.focus()

    @on(Input.Submitted, "#filter")
    def apply_filter(self, event: Input.Submitted) -> None:
        self.board.set_filter(event.value)
        event.input.display = False
        self.turn_key = None
        self.query_one("#sessions", DataTable).focus()
        self.draw(force=True)

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = False
        if self.board.filter:
            self.board.set_filter("")
            self.turn_key = None
            self.draw(force=True)

    def action_follow(self) -> None:
        self.selected = None
        self.turn_key = None
        self.draw(force=True)

    def action_all_turns(self) -> None:
        self.all_turns = not self.all_turns
        self.turn_key = None
        self.draw(force=True)

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.draw(force=True)

    def action_reload(self) -> None:
        if self.runs:
            self.runs.stamp = None

    def on_unmount(self) -> None:
        close = getattr(self.source, "close", None)
        if close:
            close()


def run_dashboard(source, runs: Path | None, interval: float) -> int:
    Dashboard(source, runs=runs, interval=interval).run()
    return 0
