"""shared/SECURITY.md, table "Sandbox": every row, with the exact outcome asserted.

The test machine runs as root with bubblewrap installed, so commands run as the unprivileged uid 65533 in a
private mount namespace. Rows about the file system run in the bubblewrap layer, cold and through the warm worker
(FS_MODES); rows about processes, network and timeouts also in the unshare layer (PROC_MODES). Paths used to show
that a write or read is denied are ones the sandbox's uid *could* reach without the sandbox (checked with setpriv
outside it), so that what is asserted is the sandbox's doing.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path

import pytest

from assistant import sandbox
from assistant.config import load_settings
from assistant.errors import ToolError
from assistant.plugins import files, python, shell
from assistant.sandbox import Limits, Sandbox, SandboxError
from assistant.tools import ToolContext
from assistant.workspace import UndoStack, Workspace

from sec_helpers import (FS_MODES, MARK_VAR, PROC_MODES, READ_PROBE, SECRET_ENV, UID, WRITE_PROBE,  # noqa: F401
                         as_uid_on_host, box, boxes, hide_programs, live_pids, marker, pids_with, probe, wait_until,
                         world)

fs_modes = pytest.mark.parametrize("box", FS_MODES, indirect=True)
proc_modes = pytest.mark.parametrize("box", PROC_MODES, indirect=True)


def tool_context(workspace: Path, box_sandbox: Sandbox | None = None, **flags) -> ToolContext:
    ws = Workspace(workspace)
    settings = load_settings({"workspace": str(workspace), **flags})
    return ToolContext(ws, settings, UndoStack(ws), sandbox=box_sandbox)


def no_leftovers(*marks: str) -> None:
    """No process a run started remains, found by the marker in its command line or environment (polled
    briefly: a killed process takes a moment to go)."""
    for mark in marks:
        assert wait_until(lambda: not pids_with(mark)), f"still running: {pids_with(mark)}"


# --- the layer itself ----------------------------------------------------------------------------------------


def test_auto_policy_uses_bubblewrap_here_and_never_degrades_silently(workspace, make_session):
    """On the test machine (root, bubblewrap installed) the default policy must end up in bwrap: a probe that
    quietly fell back to a weaker layer would make every other row of this matrix test the wrong thing."""
    assert shutil.which("bwrap") or os.access("/usr/bin/bwrap", os.X_OK), \
        "bubblewrap must be installed on the test machine (apt-get install bubblewrap)"
    box = Sandbox(workspace, "auto")
    try:
        assert box.layer == "bwrap", box.probes
        assert [(p.layer, p.ok) for p in box.probes] == [("bwrap", True)]
        for warm in (False, True):
            result = box.run(["true"], timeout=20, warm=warm)
            assert (result.returncode, result.timed_out, result.layer) == (0, False, "bwrap"), result.render()
    finally:
        box.close()
    session = make_session([])
    assert session.settings.sandbox == "auto"
    assert session.sandbox.layer == "bwrap", session.sandbox.probes


@proc_modes
def test_commands_run_as_the_unprivileged_uid_without_capabilities(box):
    """As root, commands must not run as root (RLIMIT_NPROC would not bind) nor keep capabilities."""
    if os.geteuid() == 0:
        assert UID == 65533
    result = box.run(["grep", "-E", "^(Uid|Gid|CapPrm|CapEff|CapAmb|NoNewPrivs):", "/proc/self/status"])
    assert result.returncode == 0, result.render()
    status = dict(line.split(":\t", 1) for line in result.stdout.splitlines())
    ids = "\t".join([str(UID)] * 4)
    assert status == {"Uid": ids, "Gid": ids, "CapPrm": "0" * 16, "CapEff": "0" * 16, "CapAmb": "0" * 16,
                      "NoNewPrivs": "1"}


# --- row: write /etc/x, /root/x, ../../x, an absolute path outside the workspace ------------------------------

OUTSIDE_TARGETS = {"/etc/x-{m}": "EROFS", "/root/x-{m}": "EROFS", "../../x-{m}": "EROFS", "{pub}/y-{m}": "EROFS"}


@pytest.mark.parametrize("mode", FS_MODES)
def test_writes_outside_the_workspace_are_denied_and_nothing_is_written(world, boxes, mode):
    box = boxes(world.ws, mode)
    # Without the sandbox, the uid could write into pub (which holds the workspace two levels down).
    assert as_uid_on_host(["test", "-w", str(world.pub)]).returncode == 0
    m = marker()
    targets = {t.format(pub=world.pub, m=m): errname for t, errname in OUTSIDE_TARGETS.items()}
    assert probe(box, WRITE_PROBE, *targets) == targets
    for host_path in (Path(f"/etc/x-{m}"), Path(f"/root/x-{m}"), world.pub / f"x-{m}", world.pub / f"y-{m}"):
        assert not host_path.exists(), host_path
    assert sorted(os.listdir(world.pub)) == ["proj", "victim.txt"]


def test_run_command_cannot_write_outside_the_workspace(world, boxes):
    box = boxes(world.ws, "bwrap-warm")
    ctx = tool_context(world.ws, box.sandbox)
    m = marker()
    out = shell.run_command(f"echo pwned > ../../x-{m}; echo pwned > {world.pub}/y-{m}; echo pwned > /etc/x-{m}",
                            context=ctx)
    assert out == ("exit status 1\nstderr:\n"
                   f"bash: line 1: ../../x-{m}: Read-only file system\n"
                   f"bash: line 1: {world.pub}/y-{m}: Read-only file system\n"
                   f"bash: line 1: /etc/x-{m}: Read-only file system")
    assert sorted(os.listdir(world.pub)) == ["proj", "victim.txt"] and not Path(f"/etc/x-{m}").exists()


@pytest.mark.parametrize("path", ["/etc/x-{m}", "/root/x-{m}", "../../x-{m}", "sub/../../x-{m}", "{pub}/x-{m}",
                                  "~/x-{m}"])
def test_file_tools_refuse_paths_outside_the_workspace(world, path):
    m = marker()
    path = path.format(pub=world.pub, m=m)
    ctx = tool_context(world.ws)
    for write in (lambda: files.write_file(path, "pwned", context=ctx),
                  lambda: files.edit_file(path, "a", "b", context=ctx),
                  lambda: files.read_file(path, context=ctx)):
        with pytest.raises(ToolError, match=f"^{re.escape(path)}: outside the workspace {re.escape(str(world.ws))}$"):
            write()
    assert sorted(os.listdir(world.pub)) == ["proj", "victim.txt"]
    assert not Path(f"/etc/x-{m}").exists() and not Path(f"/root/x-{m}").exists()
    assert not (world.home / f"x-{m}").exists()
    assert ctx.undo.stack == []


# --- row: a symlink in the workspace pointing outside; secrets not readable ------------------------------------


@pytest.mark.parametrize("mode", FS_MODES)
def test_writes_through_a_symlink_pointing_outside_are_denied(world, boxes, mode):
    (world.ws / "link").symlink_to(world.victim)
    (world.ws / "dirlink").symlink_to(world.pub)
    assert as_uid_on_host(["test", "-w", str(world.victim)]).returncode == 0  # the uid could, without the sandbox
    box = boxes(world.ws, mode)
    assert probe(box, WRITE_PROBE, "link", "dirlink/new") == {"link": "EROFS", "dirlink/new": "EROFS"}
    result = box.sh("echo pwned > link; ln -sf /etc/passwd dirlink/victim.txt; rm -f dirlink/victim.txt")
    assert result.stderr.splitlines() == [
        "bash: line 1: link: Read-only file system",
        "ln: failed to create symbolic link 'dirlink/victim.txt': Read-only file system",
        "rm: cannot remove 'dirlink/victim.txt': Read-only file system"]
    assert world.victim.read_text() == "original\n"
    assert sorted(os.listdir(world.pub)) == ["proj", "victim.txt"]


def test_file_tools_refuse_a_symlink_pointing_outside(world):
    (world.ws / "link").symlink_to(world.victim)
    (world.ws / "keylink").symlink_to(world.home / ".ssh" / "id_rsa")
    ctx = tool_context(world.ws)
    for call in (lambda: files.write_file("link", "pwned", context=ctx),
                 lambda: files.edit_file("link", "original", "pwned", context=ctx),
                 lambda: files.read_file("keylink", context=ctx)):
        with pytest.raises(ToolError, match=r"^(link|keylink): outside the workspace "):
            call()
    assert world.victim.read_text() == "original\n"


@pytest.mark.parametrize("mode", PROC_MODES)
def test_secret_paths_are_not_readable_inside_the_sandbox(world, boxes, mode):
    (world.ws / "keylink").symlink_to(world.home / ".ssh" / "id_rsa")
    secrets = [str(p) for p in world.secret_files]
    # Without the sandbox the uid could read every one of them: only the sandbox hides them.
    assert as_uid_on_host(["cat", *secrets]).stdout.count(world.secret) == len(secrets)
    box = boxes(world.ws, mode)
    result = box.py(READ_PROBE, *secrets, "keylink")
    assert result.returncode == 0, result.render()
    outcome = dict(line.rsplit(" ", 1) for line in result.stdout.splitlines())
    # Hidden means absent, unreadable, or (a file covered by /dev/null) empty: never the secret's bytes.
    readable = {p: o for p, o in outcome.items() if o.startswith("READ") and o != "READ-0-BYTES"}
    assert readable == {}, f"readable inside the {mode} sandbox: {readable}"
    assert set(outcome.values()) <= {"ENOENT", "EACCES", "READ-0-BYTES"}, outcome
    listing = box.sh(f"cat {' '.join(secrets)} keylink; ls -A {world.home}/.ssh {world.ahome}/logs")
    assert world.secret not in listing.stdout + listing.stderr


@pytest.mark.parametrize("mode", PROC_MODES)
def test_environment_holds_no_keys_or_tokens(world, boxes, mode):
    box = boxes(world.ws, mode)
    result = box.run(["env"])
    assert result.returncode == 0
    names = {line.split("=", 1)[0] for line in result.stdout.splitlines()}
    assert names.isdisjoint(SECRET_ENV), names & set(SECRET_ENV)
    assert world.secret not in result.stdout
    assert "HARMLESS_SETTING=visible" in result.stdout.splitlines()  # the environment is passed, only scrubbed


# --- row: write .git/hooks/*, the assistant's config, audit log or memory folder ------------------------------

HOOK = "#!/bin/sh\necho original hook\n"
GIT_CONFIG = "[core]\n\trepositoryformatversion = 0\n"
WS_CONFIG = "max_steps = 7\n"


def make_repository(ws: Path) -> None:
    (ws / ".git" / "hooks").mkdir(parents=True)
    (ws / ".git" / "hooks" / "pre-commit").write_text(HOOK)
    (ws / ".git" / "config").write_text(GIT_CONFIG)
    (ws / ".assistant").mkdir()
    (ws / ".assistant" / "config.toml").write_text(WS_CONFIG)


def assert_repository_untouched(ws: Path) -> None:
    assert (ws / ".git" / "hooks" / "pre-commit").read_text() == HOOK
    assert sorted(os.listdir(ws / ".git" / "hooks")) == ["pre-commit"]
    assert (ws / ".git" / "config").read_text() == GIT_CONFIG
    assert sorted(os.listdir(ws / ".assistant")) == ["config.toml"]
    assert (ws / ".assistant" / "config.toml").read_text() == WS_CONFIG


@pytest.mark.parametrize("mode", PROC_MODES)
def test_a_symlinked_secret_folder_is_hidden_under_both_names(world, boxes, mode):
    """~/.aws as a link into a dotfiles folder: covering the link alone would leave the target readable, and a
    folder link must be covered as a folder (not fail the layer, which once sent `auto` to a weaker one)."""
    dotfiles = world.home / "dotfiles" / "aws"
    dotfiles.parent.mkdir()
    (world.home / ".aws").rename(dotfiles)
    (world.home / ".aws").symlink_to(dotfiles)
    assert as_uid_on_host(["cat", str(dotfiles / "credentials")]).stdout.count(world.secret) == 1
    box = boxes(world.ws, mode)
    result = box.sh(f"cat {world.home}/.aws/credentials {dotfiles}/credentials")
    assert world.secret not in result.stdout and result.stderr.count("No such file or directory") == 2
    assert Sandbox(world.ws, "auto").layer == "bwrap"  # and `auto` still gets bubblewrap


@pytest.mark.parametrize("mode", PROC_MODES)
def test_the_assistants_python_environment_in_the_workspace_is_read_only(workspace, boxes, mode, monkeypatch):
    """A virtualenv inside the workspace that the assistant itself runs from: a .pth file planted there would run
    in the assistant (as root here) at its next start."""
    venv = workspace / ".venv" / "lib"
    venv.mkdir(parents=True)
    real = Sandbox.readable_paths
    monkeypatch.setattr(Sandbox, "readable_paths", lambda self: real(self) + [workspace / ".venv"])
    box = boxes(workspace, mode)
    result = box.sh("echo 'import os' > .venv/lib/evil.pth; echo ok > other.txt")
    assert result.stderr == "bash: line 1: .venv/lib/evil.pth: Read-only file system\n"
    assert not (venv / "evil.pth").exists() and (workspace / "other.txt").read_text() == "ok\n"


@pytest.mark.parametrize("mode", FS_MODES)
def test_git_hooks_git_config_and_the_workspace_config_are_read_only(workspace, boxes, mode):
    make_repository(workspace)
    box = boxes(workspace, mode)
    paths = [".git/hooks/pre-commit", ".git/hooks/post-checkout", ".git/config", ".assistant/config.toml",
             ".assistant/other.toml"]
    assert probe(box, WRITE_PROBE, *paths) == {p: "EROFS" for p in paths}
    result = box.sh("mv .git/hooks .git/hooks-old; mv .git/config .git/config-old; mv .assistant .assistant-old; "
                    "rm -rf .git/hooks; chmod 777 .git/hooks; echo '../elsewhere' > .git/commondir")
    assert result.stderr.splitlines() == [
        "mv: cannot move '.git/hooks' to '.git/hooks-old': Read-only file system",
        "mv: cannot move '.git/config' to '.git/config-old': Read-only file system",
        "mv: cannot move '.assistant' to '.assistant-old': Device or resource busy",
        "rm: cannot remove '.git/hooks/pre-commit': Read-only file system",
        "chmod: changing permissions of '.git/hooks': Read-only file system",
        "bash: line 1: .git/commondir: Read-only file system"]
    assert_repository_untouched(workspace)


@pytest.mark.parametrize("mode", FS_MODES)
def test_the_git_folder_cannot_be_swapped_for_one_with_hooks(workspace, boxes, mode):
    """Moving .git aside (its read-only hooks and config go with it) and making a new one with a hook and a
    core.fsmonitor command would have the user's next git command run them, outside the sandbox."""
    make_repository(workspace)
    box = boxes(workspace, mode)
    box.sh("mv .git .git-old && mkdir -p .git/hooks && echo 'touch /tmp/pwned' > .git/hooks/pre-commit && "
           "chmod +x .git/hooks/pre-commit && printf '[core]\\n\\tfsmonitor = touch /tmp/pwned\\n' > .git/config")
    assert_repository_untouched(workspace)
    assert not (workspace / ".git-old").exists()


