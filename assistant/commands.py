"""The subcommands: models, audit, config, doctor, bench, index, search, memory, dedupe, collect, telemetry and
dashboard (the REPL's slash commands call the same functions)."""

from __future__ import annotations

import contextlib
import json
import shlex
import os
import subprocess
import sys
import time
from pathlib import Path

from assistant.errors import AssistantError
from assistant.home import home, models_dir, subdir


def run(args, settings) -> int:
    handler = {"models": models, "audit": audit, "config": config, "doctor": doctor, "bench": bench,
               "repair": repair, "index": index, "search": search, "memory": memory, "dedupe": dedupe,
               "collect": collect, "telemetry": telemetry, "dashboard": dashboard, "train": train, "improve": improve,
               "optimize": optimize}[args.command]
    return handler(args, settings)


# --- memory and search ---------------------------------------------------------------------------------


@contextlib.contextmanager
def progress_bar(label: str, total: int | None = None, unit: str = "items"):
    """A progress bar on stderr (a terminal only) for long work. With `total`, yields advance(n); without it,
    yields (plan, advance) where plan(total) starts the bar once the total is known. unit "bytes" shows sizes and
    speed."""
    from rich.console import Console
    from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeRemainingColumn, TransferSpeedColumn)

    bar: dict = {}
    counted = [DownloadColumn(), TransferSpeedColumn()] if unit == "bytes" else [MofNCompleteColumn()]

    def plan(count: int) -> None:
        bar["progress"] = Progress(TextColumn(label), BarColumn(), *counted, TimeRemainingColumn(),
                                   console=Console(stderr=True), disable=count == 0 or not sys.stderr.isatty())
        bar["task"] = bar["progress"].add_task(label, total=count)
        bar["progress"].start()

    def advance(n: int) -> None:
        bar["progress"].advance(bar["task"], n)

    try:
        if total is None:
            yield plan, advance
        else:
            plan(total)
            yield advance
    finally:
        if "progress" in bar:
            bar["progress"].stop()


@contextlib.contextmanager
def embedding_progress():
    """(plan, advance) callbacks for an index update: plan(total) says how many chunks will be embedded."""
    with progress_bar("embedding") as (plan, advance):
        def announce(total: int) -> None:
            if total:
                print(f"{total} chunks to embed", file=sys.stderr, flush=True)
            plan(total)

        yield announce, advance


def index(args, settings) -> int:
    from assistant.memory_bank.code_index import installed_index_dir, update_installed
    from assistant.plugins import search as search_plugin

    start = time.monotonic()
    with embedding_progress() as (plan, advance):
        if args.installed is not None:
            target = installed_index_dir()
            stats = update_installed(search_plugin.index_for(target), args.installed, progress=advance, on_plan=plan)
            what = f"{stats.files} packages, {stats.changed} new or changed, {stats.removed} gone"
        else:
            root = Path(args.path or settings.workspace).expanduser().resolve()
            if not root.is_dir():
                raise AssistantError(f"{root} is not a folder")
            target = root / ".assistant" / "index"
            stats = search_plugin.refresh(root, progress=advance, on_plan=plan)
            what = f"{stats.files} files, {stats.changed} new or changed, {stats.removed} gone"
    print(f"indexed {what}; {stats.chunks} chunks embedded, {stats.total} in {target} "
          f"({time.monotonic() - start:.1f} s)")
    return 0


def search(args, settings) -> int:
    from assistant.plugins import search as search_plugin

    query = " ".join(args.query)
    root = Path(settings.workspace)
    if not args.as_json:
        print(search_plugin.search_text(root, settings, query, args.k, update=args.update))
        return 0
    if args.update:
        search_plugin.refresh(root)
    results = search_plugin.search_results(root, query, args.k)
    print(json.dumps([{"location": r.location, "path": r.record["path"], "start": r.record["start"],
                       "end": r.record["end"], "symbol": r.record.get("symbol", ""), "score": round(r.score, 5),
                       "similarity": None if r.cosine is None else round(r.cosine, 4),
                       "snippet": r.snippet(query)} for r in results], indent=2))
    return 0


def dedupe(args, settings) -> int:
    from assistant.plugins.dedupe import dedupe_command

    return dedupe_command(args, settings)


