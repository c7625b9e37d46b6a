"""Shared by the security matrix (shared/SECURITY.md): the sandbox's processes, a world-readable fake home full of
secrets, sandboxes to test in each layer and path, and a Ctrl-C that lands while a command runs.

Not a conftest.py: tests/conftest.py is imported as `conftest` by the other tests, and a second one would shadow it.
Test modules import the fixtures from here.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from assistant import sandbox

# The uid commands run as: a dedicated unprivileged uid when the assistant runs as root (the test machine does).
UID = sandbox.DEFAULT_SANDBOX_UID if os.geteuid() == 0 else os.getuid()

# Environment variables holding keys: none of them may reach a sandboxed command.
SECRET_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "HF_TOKEN",
              "ASSISTANT_API_KEY", "DB_PASSWORD", "TELEMETRY_PASS", "CONTEXT7_API_KEY")

# (policy, warm): the bubblewrap layer cold and through the warm worker, and the unshare layer.
MODES = {"bwrap-cold": ("bwrap", False), "bwrap-warm": ("bwrap", True), "unshare-cold": ("unshare", False)}
FS_MODES = ["bwrap-cold", "bwrap-warm"]
PROC_MODES = ["bwrap-cold", "bwrap-warm", "unshare-cold"]


# --- processes ----------------------------------------------------------------------------------------------


def _stat_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def live_pids(uid: int = UID) -> set[int]:
    """Processes of uid that still run (zombies excluded: they are dead, only not yet reaped)."""
    found = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
        except OSError:
            continue
        state = _stat_state(int(entry.name))
        if state is not None and state not in ("Z", "X"):
            found.add(int(entry.name))
    return found


MARK_VAR = "SECURITY_TEST_RUN"  # set in the environment of every test run: inherited by all it starts


def _environ(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def pids_with(marker: str) -> dict[int, str]:
    """Live processes (any uid) whose command line holds marker, or whose environment has MARK_VAR=marker: what a
    run started, forks, `setsid` escapees and daemons included, and nothing another test or program runs."""
    me = os.getpid()
    tagged = f"{MARK_VAR}={marker}".encode()
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != me:
            pid = int(entry.name)
            cmd = cmdline(pid)
            if (marker in cmd or tagged in _environ(pid).split(b"\0")) and _stat_state(pid) not in (None, "Z", "X"):
                found[pid] = cmd
    return found


def wait_until(condition, timeout: float = 5.0, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(step)


def marker() -> str:
    """Digits unique to one test, usable as the fraction of a `sleep` argument and in a Python comment."""
    return str(random.randint(10**8, 10**9 - 1))


def as_uid_on_host(argv: list[str]) -> subprocess.CompletedProcess:
    """argv as the sandbox's uid but outside the sandbox: shows that only the sandbox stands in the way."""
    prefix = []
    if os.geteuid() == 0:
        prefix = ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", "--"]
    return subprocess.run(prefix + argv, capture_output=True, text=True, timeout=20)


class InterruptWhenRunning:
    """Sends SIGINT (what Ctrl-C in a terminal does) to this process once a process with `marker` runs."""

    def __init__(self, marker: str, timeout: float = 20.0):
        self.marker = marker
        self.timeout = timeout
        self.seen: dict[int, str] = {}
        self.sent_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        end = time.monotonic() + self.timeout
        while not self._stop.is_set() and time.monotonic() < end:
            self.seen = pids_with(self.marker)
            if self.seen:
                time.sleep(0.2)  # let it settle into its sleep
                self.sent_at = time.monotonic()
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.02)

    def __enter__(self) -> "InterruptWhenRunning":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# --- sandboxes ----------------------------------------------------------------------------------------------


class Box:
    """A Sandbox of one layer, run cold or through the warm worker; refuses to test a degraded layer."""

    def __init__(self, workspace: Path, mode: str):
        self.mode = mode
        self.policy, self.warm = MODES[mode]
        self.sandbox = sandbox.Sandbox(Path(workspace), self.policy)
        self.workspace = self.sandbox.workspace
        layer = self.sandbox.layer
        assert layer == self.policy, f"{mode}: the sandbox runs in layer {layer}, not {self.policy}: {self.sandbox.probes}"

    def run(self, argv: list[str], *, timeout: float = 20, env: dict[str, str] | None = None,
            **kwargs) -> sandbox.Result:
        """Runs argv with a fresh marker in its environment (self.mark), to find whatever it leaves running."""
        self.mark = marker()
        env = {MARK_VAR: self.mark, **(env or {})}
        result = self.sandbox.run(list(argv), timeout=timeout, warm=self.warm, env=env, **kwargs)
        # A warm run that quietly went cold would test the wrong path.
        assert result.warm == (self.warm and not kwargs.get("network")), f"{self.mode}: warm={result.warm}"
        return result

    def sh(self, script: str, **kwargs) -> sandbox.Result:
        return self.run(["bash", "-c", script], **kwargs)

    def py(self, code: str, *args: str, **kwargs) -> sandbox.Result:
        return self.run([sys.executable, "-I", "-c", code, *args], **kwargs)

    def settle(self) -> None:
        """Run once, so that the warm worker is up before what a test times or counts."""
        assert self.run(["true"]).returncode == 0