@pytest.mark.parametrize("mode", FS_MODES)
def test_a_command_cannot_make_a_repository_with_hooks(workspace, boxes, mode):
    """A workspace that is not a repository: a command must not create one with a hook or a core.fsmonitor
    command for the user's next git command to run. The sandbox guards an empty, read-only .git (git ignores an
    empty one) and removes it when it closes."""
    box = boxes(workspace, mode)
    result = box.sh("git init -q . ; mkdir -p .git/hooks; echo 'touch /tmp/pwned' > .git/hooks/pre-commit; "
                    "printf '[core]\\n\\tfsmonitor = touch /tmp/pwned\\n' > .git/config; mv .git .git-old")
    assert "Read-only file system" in result.stderr
    assert result.stderr.splitlines()[-3:] == [
        "bash: line 1: .git/hooks/pre-commit: No such file or directory",
        "bash: line 1: .git/config: Read-only file system",
        "mv: cannot move '.git' to '.git-old': Device or resource busy"]
    assert os.listdir(workspace / ".git") == [] and not (workspace / ".git-old").exists()
    box.sandbox.close()
    assert not (workspace / ".git").exists()  # the guard leaves nothing behind


def test_hooks_of_a_repository_made_after_the_warm_worker_started_are_read_only(workspace, boxes):
    box = boxes(workspace, "bwrap-warm")
    assert box.run(["true"]).returncode == 0  # the worker runs; the workspace is not a repository yet
    make_repository(workspace)  # the user runs `git init` in another terminal
    paths = [".git/hooks/pre-commit", ".git/config", ".assistant/config.toml"]
    assert probe(box, WRITE_PROBE, *paths) == {p: "EROFS" for p in paths}
    assert_repository_untouched(workspace)


