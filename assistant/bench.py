"""`assistant bench speed`: time until the REPL prompt shows, model load time, and generation tokens/s."""

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
