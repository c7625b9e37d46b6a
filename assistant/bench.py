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

from assistant.charts import Panel, save_run
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
    command = f"assistant bench speed --model {settings.model} --tokens {tokens} --runs {runs}"
    print(f"command: {command}", file=out)
    seconds = {"time to REPL prompt": statistics.median(prompt_times), "model load": load,
               "first token": statistics.median(firsts)}
    save_run("bench-speed", {"command": command, "model": model.name, "seconds": seconds, "tokens": tokens,
                       "tokens_per_second": statistics.median(rates), "rates": rates},
             f"speed: {model.name}, {os.cpu_count()} cpus", [
                 Panel("seconds", list(seconds), list(seconds.values()), fmt="{:.2f}"),
                 Panel("tokens / s", [f"{tokens} greedy tokens"], [statistics.median(rates)], colors=["#2ca02c"])],
             out)
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
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    save_run("bench-sandbox", {"command": f"assistant bench sandbox --runs {runs}", "median_ms": medians, "runs": runs},
             f"sandbox: one `python3 -I -c pass`, median of {runs}", [
                 Panel("ms per execution", list(medians), list(medians.values()))], out)
    return 0


def _decode_rate(count: int, seconds: float, first: float) -> float:
    """Tokens/s of decoding alone: the tokens after the first over the time after the first (prefill excluded)."""
    return (count - 1) / (seconds - first) if count > 1 and seconds > first else 0.0


def _timed(tokens) -> tuple[int, float, float]:
    start = time.perf_counter()
    first, count = 0.0, 0
    for _ in tokens:
        count += 1
        if count == 1:
            first = time.perf_counter() - start
    return count, time.perf_counter() - start, first


def memory_bandwidth() -> float:
    """GB/s of one large tensor copy (read + write), the best of three."""
    import torch

    a = torch.empty(64 * 1024 * 1024)  # 256 MiB
    b = torch.empty_like(a)
    b.copy_(a)
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        b.copy_(a)
        best = max(best, 2 * a.numel() * 4 / (time.perf_counter() - start) / 1e9)
    return best


def conversation(turns: int) -> list[list[dict]]:
    """The prompts of a `turns`-turn conversation (agent-style system prompt and few-shot examples), each turn
    extending the previous one by a fixed reply and a new request."""
    from assistant import prompts
    from assistant.loader import load_plugins

    tools = load_plugins().tools
    messages = [prompts.system_message(tools, "/home/user/project")] + prompts.few_shot(tools)
    asks = ["Which files are here?", "Read README.md.", "How many lines does setup.cfg have?",
            "Run the tests with pytest.", "What is 2**20? Use Python.", "Show git status."]
    out = []
    for i in range(turns):
        messages = messages + [{"role": "user", "content": asks[i % len(asks)]}]
        out.append(messages)
        messages = messages + [{"role": "assistant", "content": prompts.call_message("list_files", {"path": "."})["content"]},
                               prompts.observation_message("list_files", "README.md\nsetup.cfg\nsrc/"),
                               prompts.final_message(), {"role": "assistant", "content": "Done."}]
    return out