@pytest.mark.parametrize("mode", FS_MODES)
def test_the_assistant_home_audit_log_memory_and_config_are_not_writable(world, boxes, mode):
    log = world.ahome / "logs" / "session.jsonl"
    memory = world.ahome / "memory_bank" / "global.md"
    before = {p: p.read_text() for p in (log, memory, world.config)}
    for p in (world.ahome / "logs", log, memory, world.config):  # the uid could, without the sandbox
        assert as_uid_on_host(["test", "-w", str(p)]).returncode == 0, p
    box = boxes(world.ws, mode)
    targets = {str(world.ahome / "x"): "EROFS", str(log): "ENOENT", str(world.ahome / "logs" / "new.jsonl"): "ENOENT",
               str(memory): "ENOENT", str(world.ahome / "memory_bank" / "new.md"): "ENOENT",
               str(world.config): "EACCES"}
    assert probe(box, WRITE_PROBE, *targets) == targets
    assert {p: p.read_text() for p in before} == before
    assert sorted(os.listdir(world.ahome / "logs")) == ["session.jsonl"]
    assert sorted(os.listdir(world.ahome / "memory_bank")) == ["global.md"]
    assert sorted(os.listdir(world.ahome)) == ["logs", "memory_bank"]


# --- row: network: curl, Python socket.connect, /dev/tcp, DNS ---------------------------------------------------