@pytest.fixture
def boxes():
    """boxes(workspace, mode) -> Box; every box is closed after the test."""
    made: list[Box] = []

    def make(workspace, mode: str) -> Box:
        box = Box(workspace, mode)
        made.append(box)
        return box

    yield make
    for box in made:
        box.sandbox.close()


@pytest.fixture
def box(request, workspace, boxes):
    """A Box on the test's workspace; parametrize with indirect=True over MODES' names."""
    return boxes(workspace, request.param)


# --- a machine's worth of secrets, readable by the sandbox's uid unless the sandbox hides them ---------------


@pytest.fixture
def world(monkeypatch):
    """Under /var/tmp (not /tmp, which bubblewrap replaces anyway): a fake home with ~/.ssh, ~/.aws, ~/.netrc, an
    assistant home with an audit log and memory, a config file, all readable (and the assistant's data writable)
    by the sandbox's uid on the host; `pub`, a folder anyone may write, holding the workspace two levels down, so
    that `../../x` from the workspace is a place the uid could write without the sandbox."""
    root = Path(tempfile.mkdtemp(prefix="assistant-security-", dir="/var/tmp"))
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    try:
        root.chmod(0o755)
        pub = root / "pub"
        ws = pub / "proj" / "ws"
        ws.mkdir(parents=True)
        for d in (pub, pub / "proj"):
            d.chmod(0o777)
        (ws / "hello.py").write_text("print('hello')\n")
        victim = pub / "victim.txt"
        victim.write_text("original\n")
        victim.chmod(0o666)

        home = root / "home"
        files = {home / ".ssh" / "id_rsa": f"-----BEGIN OPENSSH PRIVATE KEY-----\n{secret}\n",
                 home / ".aws" / "credentials": f"[default]\naws_secret_access_key = {secret}\n",
                 home / ".netrc": f"machine example.com login me password {secret}\n"}
        ahome = root / "assistant-home"
        files[ahome / "logs" / "session.jsonl"] = f'{{"v": 1, "kind": "user", "data": {{"text": "{secret}"}}}}\n'
        files[ahome / "memory_bank" / "global.md"] = f"- the deploy password is {secret}\n"
        config = root / "config.toml"
        files[config] = f'api_key = "{secret}"\n'
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        for dirpath, dirnames, filenames in os.walk(root):
            d = Path(dirpath)
            if d == pub or pub in d.parents:
                continue
            writable = d == ahome or ahome in d.parents
            d.chmod(0o777 if writable else 0o755)
            for name in filenames:
                (d / name).chmod(0o666 if writable or d / name == config else 0o644)

        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("ASSISTANT_HOME", str(ahome))
        monkeypatch.setenv("ASSISTANT_CONFIG", str(config))
        for name in SECRET_ENV:
            monkeypatch.setenv(name, f"{secret}-{name}")
        monkeypatch.setenv("HARMLESS_SETTING", "visible")
        yield SimpleNamespace(root=root, pub=pub, ws=ws, victim=victim, home=home, ahome=ahome, config=config,
                              secret=secret, secret_files=list(files))
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- probes run inside the sandbox: they print an outcome per path, never a file's content -------------------

WRITE_PROBE = r"""
import errno, os, sys
for path in sys.argv[1:]:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    except OSError as exc:
        print(path, errno.errorcode[exc.errno])
    else:
        os.write(fd, b"pwned\n")
        os.close(fd)
        print(path, "WRITTEN")
"""

READ_PROBE = r"""
import errno, sys
for path in sys.argv[1:]:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        print(path, errno.errorcode[exc.errno])
    else:
        print(path, "READ-%d-BYTES" % len(data))
"""


def probe(box: Box, code: str, *paths: str) -> dict[str, str]:
    result = box.py(code, *paths)
    assert result.returncode == 0 and not result.stderr, result.render()
    return dict(line.rsplit(" ", 1) for line in result.stdout.splitlines())


def hide_programs(monkeypatch, *names: str) -> None:
    """Make programs look uninstalled to this process, however it looks them up (PATH, /usr/bin, /bin)."""
    hidden = set(names)
    real_which, real_access, real_exists = shutil.which, os.access, os.path.exists
    real_path_exists, real_is_file = Path.exists, Path.is_file

    def named(path) -> bool:
        return isinstance(path, (str, bytes, os.PathLike)) and os.path.basename(os.fsdecode(path)) in hidden

    monkeypatch.setattr(shutil, "which", lambda cmd, *a, **k: None if named(cmd) else real_which(cmd, *a, **k))
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if named(p) else real_access(p, mode, *a, **k))
    monkeypatch.setattr(os.path, "exists", lambda p: False if named(p) else real_exists(p))
    monkeypatch.setattr(Path, "exists", lambda self, *a, **k: False if self.name in hidden else real_path_exists(self, *a, **k))
    monkeypatch.setattr(Path, "is_file", lambda self, *a, **k: False if self.name in hidden else real_is_file(self, *a, **k))
