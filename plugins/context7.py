"""Context7 (context7.com): current documentation of libraries, as the `context7` tool, the /context7 command and
a fallback of local search (`fallback`).

The HTTP API as the Context7 MCP server calls it (upstash/context7, packages/mcp/src/lib/api.ts; response shapes
from packages/mcp/src/lib/types.ts and docs/api-guide.mdx of the same repository):

- GET {base}/v2/libs/search?query=QUESTION&libraryName=NAME -> JSON {"results": [{"id": "/org/project", "title",
  "description", "totalSnippets", "trustScore", "benchmarkScore", "versions", ...}]}, ranked for QUESTION.
- GET {base}/v2/context?query=QUESTION&libraryId=/org/project&type=txt -> plain text: snippets ("### Title",
  "Source: URL", prose and code fences) separated by lines of dashes. `type=txt` is the API's default, sent
  explicitly as the Context7 SDK does.
- `Authorization: Bearer KEY` only when a key is set; errors are JSON {"error": ..., "message": ...}.

/v2/context takes no token budget (v1's `tokens` parameter is gone), so none is sent: each passage is cut to
settings.context7_chars instead. Replies are cached on disk for 24 hours; no message ever holds the key.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from assistant import home
from assistant.config import load_settings
from assistant.errors import ToolError
from assistant.hookspecs import hookimpl
from assistant.text import clip, distinct, escape_control
from assistant.workspace import replace_file

CACHE_SECONDS = 24 * 3600
MAX_PASSAGES = 5  # passages the tool and the command show
MAX_GUESSES = 3  # words of a search query the fallback tries as library names
_SEPARATOR = re.compile(r"^-{10,}\s*$")  # between snippets: 32 dashes in v2, 40 in v1
_LIBRARY_ID = re.compile(r"^/[\w.@-]+/[\w.@-]+(/[\w.@-]+)?$")  # /org/project or /org/project/version
_STOP = frozenset("""a about add an and are as at be by can call code do does error file fix for from get how i if in
into is it make me my new not of on or set show the this to use using what when where which why with work""".split())


@dataclass
class Library:
    """One library Context7 knows (a result of /v2/libs/search)."""

    id: str
    title: str = ""
    description: str = ""
    snippets: int | None = None
    trust_score: float | None = None
    benchmark_score: float | None = None


class Context7Client:
    """The two calls of the Context7 HTTP API; successful replies are cached on disk for 24 hours. Use it in a
    `with` block (or call close()): its HTTP connection is opened at the first request not answered by the cache."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 10.0, cache_dir: Path | None = None):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key or None
        self.timeout = float(timeout)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else home.subdir("cache") / "context7"
        self._http = None  # an httpx.Client, made on the first request

    def __enter__(self) -> "Context7Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def resolve(self, name: str, query: str = "") -> list[Library]:
        """Libraries matching `name`, best first (the server ranks them by relevance to `query`)."""
        text = self._get("/v2/libs/search", {"query": query or name, "libraryName": name})
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        rows = data.get("results") if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise ToolError("Context7 sent a library search reply that is not a JSON list of results")
        return [Library(str(r["id"]), str(r.get("title") or r.get("name") or ""), str(r.get("description") or ""),
                        r.get("totalSnippets"), r.get("trustScore"), r.get("benchmarkScore"))
                for r in rows if isinstance(r, dict) and r.get("id")]

    def docs(self, library_id: str, topic: str = "") -> str:
        """The documentation of a library that bears on `topic`, as Context7's text (see `passages`)."""
        return self._get("/v2/context", {"query": topic or library_id, "libraryId": library_id, "type": "txt"})

    def _get(self, path: str, params: dict[str, str]) -> str:
        url = self.base_url + path
        key = hashlib.sha256((url + "?" + json.dumps(params, sort_keys=True)).encode()).hexdigest()
        cache = self.cache_dir / f"{key}.json"
        cached = _read_cache(cache)
        if cached is not None:
            return cached
        import httpx  # here, not at the top: plugins load on the REPL's start-up path

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        if self._http is None:
            self._http = httpx.Client(timeout=self.timeout)
        try:
            reply = self._http.get(url, params=params, headers=headers)
        except httpx.TimeoutException:
            raise ToolError(f"Context7 did not answer within {self.timeout:g} s ({url})") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ToolError(self._scrub(f"cannot reach Context7 at {url}: {reason}")) from None
        if reply.status_code != 200:
            raise ToolError(self._scrub(self._refusal(reply)))
        _write_cache(cache, reply.text)
        return reply.text

    def _refusal(self, reply) -> str:
        code = reply.status_code
        if code in (401, 403):
            return f"Context7 refused the request (HTTP {code}): check --context7-api-key / CONTEXT7_API_KEY"
        if code == 429:
            return "Context7 rate limited the request (HTTP 429): try again later" + (
                "" if self.api_key else ", or set an API key (--context7-api-key / CONTEXT7_API_KEY) for higher limits")
        line = (f"Context7 server error (HTTP {code}): try again later" if code >= 500
                else f"Context7 answered HTTP {code}")
        try:
            message = reply.json().get("message")
        except (ValueError, AttributeError):
            message = None
        return line + (f" ({clip(' '.join(str(message).split()), 200)})" if message else "")

    def _scrub(self, text: str) -> str:
        return text.replace(self.api_key, "***") if self.api_key else text