def telemetry(args, settings) -> int:
    from assistant.telemetry import serve

    if min(args.max_events, args.max_body_kb, args.max_mb) < 1:
        raise AssistantError("--max-events, --max-mb and --max-body-kb must be at least 1")
    return serve(args.host, args.port, max_events=args.max_events, max_bytes=args.max_mb << 20,
                 max_body=args.max_body_kb * 1024)


def dashboard(args, settings) -> int:
    from assistant.tui.sources import LogFollower, RemoteFeed

    if not 0.05 <= args.interval <= 60:
        raise AssistantError("--interval must be between 0.05 and 60 seconds")
    if args.source and args.logs:
        raise AssistantError("--source and --logs are two different sources: give one")
    source = RemoteFeed(args.source) if args.source else LogFollower(args.logs or subdir("logs"))
    runs = Path(args.runs).expanduser() if args.runs else None if args.source else subdir("runs")
    if not sys.stdout.isatty():
        raise AssistantError("the dashboard needs a terminal (stdout is not one)")
    from assistant.tui.app import run_dashboard

    return run_dashboard(source, runs, args.interval)


def train(args, settings) -> int:
    from assistant.plugins.train import run

    return run(args, settings)


def improve(args, settings) -> int:
    from assistant.improve import ImproveConfig, improve as run_loop

    if args.steps < 1 or (args.eval_limit is not None and args.eval_limit < 1) or args.candidates < 1 or args.ngram < 4:
        raise AssistantError("--steps, --eval-limit and --candidates must be at least 1, --ngram at least 4")
    cfg = ImproveConfig(sources=args.source, stack=args.stack, max_samples=args.max_samples, use_logs=args.use_logs,
                        base_model=args.base_model, steps=args.steps, lora_r=args.lora_r,
                        learning_rate=args.learning_rate, batch_size=args.batch_size, eval_limit=args.eval_limit,
                        candidates=args.candidates, ngram=args.ngram, out_dir=args.out or "")
    run_loop(settings, cfg)  # the report says whether the new model was promoted
    return 0


def optimize(args, settings) -> int:
    from assistant.optimize import OptimizeConfig, optimize as run_optimize

    cfg = OptimizeConfig(optimizer=args.optimizer, split=args.split, limit=args.limit, val=args.val, demos=args.demos,
                         rounds=args.rounds, trials=args.trials, budget=args.budget,
                         max_new_tokens=getattr(args, "max_new_tokens", None) or 256, prompt_model=args.prompt_model,
                         seed=args.seed, out=args.out or "")
    command = "assistant " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        run_optimize(settings, cfg, command=command)
    except KeyboardInterrupt:
        print("interrupted: nothing saved", file=sys.stderr)
        return 130
    return 0


def collect(args, settings) -> int:
    from assistant.plugins.collect import run

    return run(args, settings)


def memory(args, settings) -> int:
    from assistant.memory_bank.memory import Memory, memory_command

    mem = Memory(settings) if settings.memory else None
    print(memory_command(" ".join([args.action, *args.rest]), mem))
    return 0


# --- models ------------------------------------------------------------------------------------------


