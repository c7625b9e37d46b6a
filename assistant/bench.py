"""Benchmarks (figures, not tests): `assistant bench speed` (time to the REPL prompt, model load, tokens/s) and
`assistant bench sandbox` (what each sandbox layer adds to one execution)."""

from __future__ import annotations

import os
import platform
import pty
import select
import statistics
import subprocess
import sys
import time

from assistant.errors import AssistantError

PROMPT_MARK = "› ".encode()


def time_to_prompt(settings, timeout: float = 30.0) -> float:
    """Start the real REPL in a pseudo-terminal and time until its prompt is drawn."""
    master, slave = pty.openpty()
    env = dict(os.environ, TERM="dumb")
    cmd = [sys.executable, "-m", "assistant", "--workspace", settings.workspace, "--model", settings.model]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    seen = b""
    try:
        while time.monotonic() - start < timeout:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
                if PROMPT_MARK in seen:
                    return time.monotonic() - start
        raise AssistantError(f"no REPL prompt within {timeout}s; output: {seen[-300:]!r}")
    finally:
        os.write(master, b"\x04")
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        os.close(master)


def speed(settings, *, tokens: int = 128, runs: int = 3, out=sys.stdout) -> int:
    from assistant.models.builtin import load_model
    from assistant.loader import load_plugins

    prompt_times = [time_to_prompt(settings) for _ in range(3)]
    start = time.monotonic()
    model = load_model(settings, load_plugins())
    model.wait()
    load = time.monotonic() - start
    messages = [{"role": "user", "content": "Write a long story about a robot who learns to paint."}]
    rates, firsts = [], []
    for _ in range(runs):
        for _piece in model.stream(messages, max_new_tokens=tokens, temperature=0.0):
            pass
        usage = model.last_usage
        rates.append(usage.tokens_per_second)
        firsts.append(usage.first_token_seconds or 0.0)
    rows = [
        ("time to REPL prompt (median of 3)", f"{statistics.median(prompt_times):.3f} s"),
        ("model load (cold in this process)", f"{load:.2f} s"),
        (f"generation, {tokens} new tokens, greedy (median of {runs})", f"{statistics.median(rates):.1f} tokens/s"),
        ("time to first token (median)", f"{statistics.median(firsts):.3f} s"),
        ("prompt tokens", str(model.last_usage.prompt_tokens)),
    ]
    print(f"model: {model.name}   machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}", file=out)
    for name, value in rows:
        print(f"  {name:<52} {value}", file=out)
    print(f"command: assistant bench speed --model {settings.model} --tokens {tokens} --runs {runs}", file=out)
    return 0


def sandbox_overhead(settings, *, runs: int = 50, out=sys.stdout) -> int:
    """`assistant bench sandbox`: what each layer adds to one execution of `python3 -I -c pass`.

    Every variant runs the same command, interleaved round by round (so drift hits all alike) with a 20 ms pause
    before each (so one variant's background work does not land on the next); the figure is the median wall time
    per execution, and the overhead is that minus the bare run's median."""
    import shutil
    import tempfile

    from assistant.sandbox import Sandbox, SandboxError

    argv = [sys.executable, "-I", "-c", "pass"]
    folder = tempfile.mkdtemp(prefix="assistant-bench-")
    boxes = {name: Sandbox(folder, name, settings.sandbox_uid) for name in ("rlimits", "unshare", "bwrap")}
    variants = {"bare subprocess.run": lambda: subprocess.run(argv, cwd=folder, check=True)}
    for name, box in boxes.items():
        try:
            box.layer
        except SandboxError as exc:
            print(f"  {name}: unavailable ({exc})", file=out)
            continue
        variants[f"{name} (cold)"] = lambda box=box: box.run(argv, timeout=30)
    if "bwrap (cold)" in variants:
        variants["bwrap (warm worker)"] = lambda: boxes["bwrap"].run(argv, timeout=30, warm=True)
    times: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for fn in variants.values():  # warm-up: worker start, page cache
            fn()
        for i in range(runs):
            for name, fn in variants.items():
                time.sleep(0.02)  # let background work of the previous run (the worker's next runner) finish
                start = time.perf_counter()
                result = fn()
                times[name].append(time.perf_counter() - start)
                if result is not None and hasattr(result, "ok") and not result.ok:
                    raise AssistantError(f"{name}: the benchmark command failed: {result.render()}")
            if sys.stderr.isatty():
                print(f"\r  round {i + 1}/{runs}", end="", file=sys.stderr, flush=True)
        if sys.stderr.isatty():
            print("\r\033[K", end="", file=sys.stderr)
    finally:
        for box in boxes.values():
            box.close()
        shutil.rmtree(folder, ignore_errors=True)
    bare = statistics.median(times["bare subprocess.run"])
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}, "
          f"uid {os.geteuid()}; command: {' '.join(argv)}", file=out)
    print(f"  {'variant':<26} {'median':>9} {'added':>9}", file=out)
    for name, values in times.items():
        med = statistics.median(values)
        added = "" if name.startswith("bare") else f"{(med - bare) * 1000:+.1f} ms"
        print(f"  {name:<26} {med * 1000:>7.1f} ms {added:>9}", file=out)
    print(f"command: assistant bench sandbox --runs {runs}", file=out)
    return 0
