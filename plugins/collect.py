"""collect: training samples (instruction/response JSONL) from local repositories, offline.

Python functions with docstrings become samples when they compile on their own and their doctests, if any, pass in
the sandbox; for the other stacks each file is a sample when its syntax checks (g++, node, gofmt, in the sandbox).
A repository counts only with a permissive licence and a name that does not look like homework. The output is
appended line by line with a state file beside it, so Ctrl-C then `--resume` loses nothing and repeats nothing.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import sys
import textwrap
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from assistant.errors import AssistantError, ToolError
from assistant.hookspecs import hookimpl
from assistant.tools import requires_approval

log = logging.getLogger("assistant")

STACKS = {"python": (".py", ".ipynb"), "cpp": (".cpp", ".cc", ".h", ".hpp"), "vite": (".ts", ".tsx", ".vue", ".svelte"),
          "web": (".js", ".ts"), "go": (".go",)}
LANGUAGES = {".cpp": "C++", ".cc": "C++", ".h": "C++ header", ".hpp": "C++ header", ".js": "JavaScript",
             ".ts": "TypeScript", ".tsx": "TypeScript (JSX)", ".vue": "Vue", ".svelte": "Svelte", ".go": "Go"}
PERMISSIVE = {"MIT", "BSD", "0BSD", "Apache", "ISC", "PSF", "Unlicense", "Zlib", "CC0", "BSL-1.0"}
# The earliest match in a text wins (a licence names itself before anything it quotes); at one place, the first listed.
LICENCES = [(name, pattern) for name, pattern in (  # compiled on first use (re caches them): not at start-up
    ("AGPL", r"\bAGPL|Affero General"), ("LGPL", r"\bLGPL|Lesser General Public|Library General Public"),
    ("GPL", r"\bGPL|General Public Licen[cs]e"), ("SSPL", r"\bSSPL\b|Server Side Public"),
    ("MPL", r"\bMPL\b|Mozilla Public"), ("EPL", r"\bEPL\b|Eclipse Public"),
    ("0BSD", r"\b0BSD\b|Zero.Clause BSD|BSD Zero"), ("BSD", r"\bBSD\b|Redistribution and use in source and binary"),
    ("MIT", r"\bMIT\b|\bExpat\b|Permission is hereby granted, free of charge"),
    ("Apache", r"\bApache[- ](Licen[cs]e|Software|2)"),
    ("ISC", r"\bISCL?\b|Permission to use, copy, modify, and(/or)? distribute this software for any purpose"),
    ("PSF", r"\bPSF\b|Python Software Foundation|\bPython-2\.0|\bCNRI"),
    ("Unlicense", r"\bUnlicen[cs]e\b|free and unencumbered software released into the public domain"),
    ("Zlib", r"\bzlib\b|provided 'as-is', without any express or implied"),
    ("CC0", r"\bCC0\b|CC-0|Creative Commons Zero"), ("BSL-1.0", r"\bBSL-1\.0\b|Boost Software Licen[cs]e"))]
LICENCE_FILE = re.compile(r"(?i)^(un)?(licen[cs]e|copying|copyright)([-._ ].*)?$")
HOMEWORK = re.compile(r"(?i)homework|assignment|coursework|exercises?|leetcode|tutorial"
                      r"|(^|[-_. ])(hw|lab|pset)[-_ ]?\d+"
                      r"|(^|[-_. ])(cs|cse|csc|ece|comp|info|math|stat)[-_ ]?\d{2,4}[a-z]?($|[-_. ])")
REPO_MARKERS = (".git", "pyproject.toml", "setup.py", "setup.cfg", "package.json", "go.mod", "CMakeLists.txt")
SKIP_DIRS = {"__pycache__", "node_modules", "build", "dist", "venv", "env", "virtualenv", "site-packages"}
BATCH = 50  # functions per sandbox run
PER_SAMPLE_SECONDS = 5.0  # one function's doctests
IMPORT_SECONDS = 30.0  # the module's imports, once per batch
TOTALS = ("files", "files_skipped", "written", "golden", "rejected", "checks", "dedupe")

HARNESS = r'''
import contextlib, doctest, io, json, os, signal, sys
p = json.loads(sys.stdin.buffer.read().decode("utf-8"))
out, sink = sys.__stdout__, io.StringIO()
sys.path.insert(0, p["path"])

class Timeout(BaseException):
    pass

def alarm(signum, frame):
    signal.setitimer(signal.ITIMER_REAL, 0.05)  # doctest catches the first one: cut the later examples short too
    raise Timeout()

def limited(seconds, thunk):
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            return thunk()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        sink.seek(0)
        sink.truncate()

def check(name, code, doc):
    ns = dict(base)
    exec(compile(p["future"] + "\n" + code, "<sample>", "exec"), ns)
    test = doctest.DocTestParser().get_doctest(doc, ns, name, "<sample>", 0)
    result = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS).run(test, out=lambda s: None, clear_globs=False)
    return "none" if not result.attempted else "fail" if result.failed else "pass"

signal.signal(signal.SIGALRM, alarm)
base = {"__name__": "__collect__"}
try:
    limited(p["import_seconds"], lambda: exec("\n".join(p["imports"]), base))
    imported = True
except BaseException:
    imported = False
for i, (name, code, doc) in enumerate(p["functions"]):
    try:
        status = limited(p["seconds"], lambda: check(name, code, doc)) if imported else "fail"
    except BaseException:
        status = "fail"
    out.write("\n" + p["mark"] + json.dumps([i, status]) + "\n")
    out.flush()
os._exit(0)  # threads or atexit handlers the examples left behind must not hold the run
'''


# --- licences and repositories -------------------------------------------------------------------------


def licence_of_text(text: str) -> str:
    """A licence names itself near its start; what follows may quote those of bundled code."""
    text = text[:3000]
    found = [(m.start(), i, name) for i, (name, rx) in enumerate(LICENCES) if (m := re.search(rx, text, re.I))]
    return min(found)[2] if found else "unknown"


def licence_of_expression(expr: str) -> str:
    """An SPDX-like expression: `A OR B` is permissive when either is, `A AND B` only when both are."""
    if "\n" in expr.strip() or len(expr) > 200:
        return licence_of_text(expr)  # a whole licence text in a metadata field
    if "(" in expr:  # grouped: not parsed; the most restrictive licence it names decides
        named = [licence_of_text(part) for part in re.split(r"[()]|\s+(?:AND|OR|WITH)\s+", expr) if part.strip()]
        named = [n for n in named if n != "unknown"] or ["unknown"]
        return next((n for n in named if n not in PERMISSIVE), named[0])
    choices = []
    for alternative in re.split(r"\s+OR\s+|\s*/\s*", expr.strip()):
        parts = [licence_of_text(part) for part in re.split(r"\s+AND\s+", alternative)]
        choices.append(next((p for p in parts if p not in PERMISSIVE), parts[0]))
    return next((c for c in choices if c in PERMISSIVE), choices[0])


def from_files(files: list[Path]) -> str:
    """The first licence file (top-level and short names first) that names a licence."""
    for path in sorted(files, key=lambda p: (len(p.parts), len(p.name), p.name)):
        found = licence_of_text(read_text(path))
        if found != "unknown":
            return found
    return "unknown"


def from_fields(fields: list[str]) -> str:
    return next((f for f in (licence_of_expression(v) for v in fields if v.strip()) if f != "unknown"), "unknown")


def from_classifiers(classifiers: list[str]) -> str:
    """Any permissive one: several licence classifiers offer a choice."""
    known = [f for f in (licence_of_text(c.split("::")[-1]) for c in classifiers) if f != "unknown"]
    return next((f for f in known if f in PERMISSIVE), known[0] if known else "unknown")


def first_known(*guesses) -> str:
    return next((found for guess in guesses if (found := guess()) != "unknown"), "unknown")


def read_text(path: Path) -> str:
    """A licence or metadata file's text ("" when unreadable or binary): the index's reader, imported on use."""
    from assistant.memory_bank.chunking import read_text as read

    return read(path) or ""


def folder_licence(root: Path) -> str:
    files = [p for p in root.iterdir() if p.is_file() and LICENCE_FILE.match(p.name)] if root.is_dir() else []
    fields, classifiers = [], []
    with contextlib.suppress(ValueError, AttributeError):
        value = json.loads(read_text(root / "package.json") or "{}").get("license")
        fields.append(value.get("type", "") if isinstance(value, dict) else str(value or ""))
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    with contextlib.suppress(ValueError, AttributeError):
        project = tomllib.loads(read_text(root / "pyproject.toml")).get("project", {})
        value = project.get("license", "")
        fields.append(value.get("text", "") if isinstance(value, dict) else str(value))
        classifiers += project.get("classifiers", [])
    for name in ("setup.cfg", "setup.py"):
        text = read_text(root / name)
        fields += re.findall(r"""^\s*licen[cs]e\s*=\s*["']?([^"'\n]+?)["']?\s*,?\s*$""", text, re.M)
        classifiers += re.findall(r"License :: [^\"'\n]+", text)
    # A repository's licence file speaks for it; its metadata only when there is none.
    return first_known(lambda: from_files(files), lambda: from_fields(fields),
                       lambda: from_classifiers(classifiers))


@dataclass
class Repo:
    name: str
    root: Path  # sample paths are relative to it
    key: str  # unique within a run: the state's cursor is kept under it
    licence: str = "unknown"
    record: list[Path] | None = None  # an installed distribution's files (its RECORD); None: walk root
    golden: bool = False
    _files: list[Path] | None = None

    def files(self, exts: tuple[str, ...]) -> list[Path]:
        if self._files is None:
            self._files = [p for p in (self.record if self.record is not None else walk(self.root))
                           if p.suffix in exts]
        return self._files


def skipped_dir(path: Path) -> bool:
    name = path.name
    return (name.startswith(".") or name in SKIP_DIRS or name.endswith(".egg-info")
            or (path / "pyvenv.cfg").exists())


def walk(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not skipped_dir(Path(dirpath) / d))
        found += [Path(dirpath) / f for f in sorted(filenames)
                  if not f.startswith(".") and not os.path.islink(os.path.join(dirpath, f))]
    return found


def dist_repo(info: Path) -> Repo:
    """An installed distribution: its files from RECORD, its licence from the dist-info."""
    import csv
    import io
    from email.parser import HeaderParser

    site = info.parent
    meta = HeaderParser().parsestr(read_text(info / "METADATA").split("\n\n", 1)[0])
    name = meta.get("Name") or info.name.split("-")[0]
    files = []
    for row in csv.reader(io.StringIO(read_text(info / "RECORD"))):
        rel = PurePosixPath(row[0]) if row else None
        if rel is None or rel.is_absolute() or ".." in rel.parts or any(
                part == "__pycache__" or part.startswith(".") for part in rel.parts):
            continue
        path = site / rel
        if path.is_file() and not path.is_symlink():
            files.append(path)
    # A distribution's metadata is explicit; its licence files often include those of vendored code.
    licence_files = [p for p in info.rglob("*") if p.is_file() and (
        p.relative_to(info).parts[0] == "licenses" or LICENCE_FILE.match(p.name))]
    licence = first_known(lambda: from_fields([meta.get("License-Expression") or "", meta.get("License") or ""]),
                          lambda: from_classifiers(meta.get_all("Classifier") or []),
                          lambda: from_files(licence_files))
    return Repo(name, site, str(info), licence, sorted(set(files)))


def discover(sources, golden: bool = False) -> list[Repo]:
    """Each source is a repository, a folder of repositories, or a site-packages folder (each installed
    distribution a repository); golden sources are taken whole (a folder is one repository) or one file."""
    repos = []
    for source in sources:
        path = Path(source).expanduser().resolve()
        if not path.exists():
            raise AssistantError(f"{source}: no such file or folder")
        if path.is_file():
            if not golden:
                raise AssistantError(f"{source}: not a folder (a source is a repository or a folder of them)")
            repos.append(Repo(path.name, path.parent, str(path), folder_licence(path.parent), [path], True))
        elif infos := sorted(path.glob("*.dist-info")):
            repos += [dist_repo(info) for info in infos]
        elif golden or any((path / m).exists() for m in REPO_MARKERS) or any(
                LICENCE_FILE.match(p.name) for p in path.iterdir()):
            repos.append(Repo(path.name, path, str(path), folder_licence(path), golden=golden))
        else:
            repos += [Repo(d.name, d, str(d), folder_licence(d)) for d in sorted(path.iterdir())
                      if d.is_dir() and not skipped_dir(d)]
    return repos


# --- samples --------------------------------------------------------------------------------------------


def read_source(path: Path, max_bytes: int) -> tuple[str | None, str]:
    """The file's text (a notebook's code cells), or None and why the file is skipped."""
    notebook = path.suffix == ".ipynb"
    if path.stat().st_size > max_bytes * (16 if notebook else 1):  # a notebook's outputs do not count in full
        return None, "too large"
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None, "binary"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not utf-8"
    if notebook:
        try:
            cells = [c["source"] for c in json.loads(text)["cells"] if c.get("cell_type") == "code"]
        except (ValueError, KeyError, TypeError, AttributeError):
            return None, "bad notebook"
        cells = ["".join(c) if isinstance(c, list) else str(c) for c in cells]
        text = "\n\n".join("\n".join(line for line in c.splitlines() if not line.startswith(("%", "!"))) for c in cells)
        if len(text.encode("utf-8")) > max_bytes:
            return None, "too large"
    return text, ""


def record(repo: Repo, path: Path, stack: str, instruction: str, response: str, line: int, name: str,
           checks: list[str]) -> dict:
    return {"v": 1, "stack": stack, "instruction": instruction, "response": response, "source": repo.name,
            "path": path.relative_to(repo.root).as_posix(), "line": line, "name": name, "licence": repo.licence,
            "checks": checks, "golden": repo.golden}


def package_of(path: Path) -> tuple[Path, str]:
    """The folder to import from and the file's package (its enclosing folders that have __init__.py)."""
    folder, parts = path.parent, []
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    return folder, ".".join(parts)


