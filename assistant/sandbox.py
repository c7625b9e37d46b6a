"""Running model-written commands and code in a sandbox that says which isolation layer holds, and fails closed.

Layers, strongest first (shared/ARCHITECTURE.md "Sandbox", docs/sandbox.md):

- ``bwrap``: bubblewrap with every namespace unshared (no network), a read-only root, the workspace the only
  writable bind, a private /tmp, secrets hidden, no capabilities, its own session, killed with its parent.
  It runs as a real unprivileged host uid: the user's own, or, when the assistant runs as root, a dedicated
  uid (``sandbox_uid``) that reaches the workspace through an idmapped mount, so process limits bind.
- ``unshare``: util-linux ``unshare`` (user, network, pid, ipc, uts and mount namespaces) as the same
  unprivileged uid, secret files and folders covered; the file system is otherwise as visible as to that uid.
- ``rlimits``: resource limits and a process group only. Not isolation: used only when the user opts in.

Every layer applies the same limits, scrubs keys and tokens from the environment, keeps the head and tail of the
output (escaped) and kills the command's process group when it ends, times out or is interrupted; the namespace
layers kill every process it started, whatever its group.
"""

from __future__ import annotations

import atexit
import logging
import os
import platform
import re
import resource
import selectors
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from assistant import sandbox_seccomp as seccomp
from assistant.errors import AssistantError
from assistant.text import escape_control

log = logging.getLogger("assistant.sandbox")

SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASS(W|_|$)|CREDENTIAL|COOKIE|SESSION|AUTH)", re.I)  # TELEMETRY_PASS too
DEFAULT_OUTPUT_BYTES = 64 * 1024
LAYERS = ("bwrap", "unshare", "rlimits")
# What each --sandbox choice accepts, strongest first. `weak` is the only one that may end at rlimits.
POLICIES = {
    "auto": ("bwrap", "unshare"),
    "bwrap": ("bwrap",),
    "unshare": ("unshare",),
    "weak": ("bwrap", "unshare", "rlimits"),
    "rlimits": ("rlimits",),
}
TMPFS_SIZES = {"/tmp": 1024**3, "/dev/shm": 256 * 1024**2, "/run": 16 * 1024**2}  # private to each run
DEFAULT_SANDBOX_UID = 65533  # used only when the assistant runs as root; see docs/sandbox.md
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: sudo apt-get install bubblewrap; Fedora: sudo dnf install "
                "bubblewrap), or pass --sandbox weak to accept resource limits without isolation")


class SandboxError(AssistantError):
    """No acceptable sandbox layer: the message names what is missing and how to fix it."""


@dataclass
class Limits:
    cpu_seconds: int | None = None
    memory_bytes: int | None = 4 * 1024**3
    file_size_bytes: int | None = 1024**3
    open_files: int | None = 1024
    processes: int | None = 256  # beyond what the sandbox's uid already runs

    def pairs(self) -> list[tuple[int, int | None]]:
        return [(resource.RLIMIT_CPU, self.cpu_seconds), (resource.RLIMIT_AS, self.memory_bytes),
                (resource.RLIMIT_FSIZE, self.file_size_bytes), (resource.RLIMIT_NOFILE, self.open_files),
                (resource.RLIMIT_NPROC, self.processes)]


@dataclass
class Result:
    returncode: int | None
    stdout: str
    stderr: str
    truncated: bool = False
    timed_out: bool = False
    layer: str = "rlimits"
    seconds: float = 0.0
    warm: bool = False  # ran through the workspace's warm worker

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def render(self) -> str:
        """The observation text: status first, so a failure is visible however much output was cut."""
        if self.timed_out:
            status = f"timed out after {self.seconds:.1f}s (every process it started was killed)"
        elif self.returncode is not None and self.returncode < 0:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:  # a real-time signal has no name
                name = str(-self.returncode)
            status = f"killed by signal {name}" + SIGNAL_HINTS.get(name, "")
        else:
            status = f"exit status {self.returncode}"
        parts = [status]
        if self.stdout:
            parts.append("stdout:\n" + self.stdout.rstrip("\n"))
        if self.stderr:
            parts.append("stderr:\n" + self.stderr.rstrip("\n"))
        if not self.stdout and not self.stderr:
            parts.append("(no output)")
        return "\n".join(parts)


SIGNAL_HINTS = {"SIGXFSZ": " (the file size limit was exceeded)", "SIGXCPU": " (the CPU time limit was exceeded)"}