NET_PY = r"""
import errno, socket, sys
try:
    if sys.argv[1] == "connect":
        socket.create_connection(("1.1.1.1", 80), timeout=10)
    else:
        socket.getaddrinfo("example.com", 80)
except socket.gaierror as exc:
    print("gaierror", exc.errno)
except OSError as exc:
    print(errno.errorcode[exc.errno])
else:
    print("CONNECTED")
"""

NETWORK_CASES = {
    "curl-ip": (["curl", "-sS", "--max-time", "10", "http://1.1.1.1/"], 7,
                "", "curl: (7) Failed to connect to 1.1.1.1 port 80 after 0 ms: Couldn't connect to server\n"),
    "curl-dns": (["curl", "-sS", "--max-time", "10", "http://example.com/"], 6,
                 "", "curl: (6) Could not resolve host: example.com\n"),
    "python-connect": ([sys.executable, "-I", "-c", NET_PY, "connect"], 0, "ENETUNREACH\n", ""),
    "dev-tcp": (["bash", "-c", "echo hi > /dev/tcp/1.1.1.1/80"], 1, "",
                "bash: connect: Network is unreachable\nbash: line 1: /dev/tcp/1.1.1.1/80: Network is unreachable\n"),
    "dns-lookup": ([sys.executable, "-I", "-c", NET_PY, "dns"], 0, f"gaierror {socket.EAI_AGAIN}\n", ""),
}


@proc_modes
@pytest.mark.parametrize("case", NETWORK_CASES)
def test_network_access_fails_fast(box, case):
    argv, code, stdout, stderr = NETWORK_CASES[case]
    if argv[0] == "curl" and shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    result = box.run(argv, timeout=20)
    assert (result.returncode, result.stdout, result.stderr) == (code, stdout, stderr)
    assert result.seconds < 3


@proc_modes
def test_no_packet_reaches_the_hosts_loopback_or_abstract_sockets(box):
    """The sandbox has a network namespace of its own: nothing listening on the host (here, this test) can be
    reached, not even on 127.0.0.1 or through an abstract unix socket."""
    tcp = socket.create_server(("127.0.0.1", 0))
    port = tcp.getsockname()[1]
    abstract = f"assistant-security-{marker()}"
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind("\0" + abstract)
    unix.listen()
    code = ("import errno, os, socket, sys\n"
            "for family, address in ((socket.AF_INET, ('127.0.0.1', int(sys.argv[1]))), (socket.AF_UNIX, '\\0' + sys.argv[2])):\n"
            "    s = socket.socket(family, socket.SOCK_STREAM)\n"
            "    try:\n"
            "        s.connect(address)\n"
            "        print('CONNECTED')\n"
            "    except OSError as exc:\n"
            "        print(errno.errorcode[exc.errno])\n"
            "print(os.readlink('/proc/self/ns/net'))\n"
            "print(' '.join(sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:])))\n")
    try:
        result = box.py(code, str(port), abstract)
        lines = result.stdout.splitlines()
        # bubblewrap brings the namespace's own loopback up (nothing listens there); unshare leaves it down
        tcp_error = {"bwrap": "ECONNREFUSED", "unshare": "ENETUNREACH"}[box.policy]
        assert lines[:2] == [tcp_error, "ECONNREFUSED"], result.render()
        assert lines[2] != os.readlink("/proc/self/ns/net")  # another network namespace
        assert lines[3] == "lo"  # its only interface
        for server in (tcp, unix):
            server.setblocking(False)
            with pytest.raises(BlockingIOError):
                server.accept()
    finally:
        tcp.close()
        unix.close()


# --- row: fork bomb --------------------------------------------------------------------------------------------

COUNTING_BOMB = """
import errno, os, time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        n += 1
except OSError as exc:
    print("forks", n, errno.errorcode[exc.errno])
"""


@proc_modes
def test_fork_bomb_hits_the_process_limit_and_leaves_nothing(box):
    box.settle()
    mark = marker()
    already = len(live_pids())  # the limit is Limits.processes beyond what the uid already runs (zombies count too)
    result = box.py(COUNTING_BOMB + f"# {mark}\n", timeout=20)
    word, count, err = result.stdout.split()
    assert (result.returncode, word, err) == (0, "forks", "EAGAIN"), result.render()
    # the unprivileged uid's process limit binds (root's would not: the bomb would run to the timeout); some slack
    # for the uid's processes not yet reaped when the limit was computed (other tests' sandboxes ending)
    assert 1 <= int(count) <= Limits().processes + already + 32
    assert result.seconds < 10
    no_leftovers(mark, box.mark)
    assert box.run(["echo", "alive"]).stdout == "alive\n"  # the sandbox (and the assistant) still work