def module_imports(tree: ast.Module, package: str) -> tuple[str, list[str]]:
    """The module's __future__ imports and its other top-level imports (try blocks of imports included), relative
    ones made absolute so that they work outside the package."""
    future, imports = [], []
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
            future.append(ast.unparse(stmt))
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)) or isinstance(stmt, ast.Try) and all(
                isinstance(s, (ast.Import, ast.ImportFrom, ast.Pass, ast.Assign))
                for s in stmt.body + stmt.orelse + stmt.finalbody + [s for h in stmt.handlers for s in h.body]):
            for node in ast.walk(stmt):
                parts = package.split(".") if package else []
                if isinstance(node, ast.ImportFrom) and node.level and node.level <= len(parts):
                    base = parts[: len(parts) - node.level + 1]
                    node.module, node.level = ".".join(base + ([node.module] if node.module else [])), 0
            imports.append(ast.unparse(stmt))
    return "\n".join(future), imports


def python_instruction(node, cls: str | None, doc: str) -> str:
    import doctest

    returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
    kind = f"method of class `{cls}`" if cls else "function"
    summary = " ".join(doc.strip().split("\n\n")[0].split())
    text = (f"Write {'an async' if isinstance(node, ast.AsyncFunctionDef) else 'a'} Python {kind} "
            f"`{node.name}({ast.unparse(node.args)}){returns}`: {summary}")
    try:
        examples = doctest.DocTestParser().get_examples(doc)
    except ValueError:
        examples = []
    shown = ["\n".join(("... " if i else ">>> ") + line for i, line in enumerate(e.source.rstrip("\n").split("\n")))
             + ("\n" + e.want.rstrip("\n") if e.want.strip() else "") for e in examples]
    return text + ("\n\nExamples:\n" + "\n".join(shown) if shown else "")


