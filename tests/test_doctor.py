"""`assistant doctor`: which sandbox layer is active and why, the exit status, and the JSON form."""

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from assistant import sandbox
from assistant.cli import main

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "assistant", *args], cwd=cwd, text=True, capture_output=True,
                          env=dict(os.environ), timeout=120)


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch):
    """main() routes the assistant's warnings to stderr and stops their propagation; undo that for other tests."""
    logger = logging.getLogger("assistant")
    monkeypatch.setattr(logger, "handlers", list(logger.handlers))
    monkeypatch.setattr(logger, "propagate", logger.propagate)


def facts(stdout: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in stdout.splitlines())}


@pytest.fixture
def no_bwrap(monkeypatch):
    """bubblewrap made unavailable: not on PATH, and not in the folders the sandbox also looks in."""
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "bwrap" else real_which(name, *a, **k))
    monkeypatch.setattr(sandbox, "TOOL_DIRS", ())


@needs_bwrap
def test_doctor_reports_the_active_layer(workspace):
    r = cli("doctor", cwd=workspace)
    assert r.returncode == 0, r.stderr
    got = facts(r.stdout)
    assert got["sandbox policy"].startswith("auto")
    assert got["active layer"].startswith("bwrap")
    assert got["layer bwrap"] == "ok"
    assert got["layer rlimits"].startswith("ok (not accepted by --sandbox auto)")
    assert got["bubblewrap"].startswith(shutil.which("bwrap")) and "bubblewrap 0." in got["bubblewrap"]
    assert got["user namespaces"].startswith("work")
    assert "max_user_namespaces" in got
    if os.geteuid() == 0:
        assert got["running as root"] == "yes" and got["commands run as"].startswith("uid 65533")
    else:
        assert got["running as root"] == "no" and got["commands run as"].startswith(f"uid {os.getuid()}")
    assert got["model"].startswith("smollm2-135m: not cached")
    assert got["home"] == os.environ["ASSISTANT_HOME"]
    assert got["model cache"] == os.environ["ASSISTANT_MODELS_DIR"]
    assert got["logs"] == str(Path(os.environ["ASSISTANT_HOME"]) / "logs")


def test_doctor_json_has_every_fact(workspace, capsys):
    assert main(["doctor", "--json", "--sandbox", "weak", "--workspace", str(workspace)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"ok", "workspace", "sandbox_policy", "active_layer", "error", "layers", "bubblewrap", "user_namespaces",
            "root", "run_uid", "model", "models_dir", "home", "logs", "git_safe_bare_repository"} <= set(data)
    assert data["ok"] is True and data["error"] is None and data["sandbox_policy"] == "weak"
    assert list(data["layers"]) == ["bwrap", "unshare", "rlimits"]
    assert all(layer["accepted"] for layer in data["layers"].values())  # weak accepts every layer
    assert data["active_layer"] == next(name for name, layer in data["layers"].items() if layer["ok"])
    assert set(data["user_namespaces"]) >= {"max_user_namespaces", "unprivileged_userns_clone",
                                            "apparmor_restrict_unprivileged_userns", "works"}
    assert data["model"] == {"spec": "smollm2-135m", "registry": True, "cached": False,
                             "path": data["model"]["path"]}
    assert data["run_uid"] == (65533 if os.geteuid() == 0 else os.getuid())


def test_doctor_without_bubblewrap_fails_and_names_the_fix(workspace, capsys, no_bwrap):
    assert main(["doctor", "--sandbox", "bwrap", "--workspace", str(workspace)]) == 1
    out, err = capsys.readouterr()
    got = facts(out)
    assert got["active layer"].startswith("none")
    assert got["layer bwrap"].startswith("missing: bwrap not found")
    assert got["bubblewrap"] == "not found"
    assert err.startswith("error: no sandbox layer available for --sandbox bwrap")
    assert "apt-get install bubblewrap" in err and "--sandbox weak" in err

    assert main(["doctor", "--json", "--sandbox", "bwrap", "--workspace", str(workspace)]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["active_layer"] is None and "install bubblewrap" in data["error"]


def test_doctor_help_teaches_and_the_import_stays_light():
    code = ("import sys\nfrom assistant.cli import main\ntry:\n    main(['doctor', '--help'])\nexcept SystemExit:\n"
            "    pass\nmain(['doctor', '--sandbox', 'rlimits'])\n"
            "heavy = [m for m in ('torch', 'transformers', 'httpx', 'prompt_toolkit') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert "layers, strongest first" in out and "exit status: 0 when" in out and "--json" in out
    assert out.strip().endswith("HEAVY []")


def test_doctor_recommends_gits_safe_bare_repository(workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # git's global config lives in $HOME/.gitconfig
    r = cli("doctor", "--sandbox", "weak", cwd=workspace)
    assert "recommended: git config --global safe.bareRepository explicit" in facts(r.stdout)["git safe.bareRepository"]
    (tmp_path / ".gitconfig").write_text("[safe]\n\tbareRepository = explicit\n")
    r = cli("doctor", "--sandbox", "weak", cwd=workspace)
    assert facts(r.stdout)["git safe.bareRepository"] == "explicit"