def models(args, settings) -> int:
    from assistant.models.registry import EMBEDDERS, REGISTRY, cached_path, find_entry, is_cached, pull, pull_hf

    if args.action == "list":
        print(f"{'name':<16} {'cached':<7} description")
        for entry in [*REGISTRY.values(), *EMBEDDERS.values()]:
            print(f"{entry.name:<16} {'yes' if is_cached(entry) else 'no':<7} {entry.description}")
        hf = models_dir() / "hf"
        for done in sorted(hf.glob("*/*/.complete")) if hf.exists() else []:
            repo = done.parent.parent.name.replace("--", "/", 1)
            print(f"{'hf:' + repo:<16} {'yes':<7} {done.parent}")
        from assistant.plugins.train import trained_models

        trained = trained_models()
        if trained:
            print("\ntrained here (assistant train; use with --model PATH):")
            for path, info in sorted(trained.items(), key=lambda kv: kv[1].get("finished") or 0):
                figures = [f"from {info.get('base_model')}", f"{info.get('steps')} steps"]
                if isinstance(info.get("eval_loss"), (int, float)):
                    before = info.get("eval_loss_before")
                    figures.append(f"held-out loss {before:.3f} -> {info['eval_loss']:.3f}"
                                   if isinstance(before, (int, float)) else f"held-out loss {info['eval_loss']:.3f}")
                elif isinstance(info.get("train_loss"), (int, float)):
                    figures.append(f"training loss {info['train_loss']:.3f}")
                for key, label in (("agent_pass", "agent pass@1"), ("raw_pass", "raw pass@1")):
                    if isinstance(info.get(key), (int, float)):
                        figures.append(f"{label} {info[key]:.1%}")
                print(f"  {path}  ({', '.join(figures)})")
        print(f"\nconfigured: {settings.model}   cache: {models_dir()}")
        return 0
    if args.action == "pull":
        if args.name.startswith("hf:"):
            path = pull_hf(args.name[3:])
        else:
            entry = find_entry(args.name)
            if entry is None:
                known = ", ".join([*REGISTRY, *EMBEDDERS])
                raise AssistantError(f"unknown model {args.name!r}; known: {known} (or hf:ORG/NAME)")
            path = pull(entry, force=args.force)
            if entry.name in EMBEDDERS:
                print(f"ready: {path.parent}")
                return 0
            from assistant.models.transformers_backend import converted_dir, convert_gguf

            if not (converted_dir(path) / ".complete").exists():
                print("converting the GGUF file to a cached model folder (once; about 20 s) ...", flush=True)
            path = convert_gguf(path)
        print(f"ready: {path}")
        return 0
    name = args.name or settings.model
    entry = find_entry(name)
    if entry is None:
        print(json.dumps({"spec": name, "note": "not a registry model; loaded as given"}, indent=2))
        return 0
    print(json.dumps({"name": entry.name, "description": entry.description, "source": f"pypi:{entry.package}",
                      "file": entry.filename, "sha256": entry.sha256, "size": entry.size,
                      "context_window": entry.context_window, "cached": is_cached(entry),
                      "path": str(cached_path(entry))}, indent=2))
    return 0


# --- audit -------------------------------------------------------------------------------------------


def log_files() -> list[Path]:
    return sorted(subdir("logs").glob("*.jsonl"), key=lambda p: p.stat().st_mtime)


def find_log(ref: str | None, settings=None) -> Path:
    if ref:
        path = Path(ref)
        if path.exists():
            return path
        candidate = subdir("logs") / f"{ref}.jsonl"
        if candidate.exists():
            return candidate
        raise AssistantError(f"no audit log {ref!r} (a file, or a session id from `assistant audit list`)")
    if settings is not None and settings.audit_log:
        return Path(settings.audit_log)
    files = log_files()
    if not files:
        raise AssistantError(f"no audit logs yet in {subdir('logs')}")
    return files[-1]


def render_record(rec) -> str:
    if not isinstance(rec, dict) or "kind" not in rec or not isinstance(rec.get("data", {}), dict):
        return f"   ? {json.dumps(rec, ensure_ascii=False)[:200]}  (not an audit record)"
    kind, data = rec.get("kind"), rec.get("data") or {}
    if kind == "user":
        body = data.get("text", "")
    elif kind == "model_output":
        tps = data.get("tokens_per_second")
        body = repr(data.get("text", ""))[:200] + (f"  ({tps} tok/s)" if tps else "")
    elif kind == "tool_call":
        body = f"{data.get('name')} {json.dumps(data.get('arguments'), ensure_ascii=False)}"
    elif kind == "observation":
        body = ("ok " if data.get("ok") else "FAILED ") + data.get("text", "").replace("\n", " | ")[:200]
    elif kind in ("answer",):
        body = data.get("text", "")
    elif kind == "error":
        body = data.get("message", "")
    else:
        body = json.dumps(data, ensure_ascii=False)[:200]
    return f"{str(rec.get('seq')):>4} {str(kind):<14} {body}"