def python_outcomes(text: str, path: Path, repo: Repo, box) -> tuple[list, str]:
    """(sample or None, why rejected) for each function with a docstring, in source order."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # generated code can nest past the parser
        return [], "python syntax error"
    folder, package = package_of(path)
    future, imports = module_imports(tree, package)
    lines = text.splitlines(keepends=True)
    funcs = (ast.FunctionDef, ast.AsyncFunctionDef)
    owner = {id(f): c for c in ast.walk(tree) if isinstance(c, ast.ClassDef) for f in c.body if isinstance(f, funcs)}
    outcomes, tests = [], []
    for node in sorted((n for n in ast.walk(tree) if isinstance(n, funcs)), key=lambda n: n.lineno):
        doc = ast.get_docstring(node)
        if not doc or not doc.strip():
            continue
        # Decorators included: @property, @staticmethod or @contextmanager change what the examples mean.
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        code = textwrap.dedent("".join(lines[first - 1: node.end_lineno]))
        try:
            compile(code, "<sample>", "exec", dont_inherit=True)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            outcomes.append((None, "compile"))
            continue
        cls = owner.get(id(node))
        outcomes.append((record(repo, path, "python", python_instruction(node, cls and cls.name, doc), code,
                                node.lineno, node.name, ["compile"]), ""))
        if ">>>" in doc:  # a method's examples run against its whole class (decorators included)
            top = min([cls.lineno] + [d.lineno for d in cls.decorator_list]) if cls else 0
            context = textwrap.dedent("".join(lines[top - 1: cls.end_lineno])) if cls else code
            tests.append((len(outcomes) - 1, node.name, context, doc))
    statuses = run_doctests(tests, folder, future, imports, box)
    for index, *_ in tests:
        status = statuses.get(index, "fail")  # no report: the run died or timed out before it
        if status == "fail":
            outcomes[index] = (None, "doctest failed")
        elif status == "pass":
            outcomes[index][0]["checks"] = ["compile", "doctest"]
    return outcomes, ""


def run_doctests(tests: list, folder: Path, future: str, imports: list[str], box) -> dict[int, str]:
    """{index: "pass" | "fail" | "none"} for (index, name, code, doc) tests, BATCH of them per sandbox run."""
    statuses = {}
    for start in range(0, len(tests), BATCH):
        chunk = tests[start: start + BATCH]
        mark = "@@collect-" + secrets.token_hex(8) + "@@"
        payload = {"mark": mark, "path": str(folder), "future": future, "imports": imports,
                   "import_seconds": IMPORT_SECONDS, "seconds": PER_SAMPLE_SECONDS,
                   "functions": [[name, code, doc] for _, name, code, doc in chunk]}
        result = box.run([sys.executable, "-I", "-c", HARNESS], cwd=str(box.workspace), warm=True,
                         timeout=IMPORT_SECONDS + PER_SAMPLE_SECONDS * len(chunk) + 10,
                         stdin=json.dumps(payload).encode("utf-8"), max_output=256 * 1024)
        for line in result.stdout.splitlines():
            if line.startswith(mark):  # the examples' own output can cut a line short: distrust what comes back
                try:
                    i, status = json.loads(line[len(mark):])
                except (ValueError, TypeError):
                    continue
                if isinstance(i, int) and 0 <= i < len(chunk) and status in ("pass", "fail", "none"):
                    statuses[chunk[i][0]] = status
    return statuses


def leading_comment(text: str) -> str:
    """The first comment block at the top of a file that is not a licence header."""
    pos = 0
    pattern = re.compile(r"\s*(//[^\n]*(?:\n\s*//[^\n]*)*|/\*.*?\*/|<!--.*?-->)", re.S)
    for _ in range(4):
        m = pattern.match(text, pos)
        if not m:
            break
        pos = m.end()
        words = " ".join(re.sub(r"//+|/\*+|\*+/|<!--|-->|^\s*\*+", " ", m.group(1), flags=re.M).split())
        if words and not re.search(r"copyright|licen[cs]e|spdx", words, re.I):
            return words[:300]
    return ""


def checker(path: Path, repo: Repo) -> list[str] | None:
    if path.suffix in (".cpp", ".cc", ".h", ".hpp"):
        lang = "c++-header" if path.suffix in (".h", ".hpp") else "c++"
        return ["g++", "-fsyntax-only", "-std=c++17", "-x", lang, "-I", str(repo.root), "-iquote", str(path.parent)]
    return {".js": ["node", "--check"], ".go": ["gofmt", "-l", "-e"]}.get(path.suffix)


def file_outcome(text: str, path: Path, repo: Repo, stack: str, box, note) -> tuple[dict | None, str]:
    import shutil

    checks, argv = ["none"], checker(path, repo)
    tool = argv and shutil.which(argv[0])
    if not argv:
        note(f"no checker for {path.suffix}: samples are not syntax-checked")
    elif not tool:
        note(f"no {argv[0]}: samples are not syntax-checked")
    else:
        # The file goes in through stdin and is checked under its own name in the scratch workspace (the run's
        # folder, whatever the sandbox layer: /tmp is private only under bubblewrap).
        script = 'f="./$1"; shift; cat > "$f" && exec "$@" "$f"'
        result = box.run(["/bin/sh", "-c", script, "sh", path.name, tool, *argv[1:]], cwd=str(box.workspace),
                         timeout=60, stdin=text.encode("utf-8"), warm=True)
        if result.timed_out:
            return None, "check timed out"
        if result.returncode != 0:
            missing = "fatal error" in result.stderr and "No such file or directory" in result.stderr
            return None, "missing include" if missing else "syntax"
        checks = ["syntax"]
    rel = path.relative_to(repo.root).as_posix()
    comment = leading_comment(text)
    instruction = f"Write the {LANGUAGES[path.suffix]} file `{rel}`" + (f": {comment}" if comment else ".")
    return record(repo, path, stack, instruction, text, 1, path.name, checks), ""


# --- the run --------------------------------------------------------------------------------------------


@dataclass
class CollectReport:
    out: str
    stack: str
    sources: int = 0  # repositories seen
    skipped: dict = field(default_factory=dict)  # repository -> why it was left out
    files: int = 0  # files scanned
    files_skipped: dict = field(default_factory=dict)  # why -> files
    written: int = 0  # samples, golden ones included
    golden: int = 0
    rejected: dict = field(default_factory=dict)  # why -> samples
    checks: dict = field(default_factory=dict)  # "compile+doctest" -> samples
    notes: list = field(default_factory=list)
    dedupe: dict | None = None
    finished: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        def counts(d: dict) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(d.items(), key=lambda kv: (-kv[1], kv[0])))

        why = Counter(self.skipped.values())
        lines = [f"wrote {self.written} samples ({self.golden} golden) to {self.out} in {self.seconds:.1f} s",
                 f"repositories: {self.sources} seen, {len(self.skipped)} skipped"
                 + (f" ({counts(why)})" if why else ""),
                 f"files: {self.files} scanned, {sum(self.files_skipped.values())} skipped"
                 + (f" ({counts(self.files_skipped)})" if self.files_skipped else ""),
                 f"rejected: {sum(self.rejected.values())}" + (f" ({counts(self.rejected)})" if self.rejected else ""),
                 f"checks: {counts(self.checks) or 'none'}"]
        if self.dedupe:
            d = self.dedupe
            lines.append(f"dedupe: kept {d.get('kept')} ({d.get('exact_duplicates')} exact and "
                         f"{d.get('near_duplicates')} near duplicates dropped)")
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


class _Collection:
    """One run: the output, its state file, the cursors and the counts."""

    def __init__(self, out: Path, options: dict, report: CollectReport, box, progress):
        self.out, self.options, self.report, self.box, self.progress = out, options, report, box, progress
        self.state_path = out.with_name(out.name + ".state.json")
        self.exts = STACKS[options["stack"]]
        self.seen: set[str] = set()
        self.cache: dict[str, tuple] = {}  # repository -> (file index, outcomes, why skipped): rounds stop mid-file
        self.fh = None

    def open(self, resume: bool) -> None:
        if not resume:
            if os.path.lexists(self.out):
                raise AssistantError(f"{self.out} exists: pass --resume to continue or delete it")
            try:
                self.out.parent.mkdir(parents=True, exist_ok=True)
                self.fh = open(self.out, "xb")
            except OSError as exc:
                raise AssistantError(f"cannot write {self.out}: {exc.strerror or exc}") from None
            self.state = {"v": 1, "options": self.options, "length": 0, "round": 0, "turn": 0, "repos": {},
                          "golden_done": False, "finished": False, "deduped": False, "totals": {}}
            return self.save()
        try:
            self.state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise AssistantError(f"{self.state_path}: no state to resume from; start again without --resume") from None
        changed = [k for k in self.options if self.state["options"].get(k) != self.options[k]]
        if changed:
            raise AssistantError(f"--resume needs the options of the first run; these differ: {', '.join(changed)}")
        length = self.state["length"]
        size = self.out.stat().st_size if self.out.is_file() else -1
        if self.state["finished"] and self.options["dedupe"] and 0 <= size < length:
            self.state["deduped"] = True  # dedupe replaced the file, then the run stopped before saving that
            length = size
        if size < length:
            raise AssistantError(f"{self.out} is missing or shorter than {self.state_path} records; delete both")
        self.fh = open(self.out, "r+b")
        self.fh.truncate(length)  # lines written after the last save (a torn one too) come again
        for number, line in enumerate(self.fh.read().splitlines(), 1):
            try:
                self.seen.add(hashlib.sha256(json.loads(line)["response"].encode("utf-8")).hexdigest())
            except (ValueError, KeyError, TypeError):
                raise AssistantError(f"{self.out}:{number}: not a sample line (edited by hand?); fix it or start "
                                     "again") from None
        self.fh.seek(length)
        for key, value in self.state["totals"].items():
            setattr(self.report, key, value)

    def save(self) -> None:
        from assistant.workspace import replace_file

        self.fh.flush()
        self.state["length"] = self.fh.tell()
        self.state["totals"] = {key: getattr(self.report, key) for key in TOTALS}
        replace_file(self.state_path, json.dumps(self.state, indent=1).encode("utf-8"))

    def note(self, text: str) -> None:
        if text not in self.report.notes:
            self.report.notes.append(text)
            log.warning(text)

    def full(self) -> bool:
        return self.options["max"] is not None and self.report.written >= self.options["max"]

    def emit(self, sample: dict | None, reason: str = "") -> bool:
        r = self.report
        if sample is not None and self.options["require_doctest"] and not sample.get("golden") and (
                "doctest" not in sample["checks"]):
            reason = "no doctest"
        if not reason:
            try:
                line = (json.dumps(sample, ensure_ascii=False) + "\n").encode("utf-8")
                digest = hashlib.sha256(sample["response"].encode("utf-8")).hexdigest()
                reason = "duplicate" if digest in self.seen else ""
            except UnicodeEncodeError:  # a lone surrogate in a golden .jsonl record
                reason = "not UTF-8"
        if reason:
            r.rejected[reason] = r.rejected.get(reason, 0) + 1
            return False
        self.seen.add(digest)
        self.fh.write(line)
        self.fh.flush()
        r.written += 1
        r.golden += bool(sample.get("golden"))
        kind = "+".join(sample.get("checks") or ["none"])
        r.checks[kind] = r.checks.get(kind, 0) + 1
        return True

    def analyse(self, repo: Repo, path: Path) -> tuple[list, str]:
        text, skip = read_source(path, self.options["max_file_kb"] * 1024)
        if text is None:
            return [], skip
        if self.options["stack"] == "python":
            return python_outcomes(text, path, repo, self.box)
        return [file_outcome(text, path, repo, self.options["stack"], self.box, self.note)], ""

    def file_done(self, skip: str) -> None:
        self.report.files += 1
        if skip:
            self.report.files_skipped[skip] = self.report.files_skipped.get(skip, 0) + 1

    def golden(self, paths: list[str]) -> None:
        """Golden samples go first, whatever their licence or name: ready ones from .jsonl files as they are."""
        for path in paths:
            if Path(path).suffix == ".jsonl":
                for line in Path(path).read_text(encoding="utf-8").splitlines():
                    try:
                        rec = json.loads(line)
                        ok = isinstance(rec["instruction"], str) and isinstance(rec["response"], str)
                    except (ValueError, KeyError, TypeError):
                        ok = False
                    if line.strip():
                        self.emit(dict(rec, golden=True) if ok else None, "" if ok else "golden malformed")
                continue
            for repo in discover([path], golden=True):
                for file in repo.files(self.exts):
                    outcomes, skip = self.analyse(repo, file)
                    for sample, reason in outcomes:
                        self.emit(sample, reason)
                    self.file_done(skip)
        self.state["golden_done"] = True
        self.save()

    def take(self, repo: Repo, cursor: dict, quota: int | None) -> None:
        """Samples from repo, from its cursor on, until quota, --max or its files run out."""
        files = repo.files(self.exts)
        taken = 0
        while cursor["file"] < len(files) and not self.full() and (quota is None or taken < quota):
            index, path = cursor["file"], files[cursor["file"]]
            if self.cache.get(repo.key, (None,))[0] != index:
                self.cache[repo.key] = (index, *self.analyse(repo, path))
            _, outcomes, skip = self.cache[repo.key]
            while cursor["item"] < len(outcomes) and not self.full() and (quota is None or taken < quota):
                sample, reason = outcomes[cursor["item"]]
                cursor["item"] += 1
                if self.emit(sample, reason):
                    taken += 1
                    cursor["written"] += 1
                    cursor["in_round"] += 1
            if cursor["item"] < len(outcomes):
                return  # stopped inside the file: the next round goes on from here
            self.file_done(skip)
            cursor["file"], cursor["item"] = index + 1, 0
            self.save()
            if self.progress:
                self.progress(self.report, f"{repo.name}/{path.relative_to(repo.root).as_posix()}")

    def run(self, repos: list[Repo], golden: list[str]) -> None:
        state = self.state
        if not state["golden_done"]:
            self.golden(golden)
        quota, rounds, first = self.options["samples"], self.options["rounds"], state["round"]
        for rnd in range(first, rounds):
            for turn in range(state["turn"] if rnd == first else 0, len(repos)):
                if self.full():
                    break
                state["round"], state["turn"] = rnd, turn
                cursor = state["repos"].setdefault(repos[turn].key, {"file": 0, "item": 0, "written": 0})
                if cursor.get("round") != rnd:  # the repository's first turn this round
                    cursor["round"], cursor["in_round"] = rnd, 0
                self.take(repos[turn], cursor, None if quota is None else quota - cursor["in_round"])
                state["turn"] = turn + 1
                self.save()
            state["round"], state["turn"] = rnd + 1, 0
            self.save()
        state["finished"] = self.report.finished = True
        self.save()


@contextlib.contextmanager
def scratch_box(policy: str = "auto", uid: int | None = None):
    """A sandbox whose workspace is an empty temporary folder: untrusted doctests and checkers can write nothing
    that matters."""
    import shutil
    import tempfile

    from assistant import sandbox

    folder = tempfile.mkdtemp(prefix="assistant-collect-")
    box = sandbox.Sandbox(Path(folder), policy, sandbox.DEFAULT_SANDBOX_UID if uid is None else uid)
    try:
        yield box
    finally:
        box.close()
        shutil.rmtree(folder, ignore_errors=True)


def collect(sources, out_path, *, stack: str, max_samples: int | None = None, samples_per_source: int | None = None,
            rounds: int = 1, resume: bool = False, golden=(), dedupe: bool = False, max_file_kb: int = 256,
            any_licence: bool = False, require_doctest: bool = False, box=None, progress=None) -> CollectReport:
    """Collect samples from sources into out_path (JSONL); see the module docstring. `progress(report, where)`
    is called after each file (the state is saved by then; raising KeyboardInterrupt there stops the run as
    Ctrl-C would). Without `box`, doctests and checkers run in a sandbox of an empty temporary folder."""
    start = time.monotonic()
    if stack not in STACKS:
        raise AssistantError(f"unknown stack {stack!r}; choose one of {', '.join(STACKS)}")
    for flag, value in (("--max", max_samples), ("--samples", samples_per_source), ("--rounds", rounds),
                        ("--max-file-kb", max_file_kb)):
        if value is not None and value < 1:
            raise AssistantError(f"{flag} must be at least 1, not {value}")
    if require_doctest and stack != "python":
        raise AssistantError("--require-doctest goes with --stack python")
    if not sources and not golden:
        raise AssistantError("nothing to collect from: give --source (or --golden)")
    if dedupe:
        from assistant import libcore
        from assistant.plugins.dedupe import dedupe_file

        libcore.backend()  # no C extension: say so now, not after the collection
    for path in golden:
        if not Path(path).expanduser().exists():
            raise AssistantError(f"{path}: no such file or folder")
    out = Path(out_path).expanduser().absolute()
    options = {"stack": stack, "sources": [str(Path(s).expanduser().resolve()) for s in sources],
               "golden": [str(Path(g).expanduser().resolve()) for g in golden], "max": max_samples,
               "samples": samples_per_source, "rounds": rounds, "max_file_kb": max_file_kb,
               "any_licence": any_licence, "require_doctest": require_doctest, "dedupe": dedupe}
    report = CollectReport(str(out), stack)
    repos = []
    for repo in discover(options["sources"]):
        report.sources += 1
        why = ("homework name" if HOMEWORK.search(repo.name) else
               "" if any_licence or repo.licence in PERMISSIVE else f"licence {repo.licence}")
        if why:
            report.skipped[repo.name if repo.name not in report.skipped else repo.key] = why
        else:
            repos.append(repo)
    with contextlib.ExitStack() as exits:
        if box is None:
            box = exits.enter_context(scratch_box())
        run = _Collection(out, options, report, box, progress)
        run.open(resume)
        exits.callback(lambda: run.fh.close())  # the handle in use at the end (dedupe reopens it)
        run.run(repos, options["golden"])
        if dedupe and not run.state["deduped"]:
            run.fh.close()
            result = dedupe_file(out, out, field="response")
            report.dedupe = {k: v for k, v in result.to_dict().items() if k != "clusters"}
            run.state["deduped"] = True
            run.fh = open(out, "ab")
            run.save()
    report.seconds = round(time.monotonic() - start, 3)
    return report


# --- command line and tool ------------------------------------------------------------------------------

EPILOG = """examples:
  assistant collect --stack python --source ~/src --out samples.jsonl
  assistant collect --stack python --source .venv/lib/python3.11/site-packages --max 500 --out sp.jsonl
  assistant collect --stack python --source ~/src --out s.jsonl --samples 20 --rounds 5   a balanced mix
  assistant collect --stack python --source ~/src --out s.jsonl --resume                  after Ctrl-C
  assistant collect --stack cpp --source ~/src/engine --golden mine.jsonl --out cpp.jsonl --dedupe