@proc_modes
def test_shell_fork_bomb_is_contained_and_leaves_nothing(box):
    box.settle()
    start = time.monotonic()
    result = box.sh(":(){ :|:& };:; sleep 1", timeout=3)
    assert time.monotonic() - start < 3 + 3  # ended by itself or at the timeout; the assistant was not starved
    assert result.timed_out or result.returncode == 0, result.render()[:500]
    assert "fork: retry: Resource temporarily unavailable" in result.stderr
    no_leftovers(box.mark)
    assert box.run(["echo", "alive"]).stdout == "alive\n"


# --- row: `while True: pass`, `10**10**8`, `setsid sleep 1000 &` -------------------------------------------

RUNAWAYS = {
    "busy-loop": lambda m: [sys.executable, "-I", "-c", f"while True: pass  # {m}"],
    "huge-power": lambda m: [sys.executable, "-I", "-c", f"10**10**8  # {m}"],
    "setsid-sleep": lambda m: ["bash", "-c", f"setsid sleep 1000.{m} & wait"],
}


@proc_modes
@pytest.mark.parametrize("what", RUNAWAYS)
def test_runaway_commands_are_killed_at_the_timeout_with_everything_they_started(box, what):
    box.settle()
    mark = marker()
    result = box.run(RUNAWAYS[what](mark), timeout=1)
    assert result.timed_out and result.returncode is None
    assert 1.0 <= result.seconds < 2.5
    assert re.match(r"timed out after 1\.\ds \(every process it started was killed\)\n\(no output\)$", result.render())
    no_leftovers(mark, box.mark)


@proc_modes
def test_a_setsid_escapee_dies_when_the_command_ends(box):
    box.settle()
    mark = marker()
    result = box.sh(f"setsid sleep 1000.{mark} & echo started", timeout=10)
    assert (result.returncode, result.timed_out, result.stdout) == (0, False, "started\n")
    assert result.seconds < 2
    no_leftovers(mark, box.mark)


def test_run_python_busy_loop_is_killed_at_the_timeout(workspace, boxes, monkeypatch):
    box = boxes(workspace, "bwrap-warm")
    box.settle()
    mark = marker()
    monkeypatch.setenv(MARK_VAR, mark)  # the tool passes our environment on (scrubbed of keys)
    out = python.run_python("while True: pass", timeout=1, context=tool_context(workspace, box.sandbox))
    assert re.match(r"timed out after 1\.\ds \(every process it started was killed\)\n\(no output\)$", out)
    no_leftovers(mark)


# --- row: allocate 8 GB; write a 2 GB file -------------------------------------------------------------------


@fs_modes
def test_allocating_8_gb_fails_with_memory_error(box):
    result = box.py("b = bytearray(8 * 1024**3)")
    assert result.returncode == 1 and not result.timed_out
    assert result.stderr.splitlines()[-1] == "MemoryError"
    assert result.render().startswith("exit status 1\nstderr:\nTraceback")


def test_run_python_allocating_8_gb_shows_memory_error(workspace, boxes):
    box = boxes(workspace, "bwrap-warm")
    out = python.run_python("data = bytearray(8 * 1024**3)", context=tool_context(workspace, box.sandbox))
    assert out.startswith("exit status 1\nstderr:\nTraceback") and out.endswith("\nMemoryError")


@fs_modes
def test_a_2_gb_file_is_stopped_by_the_file_size_limit(box):
    result = box.run(["dd", "if=/dev/zero", "of=big.bin", "bs=1M", "count=1", "seek=2047"])
    assert result.returncode == -25 and not result.timed_out, result.render()
    assert result.render() == "killed by signal SIGXFSZ (the file size limit was exceeded)\n(no output)"
    assert (box.workspace / "big.bin").stat().st_size == 0


@fs_modes
def test_a_streamed_write_stops_exactly_at_the_file_size_limit(box):
    limit = 8 * 1024 * 1024
    result = box.sh("head -c 2G /dev/zero > big.bin; echo status $?", limits=Limits(file_size_bytes=limit))
    assert result.stdout == f"status {128 + 25}\n"
    assert "File size limit exceeded" in result.stderr
    assert (box.workspace / "big.bin").stat().st_size == limit


def test_run_python_writing_2_gb_gets_file_too_large(workspace, boxes):
    box = boxes(workspace, "bwrap-warm")
    code = "with open('big.bin', 'wb') as f:\n    f.seek(2 * 1024**3 - 1)\n    f.write(b'\\0')\n"
    out = python.run_python(code, context=tool_context(workspace, box.sandbox))
    assert out.startswith("exit status 1\nstderr:\nTraceback") and out.endswith("OSError: [Errno 27] File too large")
    assert (workspace / "big.bin").stat().st_size == 0


# --- row: `yes` / 100 MB of output / binary bytes / ANSI escape sequences -------------------------------------

CUT = re.compile(r"\n\[\.\.\. (\d+) bytes cut \.\.\.\]\n")


