"""The PNG charts the benchmarks write beside their JSON (assistant/charts.py), and one benchmark end to end."""

from __future__ import annotations

import json
import subprocess
import sys

from assistant.charts import Panel, save_chart, save_run

PNG = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_bars_and_lines_side_by_side(tmp_path):
    one = save_chart(tmp_path / "one.png", "one panel", [Panel("ms", ["a", "b"], [1.0, 2.5])])
    two = save_chart(tmp_path / "two.png", "two panels", [
        Panel("ms (log)", ["a long label that wraps", "b"], [1.0, 2500.0], log=True),
        Panel("loss", lines={"train": ([1, 2, 3], [2.0, 1.5, 1.2]), "eval": ([1, 3], [2.1, 1.4])}, xlabel="step")])
    (w1, h1), (w2, h2) = png_size(one), png_size(two)
    assert h1 == h2 and w2 > w1  # a panel more, a wider picture


def test_save_run_writes_json_and_png_under_the_home(isolated_home, capsys):
    import io

    out = io.StringIO()
    data, chart = save_run("bench-x", {"figure": 1.5}, "x", [Panel("s", ["a"], [1.5])], out)
    assert data.parent.name == "bench-x" and json.loads(data.read_text()) == {"figure": 1.5}
    assert png_size(chart) and chart.with_suffix(".json") == data
    assert out.getvalue().splitlines() == [f"results: {data}", f"chart: {chart}"]


def test_bench_sandbox_writes_its_figures_and_chart(tmp_path):
    r = subprocess.run([sys.executable, "-m", "assistant", "bench", "sandbox", "--runs", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    said = dict(line.split(": ", 1) for line in r.stdout.splitlines()[-2:])
    saved = json.loads(open(said["results"]).read())
    assert "bare subprocess.run" in saved["median_ms"] and all(v > 0 for v in saved["median_ms"].values())
    assert png_size(__import__("pathlib").Path(said["chart"]))