def audit(args, settings) -> int:
    from assistant.logs.audit import read_records, verify

    if args.action == "list":
        for path in log_files():
            print(path)
        return 0
    path = find_log(args.file, settings)
    if args.action == "verify":
        count, problem = verify(path)
        if problem:
            print(f"{path}: BROKEN at line {problem.line} (after {count} good records): {problem.message}")
            return 1
        print(f"{path}: OK, {count} records, hash chain intact")
        return 0
    for rec in read_records(path):
        if args.kind and rec.get("kind") != args.kind:
            continue
        print(json.dumps(rec, ensure_ascii=False) if args.as_json else render_record(rec))
    return 0


# --- config ------------------------------------------------------------------------------------------


def config(args, settings) -> int:
    from assistant.config import user_config_path, workspace_config_path

    for name, value, source in settings.public_items():
        print(f"{name:<28} {json.dumps(value):<32} {source}")
    print(f"\nuser config:      {user_config_path()}")
    print(f"workspace config: {workspace_config_path(Path(settings.workspace))}")
    print(f"home:             {home()}")
    return 0


# --- doctor ------------------------------------------------------------------------------------------

USERNS_FILES = ("/proc/sys/user/max_user_namespaces", "/proc/sys/kernel/unprivileged_userns_clone",
                "/proc/sys/kernel/apparmor_restrict_unprivileged_userns")