@fs_modes
def test_endless_output_keeps_head_and_tail_with_a_marker(box):
    result = box.run(["yes"], timeout=1)
    assert result.timed_out and result.truncated
    head, cut, tail = CUT.split(result.stdout)
    half = sandbox.DEFAULT_OUTPUT_BYTES // 2
    assert head == "y\n" * (half // 2) and len(tail) == half and set(tail) == {"y", "\n"}
    assert int(cut) > 0


@fs_modes
def test_100_mb_of_output_is_cut_to_head_and_tail_with_the_exact_count(box):
    result = box.sh("printf 'BEGIN\\n'; head -c 100000000 /dev/zero | tr '\\0' a; printf '\\nEND\\n'", timeout=20)
    half = sandbox.DEFAULT_OUTPUT_BYTES // 2
    total = len("BEGIN\n") + 100_000_000 + len("\nEND\n")
    assert result.returncode == 0 and result.truncated
    assert result.stdout == ("BEGIN\n" + "a" * (half - 6) + f"\n[... {total - 2 * half} bytes cut ...]\n"
                             + "a" * (half - 5) + "\nEND\n")


ESCAPES = "printf '\\033[2J\\033]0;owned\\007red\\377\\376\\000ok\\r\\nC1:\\302\\233end\\n'"
ESCAPED = "\\x1b[2J\\x1b]0;owned\\x07red\ufffd\ufffd\\x00ok\nC1:\\x9bend\n"


@fs_modes
def test_binary_bytes_and_escape_sequences_are_replaced_and_escaped(box):
    result = box.sh(f"{ESCAPES}; {ESCAPES} >&2")
    assert (result.returncode, result.stdout, result.stderr) == (0, ESCAPED, ESCAPED)


def test_run_command_observation_puts_the_status_first_and_nothing_raw(workspace, boxes):
    box = boxes(workspace, "bwrap-warm")
    out = shell.run_command(f"{ESCAPES}; yes | head -c 300000; exit 3", context=tool_context(workspace, box.sandbox))
    assert out.startswith("exit status 3\nstdout:\n" + ESCAPED + "y\ny\n")
    assert CUT.search(out) and out.endswith("y\ny")
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", out)  # no raw control character reaches a terminal


# --- row: ctypes, posix.system, __subclasses__ tricks in Python ----------------------------------------------

TRICKS = {
    "ctypes-open": ("import ctypes, errno, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                    "fd = libc.open(b'{target}', os.O_WRONLY | os.O_CREAT, 0o644)\n"
                    "print('open', fd, errno.errorcode[ctypes.get_errno()])\n", "open -1 EROFS\n"),
    "ctypes-setuid": ("import ctypes, errno\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                      "print('setuid', libc.setuid(0), errno.errorcode[ctypes.get_errno()])\n"
                      "open('{target}', 'w')\n", "setuid -1 EINVAL\n"),  # uid 0 does not even exist in there
    "posix-system": ("import posix\nprint('system', posix.system('echo pwned > {target}'))\n", "system 512\n"),  # sh: cannot create
    "subclasses": ("wrap = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]\n"
                   "print('system', wrap.__init__.__globals__['system']('echo pwned > {target}'))\n", "system 512\n"),
}


@pytest.mark.parametrize("mode", FS_MODES)
@pytest.mark.parametrize("trick", TRICKS)
def test_python_tricks_cannot_write_outside_the_workspace(world, boxes, mode, trick):
    code, expected = TRICKS[trick]
    target = world.pub / f"pwned-{trick}"
    box = boxes(world.ws, mode)
    # the way run_python runs code: the tool's interpreter reading the code from stdin
    result = box.run([sys.executable, "-E", "-s", "-"], stdin=code.format(target=target).encode())
    assert result.stdout.startswith(expected), result.render()
    assert not target.exists()
    assert sorted(os.listdir(world.pub)) == ["proj", "victim.txt"]


def test_run_python_tricks_through_the_tool(world, boxes):
    box = boxes(world.ws, "bwrap-warm")
    ctx = tool_context(world.ws, box.sandbox)
    for trick, (code, expected) in TRICKS.items():
        out = python.run_python(code.format(target=world.pub / f"pwned-{trick}"), context=ctx)
        assert f"stdout:\n{expected.rstrip()}" in out, out
    assert sorted(os.listdir(world.pub)) == ["proj", "victim.txt"]


# --- row: argument injection via tools ---------------------------------------------------------------------------

INJECTION = ["printf", "%s\\n", "$(touch pwned1)", "`touch pwned2`", "; touch pwned3", "| touch pwned4",
             "&& touch pwned5", "> pwned6", "--help"]


@fs_modes
def test_argv_is_never_shell_interpreted(box):
    result = box.run(INJECTION)
    assert (result.returncode, result.stdout) == (0, "".join(a + "\n" for a in INJECTION[2:]))
    assert sorted(os.listdir(box.workspace)) == [".git", "hello.py"]  # .git: the empty one the sandbox guards


def test_run_command_with_a_list_is_never_shell_interpreted(workspace, boxes):
    box = boxes(workspace, "bwrap-warm")
    out = shell.run_command(INJECTION, context=tool_context(workspace, box.sandbox))
    assert out == "exit status 0\nstdout:\n" + "\n".join(INJECTION[2:])
    assert sorted(os.listdir(workspace)) == [".git", "hello.py"]  # .git: the empty one the sandbox guards


def test_run_python_code_is_never_an_interpreter_option(workspace, boxes):
    box = boxes(workspace, "bwrap-warm")
    out = python.run_python("--version", context=tool_context(workspace, box.sandbox))
    assert out.startswith("exit status 1") and out.endswith("NameError: name 'version' is not defined")


def test_file_tool_paths_that_look_like_options_are_plain_paths(workspace):
    ctx = tool_context(workspace)
    assert files.write_file("--pre=touch pwned", "x", context=ctx).startswith("wrote --pre=touch pwned (1 bytes)")
    with pytest.raises(ToolError, match="^-o: no such file$"):
        files.read_file("-o", context=ctx)
    with pytest.raises(ToolError, match="^--help: not a folder$"):
        files.list_files("--help", context=ctx)
    assert sorted(os.listdir(workspace)) == ["--pre=touch pwned", "hello.py"]


# --- row: the sandbox layer is unavailable ---------------------------------------------------------------------


@pytest.mark.parametrize("policy, hidden, reasons", [
    ("bwrap", ("bwrap",), ["(bwrap: bwrap not found"]),
    ("auto", ("bwrap", "unshare"), ["(bwrap: bwrap not found", "unshare: unshare not found"]),
])
def test_a_missing_layer_refuses_and_names_the_fix(workspace, monkeypatch, policy, hidden, reasons):
    hide_programs(monkeypatch, *hidden)
    box = Sandbox(workspace, policy)
    try:
        with pytest.raises(SandboxError) as info:
            box.layer
        message = str(info.value)
        assert message.startswith(f"no sandbox layer available for --sandbox {policy} {reasons[0]}")
        assert all(r in message for r in reasons)
        assert "apt-get install bubblewrap" in message and "--sandbox weak" in message
        with pytest.raises(SandboxError):
            box.run(["touch", "ran.txt"], timeout=5)
        assert not (workspace / "ran.txt").exists()
    finally:
        box.close()


def test_a_bubblewrap_that_cannot_start_refuses_with_its_reason(world, monkeypatch):
    fake = world.root / "bin" / "bwrap"
    fake.parent.mkdir()
    fake.parent.chmod(0o755)
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sandbox, "TOOL_DIRS", (str(fake.parent),) + sandbox.TOOL_DIRS)
    box = Sandbox(world.ws, "bwrap")
    try:
        with pytest.raises(SandboxError) as info:
            box.layer
        message = str(info.value)
        assert message.startswith("no sandbox layer available for --sandbox bwrap "
                                  "(bwrap: bwrap: No permissions to create new namespace)")
        assert "--sandbox weak" in message
    finally:
        box.close()


