"""Running model-written commands: one entry point, `run`, whose isolation layer can be swapped underneath.

This first layer ("process") gives each run its own process group and session, resource limits, a scrubbed
environment, a wall-clock timeout that kills the whole group, and bounded, escaped output. It is not an
isolation boundary: the bubblewrap layer (a later step) replaces the inside of `run` and keeps this contract.
"""

from __future__ import annotations

import os
import re
import resource
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

from assistant.text import escape_control

SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSW|CREDENTIAL|COOKIE|SESSION|AUTH)", re.I)
DEFAULT_OUTPUT_BYTES = 64 * 1024


@dataclass
class Limits:
    cpu_seconds: int | None = None
    memory_bytes: int | None = 4 * 1024**3
    file_size_bytes: int | None = 1024**3
    open_files: int | None = 1024
    processes: int | None = None


@dataclass
class Result:
    returncode: int | None
    stdout: str
    stderr: str
    truncated: bool = False
    timed_out: bool = False
    layer: str = "process"
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def render(self) -> str:
        """The observation text: status first, so a failure is visible however much output was cut."""
        if self.timed_out:
            status = f"timed out after {self.seconds:.1f}s (process group killed)"
        elif self.returncode is not None and self.returncode < 0:
            try:
                status = f"killed by signal {signal.Signals(-self.returncode).name}"
            except ValueError:  # a real-time signal has no name
                status = f"killed by signal {-self.returncode}"
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


def scrubbed_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The parent's environment without anything that looks like a key, token or password."""
    env = {k: v for k, v in os.environ.items() if not SECRET_ENV.search(k)}
    env.update(extra or {})
    return env


def _limiter(limits: Limits):
    def apply() -> None:
        pairs = [
            (resource.RLIMIT_CPU, limits.cpu_seconds),
            (resource.RLIMIT_AS, limits.memory_bytes),
            (resource.RLIMIT_FSIZE, limits.file_size_bytes),
            (resource.RLIMIT_NOFILE, limits.open_files),
            (resource.RLIMIT_NPROC, limits.processes),
        ]
        for what, value in pairs:
            if value is not None:
                _, hard = resource.getrlimit(what)
                if hard != resource.RLIM_INFINITY:
                    value = min(value, hard)  # a limit can be lowered, never raised
                resource.setrlimit(what, (value, value))

    return apply


def _feed(pipe, data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.close()
    except (BrokenPipeError, ValueError, OSError):
        pass


def _wait_unreaped(pid: int, timeout: float) -> bool:
    """Wait until the process exits, without reaping it; False at the timeout."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if fd is not None:
                if select.select([fd], [], [], max(0.0, left))[0]:
                    return True
            else:  # no pidfd (old kernel): poll
                info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
                if info is not None:
                    return True
                time.sleep(min(0.01, max(0.0, left)))
            if time.monotonic() >= deadline:
                return False
    finally:
        if fd is not None:
            os.close(fd)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run(argv: list[str], *, cwd: str, timeout: float, stdin: bytes | None = None, limits: Limits | None = None,
        network: bool = False, env: dict[str, str] | None = None, max_output: int = DEFAULT_OUTPUT_BYTES) -> Result:
    """Run argv (never through a shell unless argv says so) in cwd; kill the whole group at the timeout."""
    limits = limits or Limits()
    start = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=scrubbed_env(env),
        start_new_session=True,
        preexec_fn=_limiter(limits),
    )
    out, err = HeadTail(max_output), HeadTail(max_output // 2)

    def pump(stream, sink: HeadTail) -> None:
        for chunk in iter(lambda: stream.read1(65536), b""):
            sink.feed(chunk)

    readers = [threading.Thread(target=pump, args=(proc.stdout, out), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, err), daemon=True)]
    if stdin is not None:
        # In a thread: a child that never reads its input must not hold us past the timeout.
        readers.append(threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True))
    for t in readers:
        t.start()
    timed_out = False
    try:
        timed_out = not _wait_unreaped(proc.pid, timeout)
    finally:
        # Kill what is left of the group whatever happened (timeout, Ctrl-C), so nothing outlives the call.
        # The leader is not reaped yet, so its pid, the group id, cannot have been reused by another process.
        _kill_group(proc.pid)
        proc.wait()
        for t in readers:
            # A process that left the group (setsid) may still hold the pipes open: do not wait for it.
            # (The bubblewrap layer's PID namespace kills such escapees; this layer cannot.)
            t.join(timeout=0.5)
    return Result(
        returncode=proc.returncode if not timed_out else None,
        stdout=out.text(),
        stderr=err.text(),
        truncated=bool(out.cut or err.cut),
        timed_out=timed_out,
        layer="process",
        seconds=time.monotonic() - start,
    )