class HeadTail:
    """Keeps the first and last `limit/2` bytes of a stream and counts the rest, in bounded memory."""

    def __init__(self, limit: int):
        self.half = max(1, limit // 2)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > self.half:
                del self.tail[: len(self.tail) - self.half]

    @property
    def cut(self) -> int:
        return self.total - len(self.head) - len(self.tail)

    def text(self) -> str:
        head = escape_output(bytes(self.head))
        if not self.cut:
            return head + escape_output(bytes(self.tail))
        return head + f"\n[... {self.cut} bytes cut ...]\n" + escape_output(bytes(self.tail))


def escape_output(data: bytes) -> str:
    """Decode with replacement and make control characters (and so terminal escapes) visible, not active."""
    return escape_control(data.decode("utf-8", errors="replace"))


URL_CREDENTIALS = re.compile(r"://[^/\s:@]*:[^/\s@]+@")  # postgres://user:password@host, redis://:password@host


def scrubbed_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The parent's environment without anything that looks like a key, token or password: by its name, or by a
    value that carries a password in a URL (DATABASE_URL=postgres://app:secret@db)."""
    env = {k: v for k, v in os.environ.items() if not SECRET_ENV.search(k) and not URL_CREDENTIALS.search(v)}
    env.update(extra or {})
    return env


def secret_paths() -> list[Path]:
    """Files and folders that hold credentials or the assistant's own data: never visible inside the sandbox."""
    from assistant.home import home

    user = Path.home()
    paths = [user / p for p in (".ssh", ".aws", ".gnupg", ".netrc", ".git-credentials", ".docker", ".kube",
                                ".pypirc", ".npmrc", ".config/gh", ".config/gcloud", ".azure",
                                ".cache/huggingface", ".huggingface", ".config/assistant",
                                ".local/share/assistant")]
    paths.append(home())
    env = os.environ
    config_home = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else user / ".config"
    paths += [config_home / p for p in ("gh", "gcloud", "assistant", "git/credentials", "hub")]
    paths += [user / p for p in (".cargo/credentials", ".cargo/credentials.toml", ".terraformrc",
                                 ".terraform.d/credentials.tfrc.json", ".config/pip", ".pip")]
    hf_home = Path(env["HF_HOME"]) if env.get("HF_HOME") else (
        Path(env["XDG_CACHE_HOME"]) / "huggingface" if env.get("XDG_CACHE_HOME") else user / ".cache/huggingface")
    paths += [hf_home / "token", hf_home / "stored_tokens"]
    if env.get("CARGO_HOME"):
        paths += [Path(env["CARGO_HOME"]) / "credentials", Path(env["CARGO_HOME"]) / "credentials.toml"]
    # Variables that name a credentials file or folder.
    for var in ("ASSISTANT_CONFIG", "ASSISTANT_MODELS_DIR", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
                "DOCKER_CONFIG", "GNUPGHOME", "NETRC", "HF_TOKEN_PATH", "TF_CLI_CONFIG_FILE", "PIP_CONFIG_FILE",
                "NPM_CONFIG_USERCONFIG", "GOOGLE_APPLICATION_CREDENTIALS", "KUBECONFIG"):
        for part in env.get(var, "").split(os.pathsep):
            if part:
                paths.append(Path(part))
    seen, out = set(), []
    for p in paths:
        p = Path(os.path.abspath(p.expanduser()))
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out


def clamp_limits(limits: Limits, already_running: int = 0) -> list[tuple[int, int]]:
    """(resource, value) pairs to set: never above our own hard limit (a limit can be lowered, never raised).
    The process limit counts every process of the uid, so it is added to what that uid already runs."""
    out = []
    for what, value in limits.pairs():
        if value is None:
            continue
        if what == resource.RLIMIT_NPROC:
            value += already_running
        _, hard = resource.getrlimit(what)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        out.append((what, value))
    return out


PRLIMIT_FLAGS = {resource.RLIMIT_CPU: "--cpu", resource.RLIMIT_AS: "--as", resource.RLIMIT_FSIZE: "--fsize",
                 resource.RLIMIT_NOFILE: "--nofile", resource.RLIMIT_NPROC: "--nproc"}


def processes_of(uid: int) -> int:
    """How many processes the uid runs now (RLIMIT_NPROC counts them all)."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                count += entry.stat().st_uid == uid
            except OSError:
                pass
    return count


# --- the process plumbing every layer shares ----------------------------------------------------------

OUTPUT_GRACE = 0.5  # after a run ends: how long to keep reading output that a stray process may still hold


class Relay:
    """One thread moves a run's bytes: writes its stdin, reads its stdout and stderr into bounded buffers, and
    watches one more file descriptor (the end of the run). It owns and closes the parent's ends of the pipes."""

    def __init__(self, out_fd: int, err_fd: int, in_fd: int, data: bytes, max_output: int):
        self.out, self.err = HeadTail(max_output), HeadTail(max_output // 2)
        self.sel = selectors.DefaultSelector()
        self.open = {out_fd, err_fd}
        self.sel.register(out_fd, selectors.EVENT_READ, self.out)
        self.sel.register(err_fd, selectors.EVENT_READ, self.err)
        self.in_fd, self.view = in_fd, memoryview(data)
        if in_fd >= 0:
            self.open.add(in_fd)
            if data:
                os.set_blocking(in_fd, False)
                self.sel.register(in_fd, selectors.EVENT_WRITE, "stdin")
            else:
                self._close(in_fd)

    def _close(self, fd: int) -> None:
        if fd in self.open:
            self.open.discard(fd)
            try:
                self.sel.unregister(fd)
            except KeyError:
                pass
            os.close(fd)

    def _move(self, key) -> None:
        if key.data == "stdin":
            try:
                self.view = self.view[os.write(key.fd, self.view[:65536]):]
            except BlockingIOError:
                return
            except BrokenPipeError:  # the command does not read (all of) its input: fine
                self.view = self.view[:0]
            if not self.view:
                self._close(key.fd)
            return
        chunk = os.read(key.fd, 65536)
        if chunk:
            key.data.feed(chunk)
        else:
            self._close(key.fd)

    def pump(self, event_fd: int, deadline: float) -> bool:
        """Move bytes until event_fd is readable (True) or the deadline passes (False)."""
        self.sel.register(event_fd, selectors.EVENT_READ, "event")
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                for key, _ in self.sel.select(left):
                    if key.data == "event":
                        return True
                    self._move(key)
        finally:
            self.sel.unregister(event_fd)

    def drain(self, grace: float = OUTPUT_GRACE) -> None:
        """Read what is left until both outputs end, for at most `grace` seconds: a pipe that a stray process
        keeps open (or that sits in a socket's queue) must not hold the caller."""
        deadline = time.monotonic() + grace
        if self.in_fd in self.open:
            self._close(self.in_fd)
        while self.open and (left := deadline - time.monotonic()) > 0:
            for key, _ in self.sel.select(left):
                self._move(key)

    def close(self) -> None:
        for fd in list(self.open):
            self._close(fd)
        self.sel.close()

    @property
    def truncated(self) -> bool:
        return bool(self.out.cut or self.err.cut)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _rlimit_preexec(pairs: list[tuple[int, int]]):
    def apply() -> None:
        for what, value in pairs:
            resource.setrlimit(what, (value, value))

    return apply


def spawn_and_collect(argv: list[str], *, cwd: str, env: dict[str, str], timeout: float, stdin: bytes | None,
                      max_output: int, layer: str, preexec=None, pass_fds=()) -> Result:
    """Start argv as the leader of a new session, collect bounded output, kill the whole group at the end."""
    start = time.monotonic()
    in_r, in_w = os.pipe() if stdin is not None else (-1, -1)
    (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe()
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, start_new_session=True, preexec_fn=preexec,
                                pass_fds=pass_fds, stdout=out_w, stderr=err_w,
                                stdin=in_r if in_r >= 0 else subprocess.DEVNULL)
    except OSError as exc:
        for fd in (in_r, in_w, out_r, err_r):
            if fd >= 0:
                os.close(fd)
        return Result(127, "", f"cannot start {argv[0]}: {exc.strerror}", layer=layer)
    finally:
        for fd in (in_r, out_w, err_w):
            if fd >= 0:
                os.close(fd)
    relay = Relay(out_r, err_r, in_w, stdin or b"", max_output)
    pidfd = os.pidfd_open(proc.pid)  # readable when the leader exits; it stays unreaped until we kill the group
    try:
        timed_out = not relay.pump(pidfd, start + timeout)
    finally:
        # Kill what is left of the group whatever happened (timeout, Ctrl-C). The leader is not reaped yet, so
        # its pid, the group id, cannot have been reused. In the namespace layers the leader is the sandbox's
        # supervisor: its death takes the pid namespace, and so every process the command started, with it.
        _kill_group(proc.pid)
        proc.wait()
        os.close(pidfd)
        try:
            relay.drain()
        finally:
            relay.close()
    return Result(returncode=None if timed_out else proc.returncode, stdout=relay.out.text(),
                  stderr=relay.err.text(), truncated=relay.truncated, timed_out=timed_out, layer=layer,
                  seconds=time.monotonic() - start)


# --- layers --------------------------------------------------------------------------------------------


@dataclass
class Probe:
    layer: str
    ok: bool
    reason: str = ""


@dataclass
class Sandbox:
    """The sandbox of one workspace: picks the strongest acceptable layer once, then runs commands in it."""

    workspace: Path
    policy: str = "auto"
    sandbox_uid: int = DEFAULT_SANDBOX_UID
    hidden: tuple[Path, ...] = ()  # more paths to hide, such as an audit log kept in the workspace
    probes: list[Probe] = field(default_factory=list)
    _layer: str | None = None
    _mounts: "object | None" = None  # assistant.sandbox_root.RootMounts when running as root
    _worker: "object | None" = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _warned: bool = False
    _mounts_lock: threading.Lock = field(default_factory=threading.Lock)
    _made_git: bool = False
    _secret_candidates: list[Path] | None = None
    _reachable: dict[Path, bool] = field(default_factory=dict)
    _resolved: dict[Path, Path] = field(default_factory=dict)
    _readable: list[Path] | None = None

    def __post_init__(self):
        self.workspace = Path(os.path.realpath(self.workspace))
        if self.policy not in POLICIES:
            raise SandboxError(f"unknown sandbox policy {self.policy!r}; choose one of {', '.join(POLICIES)}")

    # -- who runs the commands

    @property
    def as_root(self) -> bool:
        return os.geteuid() == 0

    @property
    def run_uid(self) -> int:
        return self.sandbox_uid if self.as_root else os.getuid()

    @property
    def run_gid(self) -> int:
        return self.sandbox_uid if self.as_root else os.getgid()

    def readable_paths(self) -> list[Path]:
        """Folders a command needs besides the workspace: the Python environment the tools run with."""
        if self._readable is None:
            self._readable = []
            for p in (sys.prefix, sys.base_prefix):
                real = Path(os.path.realpath(p))
                if real not in self._readable and real != Path("/"):
                    self._readable.append(real)
        return list(self._readable)

    def _root_mounts(self):
        """As root, the mount namespace in which the dedicated uid can reach and write the workspace."""
        with self._mounts_lock:
            if self._mounts is None:
                from assistant.sandbox_root import RootMounts

                self._mounts = RootMounts.create(self.workspace, self.sandbox_uid, self.sandbox_uid,
                                                 [p for p in self.readable_paths() if p.exists()])
            return self._mounts

    def _prefix(self, limits: Limits, cwd: str) -> list[str]:
        """nsenter + setpriv (as root) and prlimit: the unprivileged uid with the limits, before the layer."""
        argv: list[str] = []
        if self.as_root:
            argv += [_tool("nsenter"), f"--mount={self._root_mounts().ns_path}", f"--wdns={cwd}", "--",
                     _tool("setpriv"), f"--reuid={self.run_uid}", f"--regid={self.run_gid}", "--clear-groups",
                     "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
        pairs = clamp_limits(limits, processes_of(self.run_uid))
        if pairs:
            argv += [_tool("prlimit")] + [f"{PRLIMIT_FLAGS[w]}={v}" for w, v in pairs] + ["--"]
        return argv

    def _bwrap_args(self, cwd: str, network: bool, seccomp_fd: int | None) -> list[str]:
        ws = str(self.workspace)
        # Private, size-bounded tmpfs folders (their memory is not covered by RLIMIT_AS); /dev read-only, so a
        # command cannot replace /dev/fd or the like for a later command of the warm worker.
        args = [_tool("bwrap"), "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        for path, size in TMPFS_SIZES.items():
            args += ["--size", str(size), "--tmpfs", path]
        args += ["--remount-ro", "/dev", "--unshare-all", "--cap-drop", "ALL", "--new-session", "--die-with-parent"]
        if seccomp_fd is not None:
            args += ["--seccomp", str(seccomp_fd)]
        if network:
            args += ["--share-net"]
        for p in self.readable_paths():
            args += ["--ro-bind-try", str(p), str(p)]
        args += ["--bind", ws, ws]
        for folder in self.pinned_paths():
            args += ["--bind", str(folder), str(folder)]
        for target in self.read_only_paths():
            args += ["--ro-bind", str(target), str(target)]
        for p in self.hidden_paths():
            if p.is_dir():
                args += ["--tmpfs", str(p), "--remount-ro", str(p)]
            else:
                args += ["--ro-bind", "/dev/null", str(p)]
        args += ["--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp", "--chdir", cwd, "--"]
        return args

    def _unshare_args(self) -> list[str]:
        # A new user namespace (mapping only our own uid), then net, pid, ipc, uts and mount namespaces; the pid
        # namespace's first process is the command, and `--kill-child` ties it to unshare. A shell covers the
        # secret folders with empty read-only tmpfs mounts before exec'ing the command.
        # (mount(8) works only as root, so the outer namespace maps us to root and a nested one maps us back.)
        # The shell stays as the pid namespace's first process and runs the command as its child: a first
        # process ignores signals it has no handler for (SIGTERM, SIGXFSZ), and the command must not.
        pins = [str(p) for p in self.pinned_paths()]
        read_only = [str(p) for p in self.read_only_paths()]
        hide = [str(p) for p in self.hidden_paths()]
        script = ('while [ "$1" != -- ]; do mount --bind "$1" "$1" || exit 125; shift; done; shift; '
                  'while [ "$1" != -- ]; do { mount --bind "$1" "$1" && mount -o remount,bind,ro "$1"; } || exit 125; '
                  'shift; done; shift; '
                  'while [ "$1" != -- ]; do if [ -d "$1" ]; then mount -t tmpfs -o ro,size=4k none "$1" || exit 125; '
                  'else mount --bind /dev/null "$1" || exit 125; fi; shift; done; shift; "$@"; exit $?')
        unshare = _tool("unshare")
        return [unshare, "--map-root-user", "--net", "--pid", "--ipc", "--uts", "--mount", "--fork",
                "--kill-child", "--mount-proc", "--", "/bin/sh", "-c", script, "sh", *pins, "--", *read_only, "--",
                *hide, "--", unshare, f"--map-user={self.run_uid}", f"--map-group={self.run_gid}", "--"]

    def pinned_paths(self) -> list[Path]:
        """Folders of the workspace on the way to a read-only or hidden path, bound onto themselves (still
        writable): a mount point cannot be renamed, and renaming a parent would carry the protection away with
        it, leaving the old name free for a planted copy."""
        pins: set[Path] = set()
        for p in self.read_only_paths() + self.hidden_paths():
            if self.workspace in p.parents:
                pins.update(d for d in p.parents if self.workspace in d.parents)
        return sorted(pins, key=lambda d: len(d.parts))

    def protected_paths(self) -> list[Path]:
        """Inside the writable workspace, read-only: `.git` (hooks, config, `commondir` and the like would run
        commands the next time *you* use git; as a mount point it cannot be renamed or replaced either) and our
        own `.assistant`. Commands can read the repository (status, diff, log) but not commit. A workspace that
        is not a repository gets an empty `.git` folder for as long as the sandbox runs (git ignores an empty
        one), so that a command cannot make a repository with a hook or an fsmonitor command in it."""
        git = self.workspace / ".git"
        if not os.path.lexists(git):
            try:
                git.mkdir()
                self._made_git = True
                st = os.stat(self.workspace)
                if self.as_root:
                    os.chown(git, st.st_uid, st.st_gid)
            except OSError:
                pass
        targets = []
        for t in (git, self.workspace / ".assistant"):
            if t.is_symlink():  # the link itself is guarded by guard_links(); its target, if ours, is read-only
                t = Path(os.path.realpath(t))
                if not (self.workspace in t.parents):
                    continue
            if t.exists():
                targets.append(t)
        return targets

    def guarded_links(self) -> dict[Path, str]:
        """`.git` or `.assistant` as symlinks (a mount cannot cover a link): what they point to before a run."""
        return {p: os.readlink(p) for p in (self.workspace / ".git", self.workspace / ".assistant")
                if p.is_symlink()}

    def restore_links(self, before: dict[Path, str]) -> str:
        """After a run: a guarded link that the command replaced is put back, and what replaced it is moved aside
        (renamed, so git does not use it). Returns a note for the observation, or ''."""
        notes = []
        for link, target in before.items():
            if link.is_symlink() and os.readlink(link) == target:
                continue
            if os.path.lexists(link):
                aside = link.with_name(f"{link.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
                os.rename(link, aside)
                notes.append(f"[the command replaced {link.name}; it was moved to {aside.name} and the link to "
                             f"{target} restored]")
            os.symlink(target, link)
        return "\n".join(notes)

    def read_only_paths(self) -> list[Path]:
        """Bound read-only over the writable workspace: the protected paths, and the assistant's own Python
        environment when it lives in the workspace (a planted .pth file would run in the assistant itself)."""
        inside = [p for p in self.readable_paths() if p != self.workspace and self.workspace in p.parents]
        return self.protected_paths() + inside

    def hidden_paths(self) -> list[Path]:
        """The secret paths to cover: those the sandbox's uid could otherwise reach, symlinks resolved (covering
        a link would leave its target readable under its own name). Checked before every run (a secret made
        during a session is covered from the next run on), so the slow part is worked out once: the candidates
        (from the environment), where each resolves to, and whether the uid could reach it at all."""
        from assistant.sandbox_root import first_blocked

        if self._secret_candidates is None:
            self._secret_candidates = secret_paths() + [Path(os.path.abspath(h)) for h in self.hidden]
        inside = [self.workspace] + self.readable_paths()
        out: list[Path] = []
        for p in self._secret_candidates:
            if not os.path.exists(p):
                continue
            if p not in self._resolved:
                self._resolved[p] = Path(os.path.realpath(p))
            p = self._resolved[p]
            if p in out or p == Path("/"):
                continue
            # As root, the sandbox uid (no supplementary groups) cannot reach what lies behind a folder it cannot
            # traverse: such paths need no cover (and could not get one). As yourself, whatever exists is reachable.
            if p not in self._reachable:
                self._reachable[p] = (not self.as_root or any(p == d or d in p.parents for d in inside)
                                      or not first_blocked(p, self.run_uid, self.run_gid))
            if self._reachable[p]:
                out.append(p)
        # A path inside a hidden folder is gone with it (and could not be covered inside the empty cover).
        return [p for p in out if not any(q in p.parents for q in out)]

    def _remove_made_git(self) -> None:
        git = self.workspace / ".git"
        if self._made_git:
            try:
                git.rmdir()  # only if still empty
                self._made_git = False
            except OSError:
                pass

    def command_for(self, layer: str, argv: list[str], cwd: str, limits: Limits, network: bool,
                    seccomp_fd: int | None = None):
        """The full argv that runs argv in the given layer."""
        if layer == "rlimits":
            return argv
        prefix = self._prefix(limits, cwd)
        if layer == "bwrap":
            return prefix + self._bwrap_args(cwd, network, seccomp_fd) + argv
        if network:
            raise SandboxError("the unshare layer has no network; use bwrap")
        return prefix + self._unshare_args() + argv

    # -- choosing a layer

    def probe(self, layer: str) -> Probe:
        """Whether a layer works here: run `true` in it (the real command line) and report why not."""
        if layer == "rlimits":
            return Probe(layer, True, "resource limits and a process group only: not isolation")
        needs = {"bwrap": ["bwrap"], "unshare": ["unshare"]}[layer] + ["prlimit"]
        if self.as_root:
            needs += ["nsenter", "setpriv"]
        if not seccomp.supported():
            return Probe(layer, False, f"no seccomp filter for {platform.machine()} (it keeps setuid files out of "
                                       "the workspace)")
        try:
            for name in needs:
                _tool(name)
            result = self._spawn(layer, ["true"], str(self.workspace), scrubbed_env(), 20, None, Limits(), False,
                                 4096)
        except (OSError, AssistantError) as exc:
            return Probe(layer, False, str(exc))
        if result.ok:
            return Probe(layer, True)
        detail = (result.stderr or result.stdout).strip().splitlines()
        return Probe(layer, False, detail[-1] if detail else f"exit status {result.returncode}")

    @property
    def chosen_layer(self) -> str | None:
        """The layer once one was chosen (by the first command), else None; never probes."""
        return self._layer

    @property
    def layer(self) -> str:
        """The strongest layer the policy accepts that works here; SandboxError (naming the fix) if none."""
        with self._lock:
            if self._layer is None:
                self.probes = []
                for layer in POLICIES[self.policy]:
                    probe = self.probe(layer)
                    self.probes.append(probe)
                    if probe.ok:
                        self._layer = layer
                        break
                else:
                    why = "; ".join(f"{p.layer}: {p.reason}" for p in self.probes)
                    fix = INSTALL_HINT if "bwrap" in POLICIES[self.policy] else "choose another --sandbox"
                    raise SandboxError(f"no sandbox layer available for --sandbox {self.policy} ({why}); {fix}")
            return self._layer

    # -- running

    def run(self, argv: list[str], *, cwd: str | None = None, timeout: float, stdin: bytes | None = None,
            limits: Limits | None = None, network: bool = False, env: dict[str, str] | None = None,
            max_output: int = DEFAULT_OUTPUT_BYTES, warm: bool = False) -> Result:
        links = self.guarded_links()
        try:
            result = self._run(argv, cwd=cwd, timeout=timeout, stdin=stdin, limits=limits, network=network,
                               env=env, max_output=max_output, warm=warm)
        except BaseException:
            if links:
                self.restore_links(links)
            raise
        note = self.restore_links(links) if links else ""
        if note:
            result.stderr = f"{result.stderr}\n{note}".lstrip("\n")
        return result

    def _run(self, argv: list[str], *, cwd: str | None, timeout: float, stdin: bytes | None,
             limits: Limits | None, network: bool, env: dict[str, str] | None, max_output: int,
             warm: bool) -> Result:
        """Run argv (never through a shell unless argv says so) in the sandbox; everything it starts dies with it.

        warm=True reuses this workspace's sandboxed worker (same isolation and limits, a fresh process per run),
        which saves the sandbox's start-up on every run; it applies to the bwrap layer without network."""
        limits = limits or Limits()
        if not argv:
            raise SandboxError("the command is empty")
        for text in [*argv, *(env or {}), *(env or {}).values()]:
            try:
                if b"\x00" in os.fsencode(text):
                    raise SandboxError(f"an argument or variable holds a NUL byte: {text[:40]!r}")
            except UnicodeEncodeError:
                raise SandboxError(f"an argument or variable is not valid text: {text[:40]!r}") from None
        cwd = os.path.realpath(cwd or self.workspace)
        layer = self.layer
        if layer != "rlimits" and cwd != str(self.workspace) and not cwd.startswith(str(self.workspace) + os.sep):
            raise SandboxError(f"{cwd}: the working folder must be inside the workspace {self.workspace}")
        full_env = scrubbed_env(env)
        full_env["PWD"] = cwd
        if layer == "bwrap" and warm and not network:
            from assistant.sandbox_worker import WorkerBusy

            try:
                return self.worker().run(argv, cwd=cwd, timeout=timeout, stdin=stdin, limits=limits,
                                         env=dict(full_env, HOME="/tmp", TMPDIR="/tmp"), max_output=max_output)
            except WorkerBusy:
                pass  # another run holds the worker (parallel runs): this one goes cold
            except OSError as exc:  # it did not start, or died between runs: this one goes cold
                self._close_worker()
                if not self._warned:
                    self._warned = True
                    log.warning("the sandbox's warm worker failed (%s); running commands cold", exc)
        if layer == "rlimits":
            return spawn_and_collect(argv, cwd=cwd, env=full_env, timeout=timeout, stdin=stdin,
                                     max_output=max_output, layer=layer,
                                     preexec=_rlimit_preexec(clamp_limits(limits)))
        if layer == "unshare":
            full_env.update(HOME="/tmp", TMPDIR="/tmp")
        result = self._spawn(layer, argv, cwd, full_env, timeout, stdin, limits, network, max_output)
        if result.returncode is not None and 128 < result.returncode <= 128 + 64:
            # bubblewrap's init and the unshare layer's shell report a command killed by signal N as exit status
            # 128+N (as shells do); a command that itself exits with 129-192 reads the same here. (The warm path
            # knows the difference.)
            result.returncode = 128 - result.returncode
        return result

    def _spawn(self, layer: str, argv: list[str], cwd: str, env: dict[str, str], timeout: float,
               stdin: bytes | None, limits: Limits, network: bool, max_output: int) -> Result:
        """A cold run in a namespace layer, under the seccomp filter (bubblewrap loads it; for unshare we do)."""
        if layer == "bwrap":
            fd = seccomp.memfd()
            try:
                command = self.command_for(layer, argv, cwd, limits, network, fd)
                return spawn_and_collect(command, cwd=cwd, env=env, timeout=timeout, stdin=stdin,
                                         max_output=max_output, layer=layer, pass_fds=(fd,))
            finally:
                os.close(fd)
        command = self.command_for(layer, argv, cwd, limits, network)
        return spawn_and_collect(command, cwd=cwd, env=env, timeout=timeout, stdin=stdin, max_output=max_output,
                                 layer=layer, preexec=seccomp.install)

    def worker(self):
        from assistant.sandbox_worker import Worker, WorkerBusy

        with self._lock:
            # The worker's view was fixed when it started: start another when what must be read-only changed
            # (a `git init` since, say).
            key = (tuple(self.protected_paths()), tuple(self.hidden_paths()))
            if self._worker is not None and (not self._worker.alive() or self._worker.key != key):
                if self._worker.alive() and self._worker.lock.locked():
                    raise WorkerBusy()  # another run is in it: that one finishes, this one goes cold
                self._worker.close()
                self._worker = None
            if self._worker is None:
                prefix = self._prefix(Limits(memory_bytes=None, file_size_bytes=None, processes=None),
                                           str(self.workspace))
                keep = [str(self.workspace)] + [str(p) for p in self.readable_paths()]
                fd = seccomp.memfd()
                try:
                    self._worker = Worker.start(prefix + self._bwrap_args(str(self.workspace), False, fd),
                                                workspace=str(self.workspace), keep=keep, env=scrubbed_env(),
                                                pass_fds=(fd,))
                finally:
                    os.close(fd)
                self._worker.key = key
            return self._worker

    def _close_worker(self) -> None:
        with self._lock:
            if self._worker is not None:
                self._worker.close()
                self._worker = None

    def close(self) -> None:
        self._close_worker()
        self._remove_made_git()
        if self._mounts is not None:
            self._mounts.close()
            self._mounts = None


# Where the helper programs (bwrap, nsenter, setpriv, prlimit, unshare) are looked for: system folders only, never
# PATH. PATH may name folders a sandboxed command can write (a virtualenv in the workspace, ~/.local/bin in the
# unshare layer), and the next run would then start a planted `nsenter` outside the sandbox, as root if we are.
# ASSISTANT_SANDBOX_PATH (colon-separated) replaces the list, for systems that keep them elsewhere (Nix).
TOOL_DIRS = ("/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin", "/usr/local/sbin")


def find_tool(name: str) -> str | None:
    """The path of a helper program in the trusted folders, or None."""
    dirs = os.environ.get("ASSISTANT_SANDBOX_PATH", "").split(os.pathsep) if os.environ.get(
        "ASSISTANT_SANDBOX_PATH") else TOOL_DIRS
    return next((f"{d}/{name}" for d in dirs if d and os.access(f"{d}/{name}", os.X_OK)), None)


def _tool(name: str) -> str:
    found = find_tool(name)
    if found is None:
        raise SandboxError(f"{name} not found ({INSTALL_HINT if name == 'bwrap' else 'install util-linux'})")
    return found


_SANDBOXES: dict[tuple[str, str, int], Sandbox] = {}
_SANDBOXES_LOCK = threading.Lock()


def for_workspace(workspace: str | os.PathLike, policy: str = "auto",
                  sandbox_uid: int = DEFAULT_SANDBOX_UID) -> Sandbox:
    """The shared Sandbox of a workspace (one layer probe and one warm worker per workspace and policy)."""
    key = (os.path.realpath(workspace), policy, sandbox_uid)
    with _SANDBOXES_LOCK:
        box = _SANDBOXES.get(key)
        if box is None:
            box = _SANDBOXES[key] = Sandbox(Path(key[0]), policy, sandbox_uid)
        return box


@atexit.register
def close_all() -> None:
    with _SANDBOXES_LOCK:
        for box in _SANDBOXES.values():
            box.close()
        _SANDBOXES.clear()


def run(argv: list[str], *, cwd: str, timeout: float, stdin: bytes | None = None, limits: Limits | None = None,
        network: bool = False, env: dict[str, str] | None = None, max_output: int = DEFAULT_OUTPUT_BYTES,
        workspace: str | None = None, policy: str = "auto", warm: bool = False) -> Result:
    """Run argv in the sandbox of `workspace` (default: cwd) under `policy`; see Sandbox.run."""
    box = for_workspace(workspace or cwd, policy)
    return box.run(argv, cwd=cwd, timeout=timeout, stdin=stdin, limits=limits, network=network, env=env,
                   max_output=max_output, warm=warm)