def test_weak_is_the_explicit_opt_in_to_resource_limits_only(workspace, monkeypatch):
    hide_programs(monkeypatch, "bwrap", "unshare")
    box = Sandbox(workspace, "weak")
    try:
        assert box.layer == "rlimits"
        result = box.run(["touch", "ran.txt"], timeout=10)
        assert (result.returncode, result.layer) == (0, "rlimits")
        assert (workspace / "ran.txt").exists()
    finally:
        box.close()


def test_run_command_refuses_and_runs_nothing_when_no_layer_is_available(make_session, workspace, monkeypatch):
    from conftest import call

    from assistant.events import Observation, ToolCall

    hide_programs(monkeypatch, "bwrap")
    s = make_session([call("run_command", command="touch ran.txt"), "done"], yes=True, sandbox="bwrap")
    events = list(s.agent.run_turn("go"))
    assert [e.name for e in events if isinstance(e, ToolCall)] == ["run_command"]
    obs = next(e for e in events if isinstance(e, Observation))
    assert not obs.ok
    assert obs.text.startswith("Error: no sandbox layer available for --sandbox bwrap (bwrap: bwrap not found")
    assert "apt-get install bubblewrap" in obs.text and "--sandbox weak" in obs.text
    assert not (workspace / "ran.txt").exists()
    assert s.undo.stack == []


