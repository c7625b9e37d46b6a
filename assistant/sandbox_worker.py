"""The warm path: one sandboxed worker per workspace that starts a fresh process for every run.

Starting bubblewrap costs several milliseconds a run; run_python and repair's test runs start many. The worker is
started once, inside the same bubblewrap sandbox a cold run gets, and waits on a socket. It keeps one *runner*
ready: a child that has already entered a new user namespace (so the process limit counts that run's processes
only) and a new mount namespace (a fresh /tmp and /dev/shm), and whose child waits for a command. For each run
the parent sends the argv, folder, environment, limits and timeout, with the run's stdin/stdout/stderr pipes as
file descriptors; the waiting process sets the limits and becomes the command. When the command ends or is
killed at the timeout, the worker kills every other process in its sandbox (its pid namespace: whatever the run
left behind, `setsid` or not) and reaps them, then prepares the next runner. On Ctrl-C, or when the worker does
not answer in time, the parent ends the worker itself, and its whole sandbox with it. So each
run gets the isolation and limits of a cold run, a fresh process, and leaves nothing behind; the namespaces'
set-up and tear-down happen between runs. (A pid namespace per run would do the killing too, but tearing one
down costs about 4 ms per run here: docs/benchmarks.md.)
"""

from __future__ import annotations

import concurrent.futures
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from assistant.sandbox import TMPFS_SIZES, Limits, Relay, Result, clamp_limits

WORKER_GRACE = 2.0  # seconds past a run's timeout before a silent worker is ended
BOOTSTRAP = "import os, sys; exec(os.read(int(sys.argv[1]), 1 << 20))  # the assistant's sandbox worker"