def _read_cache(path: Path) -> str | None:
    """A cached reply younger than CACHE_SECONDS; None when there is none or the file is unreadable or corrupt."""
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        if time.time() - float(entry["saved"]) < CACHE_SECONDS and isinstance(entry["body"], str):
            return entry["body"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _write_cache(path: Path, body: str) -> None:
    """Write atomically (temporary file, fsync, rename); a cache that cannot be written only costs a request."""
    try:
        replace_file(path, json.dumps({"saved": time.time(), "body": body}).encode("utf-8"), durable=True)
    except OSError:
        pass


def passages(text: str) -> list[str]:
    """Split Context7's documentation text into snippets: at lines of dashes, and at `### ` headings (v2 puts
    no dashes between its code and its prose snippets), never inside a code fence."""
    found: list[str] = []
    current: list[str] = []
    fenced = False

    def flush():
        chunk = "\n".join(current).strip()
        if chunk:
            found.append(chunk)
        current.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and _SEPARATOR.match(line):
            flush()
            continue
        elif not fenced and line.startswith("### "):
            flush()
        current.append(line)
    flush()
    return found


def _select(texts: list[str], chars: int, limit: int, seen=()) -> list[str]:
    """Up to `limit` texts, each made inert and cut to `chars`, leaving out near-duplicates of each other and of
    `seen` (assistant.text.distinct)."""
    shown = [clip(escape_control(t), chars) for t in texts]
    return [shown[i] for i in distinct(shown, list(seen))][:limit]


def client_for(settings) -> Context7Client:
    return Context7Client(settings.context7_url, settings.context7_api_key, settings.context7_timeout)


def _library_id(client: Context7Client, name: str, query: str) -> str | None:
    """`name` itself when it is an id; else the search result titled `name` (or whose id ends so), else the first."""
    if _LIBRARY_ID.match(name):
        return name
    found = client.resolve(name, query)
    wanted = name.casefold()
    best = next((lib for lib in found if wanted in (lib.title.casefold(), lib.id.rsplit("/", 1)[-1].casefold())),
                found[0] if found else None)
    return best.id if best else None


def lookup(library: str, topic: str, settings) -> str:
    """What the tool and the command show: the library's id, then its best passages on the topic."""
    if not settings.context7:
        raise ToolError("Context7 is turned off (--no-context7)")
    library, topic = library.strip(), topic.strip()
    if not library:
        raise ToolError("name a library, e.g. httpx or /encode/httpx")
    with client_for(settings) as client:
        library_id = _library_id(client, library, topic or library)
        if library_id is None:
            raise ToolError(f"Context7 knows no library called {library!r}")
        text = client.docs(library_id, topic or library)
    shown = _select(passages(text), settings.context7_chars, MAX_PASSAGES)
    head = f"Context7 {library_id}" + (f" on {topic!r}" if topic else "")
    if not shown:
        return head + ": no documentation found"
    return "\n\n".join([head + ":"] + [f"[{n}] {text}" for n, text in enumerate(shown, 1)])


def library_guesses(query: str) -> list[str]:
    """Words of a search query that may name a library, most library-like first: a Context7 id (/org/project),
    the head of a dotted name (httpx.Client -> httpx), then identifier-like words that are not common English
    ones (how, use, with, ...); at most MAX_GUESSES."""
    words = [w.strip("()[]{}<>.,;:!?'\"`") for w in query.split()]
    ids = [w for w in words if _LIBRARY_ID.match(w)]
    dotted = [m.group(1) for w in words if (m := re.match(r"([A-Za-z_][\w-]*)\.[A-Za-z_]", w))]
    plain = [w for w in words if re.fullmatch(r"[A-Za-z_][\w-]*", w)]
    guesses: list[str] = []
    for word in ids + dotted + plain:
        if word.startswith("/") or (len(word) > 1 and word.casefold() not in _STOP):
            if word.casefold() not in map(str.casefold, guesses):
                guesses.append(word)
    return guesses[:MAX_GUESSES]


def fallback(query: str, settings, local_texts: list[str] = (), limit: int = 3) -> list[str]:
    """Context7 passages for a search query, for the search tool to add to (or use instead of) local hits.

    The library is the first of `library_guesses(query)` that Context7 resolves (the whole query ranks the
    candidates); its documentation is fetched with the query as the topic. Returns up to `limit` passages, each
    cut to settings.context7_chars, none a near-duplicate of another or of a `local_texts` entry; [] when
    Context7 is off or no word names a library it knows. Never raises: a failure comes back as the one entry
    "context7: <reason>", for the caller to show in its observation.
    """
    if not settings.context7 or limit < 1 or not query.strip():
        return []
    try:
        with client_for(settings) as client:
            for name in library_guesses(query):
                library_id = _library_id(client, name, query)
                if library_id:
                    text = client.docs(library_id, query)
                    return _select(passages(text), settings.context7_chars, limit, local_texts)
        return []
    except Exception as exc:  # noqa: BLE001 - the caller's local results must survive anything going wrong here
        return [f"context7: {exc}" if isinstance(exc, ToolError) else f"context7: {type(exc).__name__}: {exc}"]


def context7(library: str, topic: str = "", context=None) -> str:
    """Look up current documentation of a library or framework (Context7): the passages of its docs on a topic.

    Args:
        library: The library's name (e.g. "httpx", "next.js") or its Context7 id (e.g. "/encode/httpx").
        topic: What to look up in it, e.g. "timeouts" or "stream a response".
    """
    return lookup(library, topic, context.settings if context is not None else load_settings())


def context7_command(args: str, session) -> str:
    """/context7 LIBRARY [TOPIC]: show what the context7 tool finds."""
    library, _, topic = args.strip().partition(" ")
    if not library:
        return "usage: /context7 LIBRARY [TOPIC] (e.g. /context7 httpx timeouts)"
    try:
        return lookup(library, topic, session.settings)
    except ToolError as exc:
        return f"error: {exc}"


@hookimpl
def register_tools(register):
    register(context7)


@hookimpl
def register_commands(register):
    register("context7", context7_command, "current documentation of a library (Context7): /context7 LIBRARY [TOPIC]")