def test_helper_programs_never_come_from_path(workspace, monkeypatch, tmp_path):
    """A folder on PATH that a command can write (a virtualenv in the workspace) must not supply the nsenter,
    setpriv, prlimit or bwrap that start the next run: they would run outside the sandbox, as root here."""
    planted = workspace / ".venv" / "bin"
    planted.mkdir(parents=True)
    witness = tmp_path / "planted-tool-ran"
    for name in ("nsenter", "setpriv", "prlimit", "bwrap", "unshare"):
        (planted / name).write_text(f"#!/bin/sh\ntouch {witness}\nexec /usr/bin/{name} \"$@\"\n")
        (planted / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{planted}{os.pathsep}{os.environ['PATH']}")
    for policy in ("bwrap", "unshare"):
        box = Sandbox(workspace, policy)
        try:
            assert box.run(["true"], timeout=10).returncode == 0
        finally:
            box.close()
    assert not witness.exists()
    assert sandbox.find_tool("bwrap") == "/usr/bin/bwrap"


@pytest.mark.parametrize("mode", FS_MODES)
def test_runs_share_no_scratch_space_and_it_is_bounded(workspace, boxes, mode):
    """/tmp, /dev/shm and /run are fresh for every run and size-bounded (tmpfs memory escapes RLIMIT_AS);
    /dev is read-only, so a run cannot swap /dev/fd (or the like) for a later one."""
    box = boxes(workspace, mode)
    first = box.sh("echo hi > /run/planted; echo hi > /tmp/planted; ln -s /etc /dev/planted; "
                   "head -c 300M /dev/zero > /dev/shm/big; echo x > /dev/null && echo null-ok")
    assert first.stdout == "null-ok\n"
    assert first.stderr.splitlines() == [
        "ln: failed to create symbolic link '/dev/planted': Read-only file system",
        "head: error writing 'standard output': No space left on device"]
    # (/tmp holds only the way to the workspace and the Python environment when they live under /tmp)
    second = box.sh("ls -A /run /dev/shm; ls -A /tmp | grep -c planted; test -e /dev/planted || echo no-link")
    assert second.stdout == "/dev/shm:\n\n/run:\n0\nno-link\n"


def test_secrets_named_by_the_environment_are_hidden_and_url_passwords_scrubbed(world, boxes, monkeypatch):
    hf = world.root / "hf"
    hf.mkdir(mode=0o755)
    (hf / "token").write_text(f"hf_{world.secret}")
    (hf / "token").chmod(0o644)
    monkeypatch.setenv("HF_HOME", str(hf))
    monkeypatch.setenv("DATABASE_URL", f"postgres://app:{world.secret}@db/prod")
    monkeypatch.setenv("PLAIN_URL", "https://example.com/docs")
    box = boxes(world.ws, "bwrap-warm")
    result = box.sh(f"cat {hf}/token; env")
    assert world.secret not in result.stdout + result.stderr
    assert "PLAIN_URL=https://example.com/docs" in result.stdout and "DATABASE_URL" not in result.stdout


def test_an_audit_log_kept_in_the_workspace_is_out_of_reach(make_session, workspace):
    from conftest import call

    (workspace / "logs").mkdir()
    log = workspace / "logs" / "audit.jsonl"
    s = make_session([call("run_command", command="cat logs/audit.jsonl; : > logs/audit.jsonl; "
                                                  "rm -f logs/audit.jsonl; mv logs logs2"), "done"],
                     yes=True, audit_log=str(log))
    events = list(s.agent.run_turn("tidy up"))
    obs = next(e for e in events if e.kind == "observation")
    assert '"kind"' not in obs.text and obs.text.count("Device or resource busy") == 2  # rm, and mv of its folder
    s.close()
    from assistant.logs.audit import verify

    count, problem = verify(log)
    assert problem is None and count >= 4


SETID_PROBE = r"""
import errno, os, shutil, sys
shutil.copy("/bin/true", "t")
os.chmod("t", 0o755)
out = []
for what, call in [("chmod u+s", lambda: os.chmod("t", 0o4755)), ("chmod g+s", lambda: os.chmod("t", 0o2755)),
                   ("open 4755", lambda: os.open("u", os.O_CREAT | os.O_WRONLY, 0o4755)),
                   ("setxattr", lambda: os.setxattr("t", "security.capability", b"\x01\x00\x00\x02" + b"\x00" * 16)),
                   ("user xattr", lambda: os.setxattr("t", "user.note", b"1"))]:
    try:
        call()
        out.append(what + " ok")
    except OSError as exc:
        out.append(what + " " + errno.errorcode[exc.errno])
print("; ".join(out))
"""


@pytest.mark.parametrize("mode", PROC_MODES)
def test_no_setuid_file_or_file_capability_can_be_left_in_the_workspace(workspace, boxes, mode):
    """As root, what a command creates in the workspace is root's on disk (the idmapped mount): a setuid bit or a
    security.capability attribute there would hand root to any local user who runs the file."""
    box = boxes(workspace, mode)
    result = box.py(SETID_PROBE)
    assert result.stdout == ("chmod u+s EPERM; chmod g+s EPERM; open 4755 EPERM; setxattr ENOTSUP; "
                             "user xattr ENOTSUP\n"), result.render()  # ENOTSUP == EOPNOTSUPP
    assert oct((workspace / "t").stat().st_mode & 0o7777) == "0o755" and not (workspace / "u").exists()
    assert os.listxattr(workspace / "t") == []


@pytest.mark.parametrize("mode", FS_MODES)
def test_copies_that_preserve_attributes_still_work(workspace, boxes, mode):
    """The filter answers extended-attribute calls as a file system without them would: cp -p, cp -a and mv
    carry on (with EPERM, coreutils gives up)."""
    box = boxes(workspace, mode)
    result = box.sh("chmod 640 hello.py && cp -p hello.py a.py && mkdir d && cp -a d e && echo x > /tmp/m && "
                    "mv /tmp/m m && stat -c %a a.py")
    assert (result.returncode, result.stdout, result.stderr) == (0, "640\n", ""), result.render()


@pytest.mark.parametrize("mode", FS_MODES)
def test_no_sysv_shared_memory_outlives_a_run(workspace, boxes, mode):
    box = boxes(workspace, mode)
    made = box.py("import ctypes; l = ctypes.CDLL(None); print(l.shmget(0, 1 << 20, 0o1600) >= 0)")
    assert made.stdout == "True\n"
    assert box.sh("ipcs -m | grep -c 0x00000000 || true").stdout == "0\n"


@pytest.mark.parametrize("mode", PROC_MODES)
def test_a_protected_path_cannot_be_carried_off_by_renaming_its_folder(workspace, boxes, mode, monkeypatch):
    """The assistant's virtualenv in a subfolder of the workspace: renaming the subfolder would take the
    read-only mount along and leave the old name free for a copy with a planted .pth file."""
    (workspace / "tools" / ".venv" / "lib").mkdir(parents=True)
    real = Sandbox.readable_paths
    monkeypatch.setattr(Sandbox, "readable_paths", lambda self: real(self) + [workspace / "tools" / ".venv"])
    box = boxes(workspace, mode)
    result = box.sh("mv tools tools.old; echo x > tools/other.txt && echo writable")
    assert result.stderr == "mv: cannot move 'tools' to 'tools.old': Device or resource busy\n"
    assert result.stdout == "writable\n" and not (workspace / "tools.old").exists()


@pytest.mark.parametrize("mode", FS_MODES)
def test_a_symlinked_git_folder_replaced_by_a_command_is_put_back(workspace, boxes, mode, tmp_path):
    gitdir = tmp_path / "real.gitdir"
    gitdir.mkdir()
    (workspace / ".git").symlink_to(gitdir)
    box = boxes(workspace, mode)
    result = box.sh("rm .git && git init -q . && git config core.fsmonitor 'touch /tmp/pwned' && echo planted")
    assert result.stdout == "planted\n"
    assert result.stderr.startswith("[the command replaced .git; it was moved to .git.replaced-")
    assert (workspace / ".git").is_symlink() and os.readlink(workspace / ".git") == str(gitdir)
    aside = [p.name for p in workspace.iterdir() if p.name.startswith(".git.replaced-")]
    assert len(aside) == 1