# Runs inside the sandbox with -I -S: stdlib only, no site-packages.
WORKER = r"""
import ctypes, json, os, resource, select, signal, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
sock = socket.socket(fileno=int(sys.argv[1]))
uid, gid = os.getuid(), os.getgid()
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER, PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 0x20000, 0x8000000, 0x10000000, 1, 4, 36
KEEP = sorted(json.loads(sys.argv[2]), key=len)  # the workspace and the read-only paths, parents first
TMPFS_SIZES = json.loads(sys.argv[3])  # a fresh /tmp, /dev/shm and /run for every run

def find(name, path):
    # Like execvp's search, but with stat calls: a failing execve per PATH entry is far slower.
    if "/" in name:
        return name
    for d in path.split(os.pathsep):
        full = os.path.join(d or ".", name)
        if os.access(full, os.X_OK) and not os.path.isdir(full):
            return full
    raise FileNotFoundError(2, "No such file or directory")

def command(ctl):
    # The runner's child: wait for a request, then become the command.
    req = fds = None
    try:
        msg, fds, _, _ = socket.recv_fds(ctl, 1 << 20, 3)
        if not msg:
            os._exit(0)
        req = json.loads(msg)
        os.setsid()
        for what, value in req["limits"]:
            resource.setrlimit(what, (value, value))
        for i, fd in enumerate(fds):
            os.dup2(fd, i)
        os.closerange(3, 65536)
        for s in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_DFL)
        os.chdir(req["cwd"])
        os.execve(find(req["argv"][0], req["env"].get("PATH", os.defpath)), req["argv"], req["env"])
    except OSError as exc:
        name = req["argv"][0] if req else "the command"
        os.write(2, ("cannot run %s: %s\n" % (name, exc.strerror or exc)).encode())
    os._exit(127)

def runner(ctl, status_w):
    # A new user namespace (RLIMIT_NPROC counts this run's processes only), mount namespace (a fresh /tmp,
    # /dev/shm and /run) and IPC namespace (no SysV shared memory outlives the run), then the child that
    # becomes the command.
    try:
        libc.prctl(PR_SET_DUMPABLE, 1)  # our own /proc files must be ours to write the maps; no command exists yet
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWIPC) != 0:
            raise OSError(ctypes.get_errno(), "unshare")
        for name, text in (("uid_map", "%d %d 1\n" % (uid, uid)), ("setgroups", "deny"), ("gid_map", "%d %d 1\n" % (gid, gid))):
            with open("/proc/self/" + name, "w") as fh:
                fh.write(text)
        libc.prctl(PR_SET_DUMPABLE, 0)
        # The workspace and the Python environment may live under /tmp: keep them, bound again (read-only
        # stays read-only) into the fresh folders.
        keep = [(p, os.open(p, os.O_PATH)) for p in KEEP
                if any(p.startswith(d + "/") for d in TMPFS_SIZES) and os.path.exists(p)]
        for d, size in TMPFS_SIZES.items():
            if libc.mount(b"none", d.encode(), b"tmpfs", 0, ("mode=1777,size=%d" % size).encode()) != 0:
                raise OSError(ctypes.get_errno(), "mount " + d)
        for path, fd in keep:
            os.makedirs(path, exist_ok=True)
            if libc.mount(("/proc/self/fd/%d" % fd).encode(), path.encode(), None, 0x1000 | 0x4000, None) != 0:
                raise OSError(ctypes.get_errno(), "bind " + path)
            os.close(fd)
    except OSError as exc:
        os.write(status_w, ("error %s" % exc).encode()); os._exit(1)
    alive_r, alive_w = os.pipe()  # EOF on alive_r: the runner has died
    pid = os.fork()
    if pid == 0:
        libc.prctl(PR_SET_PDEATHSIG, 9)
        os.close(alive_w); os.close(status_w)
        if select.select([alive_r], [], [], 0)[0]:  # it died before PDEATHSIG was set
            os._exit(137)
        os.close(alive_r)
        command(ctl)
    os.close(alive_r); ctl.close()
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    code = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
    # Report before exiting: tearing the namespaces down takes a while and nobody needs to wait for it.
    os.write(status_w, ("%d" % code).encode())
    os._exit(0)

def spare():
    ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    status_r, status_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        sock.close(); ctl.close(); os.close(status_r)
        runner(theirs, status_w)
    theirs.close(); os.close(status_w)
    return pid, ctl, status_r

def end_run():
    # Everything in this sandbox but the worker is the run's now (the runner, the command, whatever it left
    # running, setsid or not): kill it all. Orphans come back to the worker (a subreaper) to be reaped.
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass

def reap_all():
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return

libc.prctl(PR_SET_CHILD_SUBREAPER, 1)
# Not dumpable: a command (same uid, but in a child user namespace) can then neither ptrace the worker or its
# runners nor read their /proc files. A command's own exec makes it dumpable again, as usual.
libc.prctl(PR_SET_DUMPABLE, 0)
sock.send(b"ready")
ready = spare()
while True:
    try:
        msg, fds, _, _ = socket.recv_fds(sock, 1 << 20, 3)
    except OSError:
        break
    if not msg:
        break
    pid, ctl, status_r = ready
    try:
        socket.send_fds(ctl, [msg], fds)
    except OSError:  # the runner died while waiting: tell the parent, which runs this one cold
        sock.send(json.dumps({"error": "runner lost"}).encode())
        for fd in fds: os.close(fd)
        ctl.close(); os.close(status_r); end_run(); reap_all(); ready = spare()
        continue
    for fd in fds:
        os.close(fd)
    ctl.close()
    req = json.loads(msg)
    timed_out = False
    ready_fds = select.select([status_r, sock], [], [], req["timeout"])[0]
    if status_r not in ready_fds:
        timed_out = not ready_fds
        if ready_fds:  # the socket: the parent has gone
            end_run(); reap_all(); break
    end_run()
    text = os.read(status_r, 200).decode()
    os.close(status_r)
    reply = {"timed_out": timed_out}
    if text.startswith("error"):
        reply["error"] = text
    elif text:
        reply["code"] = int(text)
    else:
        reply["code"] = -9  # the runner died before reporting
    sock.send(json.dumps(reply).encode())
    reap_all()
    ready = spare()
"""


# bubblewrap's --die-with-parent (a parent-death signal) fires when the *thread* that started it ends, and a
# worker must outlive the thread of the run that happened to start it (a dashboard's worker thread, say): workers
# are started from this one thread, which lives as long as the process.
_SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-spawner")


class WorkerBusy(Exception):
    """The worker is running another command; the caller runs this one cold."""