A source is a repository (a folder with .git, a licence file, pyproject.toml, setup.py, package.json or
go.mod), a folder of repositories, or a site-packages folder (each installed distribution a repository).
Each output line: {"v": 1, "stack", "instruction", "response", "source", "path", "line", "name",
"licence", "checks", "golden"}. OUT.state.json beside the output is what --resume continues from."""


def add_parser(sub, shared) -> None:
    import argparse

    p = sub.add_parser(
        "collect", parents=[shared], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="collect training samples (instruction/response JSONL) from local repositories, offline",
        description="Python: every function with a docstring that compiles on its own and passes its doctests\n"
        "(run in the sandbox with the module's imports) is a sample. Other stacks: every file whose syntax\n"
        "checks (g++ -fsyntax-only, node --check, gofmt -e, in the sandbox; unchecked where the tool is\n"
        "missing). Repositories need a permissive licence (MIT, BSD, Apache, ISC, PSF, ...) and a name that\n"
        "is not homework's; hidden, vendored and build folders, binary and large files are skipped. The\n"
        "output is appended as it goes; Ctrl-C, then the same command with --resume, continues.",
        epilog=EPILOG)
    p.add_argument("--stack", required=True, choices=tuple(STACKS), help="which files: python (.py .ipynb), "
                   "cpp (.cpp .cc .h .hpp), web (.js .ts), vite (.ts .tsx .vue .svelte), go (.go)")
    p.add_argument("--source", nargs="+", default=[], metavar="PATH",
                   help="repositories, folders of repositories or site-packages folders")
    p.add_argument("--out", required=True, metavar="FILE.jsonl", help="the samples (must not exist unless --resume)")
    p.add_argument("--max", type=int, dest="max_samples", metavar="N", help="stop after N samples in all")
    p.add_argument("--samples", type=int, dest="samples_per_source", metavar="N",
                   help="at most N samples from each repository per round")
    p.add_argument("--rounds", type=int, default=1, metavar="N",
                   help="go round the repositories N times, each round going on where the last stopped (default 1)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run (same options)")
    p.add_argument("--golden", nargs="+", default=[], metavar="PATH",
                   help="samples included first, whatever their licence: folders, files, or .jsonl of ready samples")
    p.add_argument("--dedupe", action="store_true", help="drop near duplicates at the end (assistant dedupe)")
    p.add_argument("--max-file-kb", type=int, default=256, metavar="KB", help="skip larger files (default 256)")
    p.add_argument("--any-licence", "--any-license", dest="any_licence", action="store_true",
                   help="take repositories whatever their licence (it is still recorded)")
    p.add_argument("--require-doctest", action="store_true", help="python: keep only doctest-validated samples")


@contextlib.contextmanager
def progress_bar(total: int | None):
    """progress(report, where) for collect(): a bar of samples on stderr (a terminal only)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("collecting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[where]}"), console=Console(stderr=True), disable=not sys.stderr.isatty())
    task = bar.add_task("collect", total=total, where="")
    with bar:
        yield lambda report, where: bar.update(task, completed=report.written, where=where[-50:])


