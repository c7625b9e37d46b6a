"""The PNG charts that `assistant bench ...` (and `assistant train`) write beside their JSON results: panels of
labelled bars, or of lines, side by side (matplotlib, drawn off-screen)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


@dataclass
class Panel:
    """One chart. Bars: `labels` and `values` (one colour per bar unless `colors`); `notes` are printed over the
    bars (default: the values with `fmt`). Lines: `lines` maps a name to (x, y) points, drawn against `xlabel`."""

    ylabel: str
    labels: Sequence[str] = ()
    values: Sequence[float] = ()
    notes: Sequence[str] | None = None
    fmt: str = "{:.1f}"
    log: bool = False
    ylim: tuple[float, float] | None = None
    colors: Sequence[str] | None = None
    lines: dict[str, tuple[Sequence[float], Sequence[float]]] = field(default_factory=dict)
    xlabel: str = ""


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_chart(path: Path, title: str, panels: list[Panel], *, width: float = 4.6) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(max(6.0, width * len(panels)), 3.8), dpi=120, squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel.lines:
            for i, (name, (xs, ys)) in enumerate(panel.lines.items()):
                ax.plot(list(xs), list(ys), label=name, color=PALETTE[i % len(PALETTE)], linewidth=1.4)
            ax.set_xlabel(panel.xlabel)
            if len(panel.lines) > 1:
                ax.legend(fontsize=8)
        else:
            values = [float(v) for v in panel.values]
            colors = list(panel.colors) if panel.colors else [PALETTE[i % len(PALETTE)] for i in range(len(values))]
            ax.bar(range(len(values)), values, color=colors)
            ax.set_xticks(range(len(values)), [_wrap(label) for label in panel.labels], fontsize=7)
            notes = panel.notes if panel.notes is not None else [panel.fmt.format(v) for v in values]
            for i, (value, note) in enumerate(zip(values, notes)):
                ax.text(i, value, note, ha="center", va="bottom", fontsize=8)
            if panel.ylim:
                ax.set_ylim(*panel.ylim)
            elif values and not panel.log:
                ax.set_ylim(0, max(values + [1e-9]) * 1.25)
        if panel.log:
            ax.set_yscale("log")
        ax.set_ylabel(panel.ylabel)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _wrap(label: str, width: int = 16) -> str:
    """Break a long tick label over lines at spaces."""
    lines, line = [], ""
    for word in str(label).split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join(lines + [line])


def save_run(name: str, result: dict, title: str, panels: list[Panel], out=None) -> tuple[Path, Path]:
    """<home>/runs/NAME/STAMP.json and STAMP.png (NAME: bench-speed, repair-suite...); says where, when given a
    stream. The dashboard reads the newest of each."""
    from assistant.home import subdir

    folder = subdir("runs") / name
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    n = 1
    while (folder / f"{stamp}.json").exists():  # two runs in one second keep both
        n += 1
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{n}"
    data = folder / f"{stamp}.json"
    # The chart first, the JSON last and whole (renamed into place): a reader (the dashboard) that sees the
    # JSON sees all of it.
    chart = save_chart(folder / f"{stamp}.png", title, panels)
    tmp = data.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=repr))
    os.replace(tmp, data)
    if out is not None:
        print(f"results: {data}\nchart: {chart}", file=out)
    return data, chart
