"""The subcommands: models, audit, config and bench (the REPL's slash commands call the same functions)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from assistant.errors import AssistantError
from assistant.home import home, models_dir, subdir


def run(args, settings) -> int:
    handler = {"models": models, "audit": audit, "config": config, "bench": bench}[args.command]
    return handler(args, settings)


# --- models ------------------------------------------------------------------------------------------


def models(args, settings) -> int:
    from assistant.models.registry import REGISTRY, cached_path, is_cached, pull, pull_hf

    if args.action == "list":
        print(f"{'name':<16} {'cached':<7} description")
        for entry in REGISTRY.values():
            print(f"{entry.name:<16} {'yes' if is_cached(entry) else 'no':<7} {entry.description}")
        hf = models_dir() / "hf"
        for done in sorted(hf.glob("*/*/.complete")) if hf.exists() else []:
            repo = done.parent.parent.name.replace("--", "/", 1)
            print(f"{'hf:' + repo:<16} {'yes':<7} {done.parent}")
        print(f"\nconfigured: {settings.model}   cache: {models_dir()}")
        return 0
    if args.action == "pull":
        if args.name.startswith("hf:"):
            path = pull_hf(args.name[3:])
        else:
            entry = REGISTRY.get(args.name)
            if entry is None:
                raise AssistantError(f"unknown model {args.name!r}; known: {', '.join(REGISTRY)} (or hf:ORG/NAME)")
            path = pull(entry, force=args.force)
            from assistant.models.transformers_backend import converted_dir, convert_gguf

            if not (converted_dir(path) / ".complete").exists():
                print("converting the GGUF file to a cached model folder (once; about 20 s) ...", flush=True)
            path = convert_gguf(path)
        print(f"ready: {path}")
        return 0
    name = args.name or settings.model
    entry = REGISTRY.get(name)
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


# --- bench -------------------------------------------------------------------------------------------


def bench(args, settings) -> int:
    from assistant.bench import speed

    return speed(settings, tokens=args.tokens, runs=args.runs, out=sys.stdout)