def decode(settings, *, tokens: int = 150, runs: int = 3, out=sys.stdout, command: str = "assistant bench decode") -> int:
    """`assistant bench decode`: the in-process decoders and llama.cpp on the same GGUF, same prompt, greedy."""
    import dataclasses

    import torch

    from assistant.models.registry import REGISTRY, pull
    from assistant.models.transformers_backend import TransformersModel

    if settings.model not in REGISTRY and not settings.model.endswith(".gguf"):
        raise AssistantError("bench decode compares against llama.cpp on a GGUF file: --model smollm2-135m or FILE.gguf")
    gguf = str(pull(REGISTRY[settings.model], quiet=True)) if settings.model in REGISTRY else settings.model
    lean = TransformersModel(gguf, dataclasses.replace(settings, quantization="none"))
    if lean.decoder is None:
        raise AssistantError(f"the lean loop cannot run this model ({lean.decoding})")
    messages = [{"role": "user", "content": "Write a long story about a robot who learns to paint."}]
    ids = lean.encode(messages, tokens)
    rows: list[tuple[str, float, float]] = []

    def measure(name: str, run) -> None:
        results = [run() for _ in range(runs + 1)][1:]  # the first run warms up
        rates = [_decode_rate(*r) for r in results]
        rows.append((name, statistics.median(rates), statistics.median(r[2] for r in results)))
        if sys.stderr.isatty():
            print(f"  {name}: {rows[-1][1]:.1f} tokens/s", file=sys.stderr)

    def hf_generate():
        with torch.inference_mode():
            streamer = _TokenClock()
            lean.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, streamer=streamer,
                                pad_token_id=lean.tokenizer.eos_token_id)
        stamps = streamer.stamps
        return len(stamps), stamps[-1] - streamer.start, stamps[0] - streamer.start

    def cold_lean():
        lean.decoder.ids.clear()
        return _timed(lean.decoder.generate(ids, tokens, eos=set()))

    from assistant.models.decoder import Decoder

    int8 = Decoder(lean.model, lean.context_window, int8=True)

    def cold_int8():
        int8.ids.clear()
        return _timed(int8.generate(ids, tokens, eos=set()))

    measure("transformers generate(), float32", hf_generate)
    measure("lean loop, float32", cold_lean)
    measure("lean loop, int8 weights (--quantization int8)", cold_int8)
    del int8
    try:
        from llama_cpp import Llama
    except ImportError:
        print("  llama.cpp: not installed (make llamacpp, or pip install '.[llamacpp]')", file=out)
    else:
        import llama_cpp

        llama = Llama(model_path=gguf, n_ctx=2048, n_threads=os.cpu_count(), verbose=False)

        def llama_tokens():
            llama.reset()
            gen = llama.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True)
            return _timed(t for _, t in zip(range(tokens), gen))

        measure(f"llama.cpp {llama_cpp.__version__} (same GGUF, Q4_1)", llama_tokens)
    # Prefix reuse: time to first token of turn 1 and turn 5 of one conversation, warm cache vs cold.
    turns = conversation(5)
    ttft = {}
    for label, cold in (("cold (no reuse)", True), ("prefix cache", False)):
        lean.decoder.ids.clear()
        firsts = []
        for msgs in turns:
            if cold:
                lean.decoder.ids.clear()
            "".join(lean.stream(msgs, max_new_tokens=4))
            firsts.append((lean.last_usage.first_token_seconds, lean.last_usage.prompt_tokens,
                           lean.last_usage.cached_tokens))
        ttft[label] = firsts
    bandwidth = memory_bandwidth()
    weight_bytes = sum(p.numel() * p.element_size() for p in lean.model.parameters())
    print(f"model: {lean.name}   machine: {platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", file=out)
    print(f"  {tokens} greedy tokens after a {len(ids)}-token prompt; decode rate excludes the prefill; "
          f"median of {runs} (after one warm-up)", file=out)
    base = rows[0][1]
    best_other = next((r for r in rows if r[0].startswith("llama.cpp")), None)
    for name, rate, first in rows:
        rel = f"{rate / base:.2f}x generate()"
        if best_other and not name.startswith("llama.cpp"):
            rel += f", {rate / best_other[1]:.0%} of llama.cpp"
        print(f"  {name:<44} {rate:7.1f} tokens/s   first token {first:.3f} s   ({rel})", file=out)
    print(f"  memory-bandwidth bound for float32 weights: {weight_bytes / 1e6:.0f} MB per token at {bandwidth:.1f} GB/s "
          f"(one tensor copy) = {bandwidth * 1e9 / weight_bytes:.1f} tokens/s", file=out)
    for label, firsts in ttft.items():
        (t1, p1, c1), (t5, p5, c5) = firsts[0], firsts[-1]
        print(f"  time to first token, {label:<16} turn 1: {t1:.3f} s ({p1} prompt tokens, {c1} cached)   "
              f"turn 5: {t5:.3f} s ({p5} prompt tokens, {c5} cached)", file=out)
    print(f"command: {command}", file=out)
    save_run("bench-decode", {"command": command, "model": lean.name, "tokens": tokens, "decoders": [
        {"name": n, "tokens_per_second": r, "first_token_seconds": f} for n, r, f in rows], "ttft": ttft},
        f"decode: {lean.name}, {tokens} greedy tokens, {os.cpu_count()} cpus", [
            Panel("tokens / s", [r[0] for r in rows], [r[1] for r in rows]),
            Panel("time to first token, turn 5 (s)", list(ttft), [firsts[-1][0] for firsts in ttft.values()],
                  fmt="{:.3f}")], out)
    return 0


class _TokenClock:
    """A generate() streamer that only notes when each new token came (its first put() is the prompt)."""

    def __init__(self):
        self.stamps: list[float] = []
        self.start = time.perf_counter()
        self.prompt_seen = False

    def put(self, value):
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.stamps.append(time.perf_counter())

    def end(self):
        pass