def _run_quietly(argv: list[str]) -> tuple[bool, str]:
    """(exit status 0, the last line of its output or why it could not start)."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd="/", stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    lines = (r.stdout + r.stderr).strip().splitlines()
    return r.returncode == 0, lines[-1] if lines else f"exit status {r.returncode}"


def _bubblewrap() -> dict:
    from assistant.sandbox import find_tool

    path = find_tool("bwrap")
    if path is None:
        return {"path": None, "version": None}
    ok, version = _run_quietly([path, "--version"])
    return {"path": path, "version": version if ok else f"unknown ({version})"}


def _user_namespaces(run_uid: int, as_root: bool) -> dict:
    """The kernel switches that govern unprivileged user namespaces, and whether `unshare --user true` works
    for the uid commands run as (as root that means dropping to it first: root itself always may)."""
    facts: dict = {}
    for path in USERNS_FILES:
        try:
            facts[Path(path).name] = Path(path).read_text().strip()
        except OSError:
            facts[Path(path).name] = None  # not present on this kernel
    from assistant.sandbox import find_tool

    unshare, setpriv = find_tool("unshare"), find_tool("setpriv")
    if unshare is None:
        facts.update(works=False, tried="unshare --user true", detail="unshare not found (install util-linux)")
        return facts
    argv, who = [unshare, "--user", "true"], f"uid {os.getuid()}"
    if as_root:
        if setpriv is None:
            facts.update(works=False, tried="unshare --user true",
                         detail="setpriv not found (install util-linux): cannot drop root to test")
            return facts
        argv = [setpriv, f"--reuid={run_uid}", f"--regid={run_uid}", "--clear-groups", "--"] + argv
        who = f"uid {run_uid}"
    ok, detail = _run_quietly(argv)
    facts.update(works=ok, tried=f"unshare --user true as {who}", detail="" if ok else detail)
    return facts


def _model_cache(spec: str) -> dict:
    from assistant.models.registry import REGISTRY, cached_path, is_cached

    entry = REGISTRY.get(spec)
    if entry is None:
        return {"spec": spec, "registry": False, "cached": None, "path": None}
    return {"spec": spec, "registry": True, "cached": is_cached(entry), "path": str(cached_path(entry))}


def doctor_report(settings) -> dict:
    """Every fact `assistant doctor` prints, as one dict (the --json output)."""
    from assistant.sandbox import LAYERS, POLICIES, Sandbox, SandboxError

    box = Sandbox(Path(settings.workspace), settings.sandbox, settings.sandbox_uid)
    try:
        try:
            active, error = box.layer, None
        except SandboxError as exc:
            active, error = None, str(exc)
        probed = {p.layer: p for p in box.probes}  # what choosing the layer already tried
        layers = {}
        for name in LAYERS:
            probe = probed.get(name) or box.probe(name)
            layers[name] = {"ok": probe.ok, "reason": probe.reason, "accepted": name in POLICIES[settings.sandbox]}
        as_root, run_uid = box.as_root, box.run_uid
    finally:
        box.close()
    logs = Path(settings.audit_log).parent if settings.audit_log else home() / "logs"
    return {
        "ok": active is not None,
        "workspace": settings.workspace,
        "sandbox_policy": settings.sandbox,
        "sandbox_policy_source": settings.sources.get("sandbox", "default"),
        "active_layer": active,
        "error": error,
        "layers": layers,
        "bubblewrap": _bubblewrap(),
        "user_namespaces": _user_namespaces(run_uid, as_root),
        "root": as_root,
        "run_uid": run_uid,
        "run_uid_from": "sandbox_uid: never root itself" if as_root else "your own uid",
        "approval": settings.approval,
        "model": _model_cache(settings.model),
        "models_dir": str(models_dir()),
        "home": str(home()),
        "logs": str(logs),
        "git_safe_bare_repository": _git_bare_setting(),
    }


def _git_bare_setting() -> str | None:
    """Your git's safe.bareRepository: with `explicit`, a bare repository planted in a workspace (HEAD, objects/,
    refs/ and a config that runs a pager or alias) is not picked up by your next git command there."""
    from assistant.sandbox import find_tool

    git = find_tool("git")
    if git is None:
        return None
    ok, value = _run_quietly([git, "config", "--global", "--get", "safe.bareRepository"])
    return value if ok else "unset"


def doctor_lines(report: dict) -> list[str]:
    r = report
    lines = [("workspace", r["workspace"]),
             ("sandbox policy", f"{r['sandbox_policy']} (from {r['sandbox_policy_source']}; accepts "
                                + ", ".join(n for n, v in r["layers"].items() if v["accepted"]) + ")"),
             ("active layer", f"{r['active_layer']} (the strongest accepted layer that works here)"
                              if r["active_layer"] else "none (commands and code cannot run; see the error)")]
    for name, layer in r["layers"].items():
        state = "ok" if layer["ok"] else "missing"
        if not layer["accepted"]:
            state += f" (not accepted by --sandbox {r['sandbox_policy']})"
        lines.append((f"layer {name}", state + (f": {layer['reason']}" if layer["reason"] else "")))
    bw = r["bubblewrap"]
    lines.append(("bubblewrap", f"{bw['path']} ({bw['version']})" if bw["path"] else "not found"))
    ns = r["user_namespaces"]
    for key in ("max_user_namespaces", "unprivileged_userns_clone", "apparmor_restrict_unprivileged_userns"):
        lines.append((key, ns[key] if ns[key] is not None else "(not present)"))
    lines.append(("user namespaces", ("work" if ns["works"] else "do not work")
                  + f" ({ns['tried']}" + (f": {ns['detail']})" if ns["detail"] else ")")))
    lines.append(("running as root", "yes" if r["root"] else "no"))
    lines.append(("commands run as", f"uid {r['run_uid']} ({r['run_uid_from']})"))
    lines.append(("approval", r["approval"]))
    m = r["model"]
    if m["registry"]:
        model = f"{m['spec']}: " + (f"cached at {m['path']}" if m["cached"]
                                    else f"not cached (assistant models pull {m['spec']})")
    else:
        model = f"{m['spec']}: not a registry model (loaded as given)"
    lines += [("model", model), ("model cache", r["models_dir"]), ("home", r["home"]), ("logs", r["logs"])]
    bare = r["git_safe_bare_repository"]
    if bare is not None:
        lines.append(("git safe.bareRepository", bare if bare == "explicit" else
                      f"{bare} (recommended: git config --global safe.bareRepository explicit, so that a bare "
                      "repository a command plants in a workspace is not used by your git)"))
    width = max(len(k) for k, _ in lines) + 2
    return [f"{k + ':':<{width}}{v}" for k, v in lines]


def doctor(args, settings) -> int:
    report = doctor_report(settings)
    if args.as_json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(doctor_lines(report)))
    if report["error"]:
        print(f"error: {report['error']}", file=sys.stderr)
        return 1
    return 0


# --- bench -------------------------------------------------------------------------------------------


def bench(args, settings) -> int:
    from assistant.bench import sandbox_overhead, speed

    if args.action == "sandbox":
        return sandbox_overhead(settings, runs=args.runs, out=sys.stdout)
    command = "assistant " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.action == "tools":
        from assistant.bench_tools import bench_tools

        modes = ("constrained", "free") if args.decoding == "both" else (args.decoding,)
        return bench_tools(settings, data=Path(args.data) if args.data else None, limit=args.limit, modes=modes,
                           command=command)
    if args.action == "memory":
        from assistant.bench_memory import bench_memory

        root = Path(settings.workspace)
        repo = None if args.no_index or not (root / ".git").exists() else root
        return bench_memory(sizes=tuple(args.sizes), queries=args.queries, seq_len=args.seq_len, repo=repo,
                            command=command)
    if args.action == "dedupe":
        from assistant.bench_dedupe import bench_dedupe

        return bench_dedupe(docs=args.docs, plant=args.plant, sample=args.sample, threshold=args.threshold,
                            num_perm=args.num_perm, ngram=args.ngram, datasketch=args.datasketch, command=command)
    if args.action == "decode":
        from assistant.bench import decode

        return decode(settings, tokens=args.tokens, runs=args.runs, command=command)
    if args.action == "humaneval":
        from assistant.humaneval import BenchConfig, bench_humaneval

        cfg = BenchConfig(limit=args.limit, iters=args.iters, candidates=args.candidates, leaky=args.leaky,
                          half=args.half, program=args.program or "")
        if getattr(args, "max_new_tokens", None):
            cfg.max_new_tokens = args.max_new_tokens
        return bench_humaneval(settings, cfg, runs_root=Path(args.out) if args.out else None, command=command)
    return speed(settings, tokens=args.tokens, runs=args.runs, out=sys.stdout)


# --- repair ------------------------------------------------------------------------------------------


def repair(args, settings) -> int:
    from pathlib import Path

    from assistant.loader import load_plugins
    from assistant.models.builtin import load_model
    from assistant.repair import MODES, RepairConfig, Request, prompts_for, render, solve, verdict
    from assistant.sandbox import Sandbox

    profile = args.profile
    max_new = getattr(args, "max_new_tokens", None)
    config = RepairConfig.for_profile(profile, decode=args.decode, candidates=args.candidates, iters=args.iters,
                                      timeout=args.timeout, max_new_tokens=max_new, design=args.design,
                                      test=args.test)
    stub = None
    if args.stub:
        try:
            stub = Path(args.stub).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AssistantError(f"cannot read --stub {args.stub}: {getattr(exc, 'strerror', None) or exc}") from None
    if not (args.suite or args.task.strip() or args.signature or stub):
        raise AssistantError("give --task, --signature or --stub (or --suite); `assistant repair --help` has examples")
    quiet = profile == "copy"
    prefix = "thinking: " if quiet else "· "

    def log(line: str) -> None:
        print(prefix + line, file=sys.stderr, flush=True)

    prompts = prompts_for(args.program or settings.repair_program, log)
    model = load_model(settings, load_plugins())
    box = Sandbox(Path(settings.workspace), settings.sandbox, settings.sandbox_uid)
    try:
        if args.suite:
            from assistant.repair_suite import run_suite

            return run_suite(model, box, config, prompts=prompts)
        request = Request(args.task, args.fn, args.signature, list(args.doctests), stub)
        outcome = solve(model, box, request, config, log=log, prompts=prompts)
    finally:
        box.close()
    mode = "standalone" if args.standalone else "imports" if args.add_imports else MODES[0]
    clean = args.clean_doc if args.clean_doc is not None else profile == "copy"
    code = render(outcome.best.code, outcome.spec, mode=mode, clean_doc=clean)
    if profile == "save":
        folder = Path(args.out_dir) if args.out_dir else Path(settings.workspace) / "generated"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{outcome.spec.fn}.py"
        target.write_text(code, encoding="utf-8")
        log(f"wrote {target}")
    else:
        sys.stdout.write(code)
    print(verdict(outcome), file=sys.stderr)
    if outcome.stopped == "interrupted":
        print("interrupted: the best candidate so far is above", file=sys.stderr)
        return 130
    ok = outcome.passed or outcome.stopped in ("not tested", "nothing to test")
    return 0 if ok else 1