def run(args, settings) -> int:
    """`assistant collect`: the CLI entry."""
    import shlex

    with scratch_box(settings.sandbox, settings.sandbox_uid) as box, progress_bar(args.max_samples) as progress:
        try:
            report = collect(args.source, args.out, stack=args.stack, max_samples=args.max_samples,
                             samples_per_source=args.samples_per_source, rounds=args.rounds, resume=args.resume,
                             golden=args.golden, dedupe=args.dedupe, max_file_kb=args.max_file_kb,
                             any_licence=args.any_licence, require_doctest=args.require_doctest, box=box,
                             progress=progress)
        except KeyboardInterrupt:
            words = sys.argv[1:] if "collect" in sys.argv[1:] else ["collect", "..."]
            again = "assistant " + shlex.join(words) + ("" if "--resume" in words else " --resume")
            print(f"interrupted: `{again}` continues", file=sys.stderr)
            return 130
    print(report.summary())
    return 0


@requires_approval
def collect_samples(stack: str, sources: list[str], out: str, max_samples: int = 200, dedupe: bool = True,
                    context=None) -> str:
    """Build a training dataset from local code.

    Python functions whose doctests pass, or whole files whose syntax checks.

    Args:
        stack: python, cpp, web, vite or go.
        sources: Folders to read: repositories, folders of repositories, or a site-packages folder.
        out: The JSONL file to write, in the workspace (it must not exist yet).
        max_samples: Stop after this many samples.
        dedupe: Drop near-duplicate samples at the end.
    """
    if context is None:
        raise ToolError("collect_samples needs a workspace")
    root = context.workspace.root
    target = context.workspace.resolve(out, for_write=True)
    paths = [str(root / Path(s).expanduser()) for s in sources]  # an absolute path stays as it is
    if context.undo:
        context.undo.before_paths("collect_samples", [target, target.with_name(target.name + ".state.json")])
    try:
        with scratch_box(context.settings.sandbox, context.settings.sandbox_uid) as box:
            report = collect(paths, target, stack=stack, max_samples=max_samples, dedupe=dedupe, box=box)
    except ToolError:
        raise
    except AssistantError as exc:
        raise ToolError(str(exc)) from None
    return report.summary()


@hookimpl
def register_tools(register):
    register(collect_samples)