class Worker:
    """The parent's side of the worker: one run at a time over a SOCK_SEQPACKET socket pair."""

    def __init__(self, proc: subprocess.Popen, sock: socket.socket):
        self.proc = proc
        self.sock = sock
        self.lock = threading.Lock()
        self.key: tuple = ()  # the protected paths its view was made with

    @classmethod
    def start(cls, prefix: list[str], *, workspace: str, keep: list[str], env: dict[str, str],
              pass_fds: tuple[int, ...] = ()) -> "Worker":
        """Start the worker in the sandbox that `prefix` makes; `keep` lists the paths each run's fresh /tmp must
        still show (the workspace and the read-only ones)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # The code comes over the socket (not in argv: `ps` inside the sandbox stays readable).
            argv = prefix + [sys.executable, "-I", "-S", "-c", BOOTSTRAP, str(theirs.fileno()), json.dumps(keep),
                             json.dumps(TMPFS_SIZES)]
            proc = _SPAWNER.submit(subprocess.Popen, argv, cwd=workspace, env=env, pass_fds=(*pass_fds, theirs.fileno()),
                                   start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE).result()
        finally:
            theirs.close()
        worker = cls(proc, ours)
        ours.settimeout(30)
        try:
            ours.send(WORKER.encode())
            ready = ours.recv(16)
        except OSError:
            ready = b""
        if ready != b"ready":
            worker.kill()  # its stderr is complete once it is gone
            why = proc.stderr.read().decode("utf-8", "replace").strip().splitlines()
            proc.stderr.close()
            raise OSError(f"the sandbox worker did not start: {why[-1] if why else 'no message'}")
        proc.stderr.close()  # the worker writes nothing more there
        proc.stderr = None
        ours.settimeout(None)
        return worker

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, argv: list[str], *, cwd: str, timeout: float, stdin: bytes | None, limits: Limits,
            env: dict[str, str], max_output: int) -> Result:
        """Run argv through the worker. WorkerBusy (run it cold) if another run holds the worker or the request
        does not fit in one message; OSError (the command did not start) if the worker is gone."""
        if not self.lock.acquire(blocking=False):
            raise WorkerBusy()
        start = time.monotonic()
        try:
            (in_r, in_w), (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe(), os.pipe()
            # Each run has its own user namespace, where RLIMIT_NPROC counts only that run's processes.
            request = {"argv": argv, "cwd": cwd, "env": env, "timeout": timeout, "limits": clamp_limits(limits)}
            try:
                socket.send_fds(self.sock, [json.dumps(request).encode()], [in_r, out_w, err_w])
            except OSError as exc:
                for fd in (in_w, out_r, err_r):
                    os.close(fd)
                if exc.errno == errno.EMSGSIZE:
                    raise WorkerBusy() from None  # an argv or environment that large goes cold
                raise
            finally:
                for fd in (in_r, out_w, err_w):
                    os.close(fd)
            relay = Relay(out_r, err_r, in_w, stdin or b"", max_output)
            try:
                # The worker kills the run at its timeout and answers; past that and a grace, it is stuck (the
                # command stopped it, say) and is ended, with everything the run started.
                reply = self._reply() if relay.pump(self.sock.fileno(), start + timeout + WORKER_GRACE) else None
            except OSError as exc:  # it died during the run: the command may have run in part; never run it again
                self.kill()
                relay.err.feed(f"\n[the sandbox worker stopped during this run ({exc}); it is restarted next time]\n"
                               .encode())
                reply = {"timed_out": False, "code": -9}
            except BaseException:  # Ctrl-C: end the worker, and with it every process of the run
                self.kill()
                raise
            finally:
                try:
                    relay.drain()
                finally:
                    relay.close()
        finally:
            self.lock.release()
        if reply is None:
            self.kill()
            reply = {"timed_out": True}
        if "error" in reply:
            raise OSError(f"the sandbox worker could not run the command: {reply['error']}")
        return Result(None if reply["timed_out"] else reply["code"], relay.out.text(), relay.err.text(),
                      truncated=relay.truncated, timed_out=reply["timed_out"], layer="bwrap",
                      seconds=time.monotonic() - start, warm=True)

    def _reply(self) -> dict:
        data = self.sock.recv(4096)
        if not data:
            raise OSError("the sandbox worker stopped")
        return json.loads(data)

    def close(self) -> None:
        self.sock.close()
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def kill(self) -> None:
        """End the worker now: its sandbox's pid namespace, and so every process in it, ends with it."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.close()
