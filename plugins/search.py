"""Search over the workspace's code and docs (and the installed packages' docs, once indexed): the `search` tool,
/search and /index in the REPL; `assistant index` and `assistant search` on the command line (commands.py).

When nothing found locally is relevant (the best vector similarity is under --search-min-score), Context7 is
asked for documentation as a fallback (plugins/context7.py; off with --no-context7).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from assistant.errors import ToolError
from assistant.hookspecs import hookimpl

# The index modules (numpy, faiss, bm25s) are imported on first use: plugins load on the REPL's start-up path.
_indexes: dict = {}  # one HybridIndex per folder per process: the BM25 index is kept between searches


def index_for(folder: Path):
    from assistant.memory_bank.code_index import HybridIndex
    from assistant.memory_bank.embeddings import shared_embedder

    folder = Path(folder).resolve()
    if folder not in _indexes:
        _indexes[folder] = HybridIndex(folder, shared_embedder())
    return _indexes[folder]


def workspace_index(root: Path):
    from assistant.memory_bank import workspace_index_dir

    return index_for(workspace_index_dir(root))


def refresh(root: Path, progress: Callable[[int], None] | None = None, on_plan=None):
    """Bring the workspace index up to date (incremental); returns the UpdateStats."""
    from assistant.memory_bank.code_index import update_workspace

    return update_workspace(Path(root), workspace_index(root), progress=progress, on_plan=on_plan)


def search_results(root: Path, query: str, k: int = 5) -> list:
    """Fused results (code_index.Result) from the workspace index and, when it was built, the installed
    packages' index."""
    from assistant.memory_bank.code_index import fuse, installed_index_dir

    indexes = [workspace_index(root)]
    if installed_index_dir().exists():
        indexes.append(index_for(installed_index_dir()))
    return fuse(indexes, query, k)


def render(results: list, query: str) -> str:
    lines = []
    for n, r in enumerate(results, 1):
        rec = r.record
        span = f"-{rec['end']}" if rec["end"] != rec["start"] else ""
        symbol = f"  {rec['symbol'].splitlines()[0]}" if rec.get("symbol") else ""
        cosine = f"  (similarity {r.cosine:.2f})" if r.cosine is not None else ""
        lines.append(f"{n}. {r.location}{span}{symbol}{cosine}")
        lines += ["   " + l for l in r.snippet(query).splitlines()]
    return "\n".join(lines)


MAX_EMBED_IN_A_CALL = 1000  # chunks: about a minute on 2 cores; a bigger first index is `assistant index`'s job


def _not_too_many(chunks: int) -> None:
    if chunks > MAX_EMBED_IN_A_CALL:
        raise ToolError(f"the workspace's search index needs {chunks} chunks embedded (about {chunks // 15 // 60 + 1} "
                        "min): run `assistant index` (or /index in the REPL) once; later updates are incremental")


def search_text(root: Path, settings, query: str, k: int = 5, update: bool = True) -> str:
    """What the tool and /search show: local results, then Context7's passages when nothing local is relevant."""
    query = query.strip()
    if not query:
        raise ToolError("the query is empty")
    if update:
        refresh(root, on_plan=_not_too_many)
    from assistant.memory_bank.code_index import cosine_of

    results = search_results(root, query, k)
    text = render(results, query) if results else "no matches in the workspace"
    if getattr(settings, "context7", False) and cosine_of(results) < settings.search_min_score:
        from assistant.plugins.context7 import fallback

        passages = fallback(query, settings, [r.record["text"] for r in results])
        if passages:
            text += "\n\nnothing local looked relevant; from Context7:\n" + "\n".join(f"- {p}" for p in passages)
    return text


def search(query: str, k: int = 5, context=None) -> str:
    """Search the project's code and docs by name or by what it does; results are file:line with a snippet.

    Args:
        query: Words, a name, or a description of what the code does.
        k: How many results to show.
    """
    root = context.workspace.root if context is not None else Path(".")
    settings = context.settings if context is not None else None
    return search_text(root, settings, query, max(1, min(int(k), 20)))


def search_command(args: str, session) -> str:
    if not args.strip():
        return "usage: /search QUERY (the workspace index is updated first; /index shows what it holds)"
    return search_text(session.workspace.root, session.settings, args)


def index_command(args: str, session) -> str:
    from assistant.commands import embedding_progress

    with embedding_progress() as (plan, advance):
        stats = refresh(session.workspace.root, progress=advance, on_plan=plan)
    return (f"indexed {session.workspace.root}: {stats.files} files, {stats.changed} changed, {stats.removed} "
            f"removed, {stats.chunks} chunks embedded, {stats.total} in the index")


@hookimpl
def register_tools(register):
    register(search)


@hookimpl
def register_commands(register):
    register("search", search_command, "search the workspace's code and docs: /search QUERY")
    register("index", index_command, "update the workspace's search index (incremental)")
