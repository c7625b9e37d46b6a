"""The step-1 tools: run_command, run_python, file tools, path checks and /undo snapshots."""

import os
import time

import pytest

from assistant import sandbox
from assistant.config import load_settings
from assistant.errors import ToolError
from assistant.tools import ToolContext
from assistant.workspace import UndoStack, Workspace
from assistant.plugins import files, python, shell


@pytest.fixture
def ctx(workspace):
    ws = Workspace(workspace)
    return ToolContext(ws, load_settings({"workspace": str(workspace)}), UndoStack(ws))


def test_run_command_shell_and_argv(ctx):
    assert shell.run_command("echo hi && exit 3", context=ctx) == "exit status 3\nstdout:\nhi"
    out = shell.run_command(["printf", "%s", "a b; rm -rf x"], context=ctx)
    assert out == "exit status 0\nstdout:\na b; rm -rf x"  # argv: never shell-interpreted


def test_timeout_kills_the_whole_group(ctx, workspace):
    start = time.monotonic()
    out = shell.run_command("sleep 1000 & echo started > started.txt; sleep 1000", timeout=1, context=ctx)
    assert out.startswith("timed out after 1.")
    assert time.monotonic() - start < 10
    assert (workspace / "started.txt").read_text() == "started\n"
    time.sleep(0.2)
    assert not [p for p in sleepers("1000")]  # the background child died with the group


def sleepers(arg: str) -> list[int]:
    """Live processes whose command line is `sleep ARG`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if fh.read().split(b"\0")[:2] == [b"sleep", arg.encode()] and alive(int(entry)):
                        found.append(int(entry))
            except OSError:
                pass
    return found


def alive(pid: int) -> bool:
    """Running and not a zombie (an orphan's zombie may wait a while for its reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_output_keeps_head_and_tail_with_a_marker():
    result = sandbox.run(["python3", "-c", "print('A' * 100000); print('THE END')"], cwd=".", timeout=20,
                         max_output=2000)
    assert result.truncated
    assert result.stdout.startswith("A" * 100) and result.stdout.rstrip().endswith("THE END")
    assert "bytes cut ...]" in result.stdout
    assert len(result.stdout) < 2200


def test_binary_and_escape_sequences_are_made_harmless():
    result = sandbox.run(["python3", "-c", "import sys; sys.stdout.buffer.write(b'\\x1b[31mred\\xff\\x00ok\\n')"],
                         cwd=".", timeout=20)
    assert result.stdout == "\\x1b[31mred\ufffd\\x00ok\n"


def test_failing_status_is_visible_even_when_output_is_cut():
    result = sandbox.run(["bash", "-c", "yes | head -c 500000; exit 7"], cwd=".", timeout=20, max_output=1000)
    assert result.render().startswith("exit status 7") and result.truncated


def test_environment_is_scrubbed_of_secrets(ctx, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("HARMLESS_SETTING", "visible")
    out = shell.run_command("env", context=ctx)
    assert "HARMLESS_SETTING=visible" in out and "sk-secret" not in out


def test_run_python_prints_the_last_expression(ctx):
    assert python.run_python("17*23", context=ctx) == "exit status 0\nstdout:\n391"
    assert python.run_python("x = 2\nx ** 10", context=ctx) == "exit status 0\nstdout:\n1024"
    assert python.run_python("print('once')", context=ctx) == "exit status 0\nstdout:\nonce"
    out = python.run_python("def f(:\n  pass", context=ctx)
    assert out.startswith("exit status 1") and "SyntaxError" in out


def test_run_python_timeout(ctx):
    assert python.run_python("while True: pass", timeout=1, context=ctx).startswith("timed out")


@pytest.mark.parametrize("path", ["../outside.txt", "/etc/assistant-test", "/root/x", "sub/../../x"])
def test_writes_outside_the_workspace_are_refused(ctx, path):
    with pytest.raises(ToolError, match="outside the workspace"):
        files.write_file(path, "x", context=ctx)
    assert not os.path.exists("/etc/assistant-test")


def test_symlink_leaving_the_workspace_is_refused(ctx, workspace, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("key")
    (workspace / "link").symlink_to(secret)
    with pytest.raises(ToolError, match="outside the workspace"):
        files.read_file("link", context=ctx)
    with pytest.raises(ToolError, match="outside the workspace"):
        files.write_file("link", "overwritten", context=ctx)
    assert secret.read_text() == "key"


def test_protected_paths_are_not_writable(ctx, workspace):
    (workspace / ".git" / "hooks").mkdir(parents=True)
    with pytest.raises(ToolError, match="protected path"):
        files.write_file(".git/hooks/pre-commit", "evil", context=ctx)
    with pytest.raises(ToolError, match="protected path"):
        files.write_file(".assistant/config.toml", "yes = true", context=ctx)


def test_non_utf8_file_read_and_edit_preserve_bytes(ctx, workspace):
    raw = b"caf\xe9 = 1\nname = 'x'\n\xff\xfe end\n"
    (workspace / "latin.txt").write_bytes(raw)
    shown = files.read_file("latin.txt", context=ctx)
    assert "not valid UTF-8" in shown and "name = 'x'" in shown
    files.edit_file("latin.txt", "name = 'x'", "name = 'y'", context=ctx)
    assert (workspace / "latin.txt").read_bytes() == raw.replace(b"'x'", b"'y'")


def test_binary_file_is_not_shown_or_edited(ctx, workspace):
    (workspace / "blob.bin").write_bytes(b"\x00\x01\x02" * 10)
    assert files.read_file("blob.bin", context=ctx) == "blob.bin: binary file, 30 bytes (not shown)"
    with pytest.raises(ToolError, match="binary file"):
        files.edit_file("blob.bin", "\x01", "x", context=ctx)


def test_edit_needs_one_exact_match_and_returns_a_diff(ctx, workspace):
    (workspace / "a.py").write_text("x = 1\nx = 1\ny = 2\n")
    with pytest.raises(ToolError, match="occurs 2 times"):
        files.edit_file("a.py", "x = 1", "x = 3", context=ctx)
    with pytest.raises(ToolError, match="not found"):
        files.edit_file("a.py", "z = 0", "z = 1", context=ctx)
    out = files.edit_file("a.py", "y = 2", "y = 3", context=ctx)
    assert "-y = 2\n+y = 3" in out and "--- a/a.py" in out


def test_undo_restores_file_tool_writes(ctx, workspace):
    files.write_file("hello.py", "print('changed')\n", context=ctx)
    files.write_file("new.txt", "brand new", context=ctx)
    label, paths = ctx.undo.undo()
    assert label == "write_file new.txt" and not (workspace / "new.txt").exists()
    ctx.undo.undo()
    assert (workspace / "hello.py").read_text() == "print('hello')\n"
    assert ctx.undo.undo() is None


def test_undo_restores_what_a_command_changed(ctx, workspace):
    (workspace / "keep.txt").write_text("untouched")
    shell.run_command("echo overwritten > hello.py; echo created > made.txt", context=ctx)
    label, paths = ctx.undo.undo()
    assert sorted(p.name for p in paths) == ["hello.py", "made.txt"]
    assert (workspace / "hello.py").read_text() == "print('hello')\n" and not (workspace / "made.txt").exists()


def test_list_files_skips_generated_folders(ctx, workspace):
    (workspace / ".git").mkdir()
    (workspace / "src").mkdir()
    (workspace / "src" / "app.py").write_text("")
    assert files.list_files(context=ctx).splitlines() == ["hello.py", "src/"]
    assert files.list_files(max_depth=2, context=ctx).splitlines() == ["hello.py", "src/", "src/app.py"]


def test_run_python_can_import_workspace_modules(ctx, workspace):
    (workspace / "helpers.py").write_text("def double(x):\n    return 2 * x\n")
    assert python.run_python("import helpers\nhelpers.double(21)", context=ctx) == "exit status 0\nstdout:\n42"


@pytest.mark.parametrize("code, shown", [
    ("total = sum(range(10))\ntotal  # the answer", "45"),
    ("x = 3\nx;", "3"),
    ("(1 +\n 2)", "3"),
    ("'a'  \\\n", None),
])
def test_last_expression_with_comments_and_continuations(ctx, code, shown):
    out = python.run_python(code, context=ctx)
    if shown is None:
        assert out.startswith("exit status 1") and "SyntaxError" in out
    else:
        assert out == f"exit status 0\nstdout:\n{shown}"


def test_a_child_that_never_reads_stdin_still_times_out():
    start = time.monotonic()
    result = sandbox.run(["sleep", "30"], cwd=".", timeout=1, stdin=b"x" * 1_000_000)
    assert result.timed_out and time.monotonic() - start < 5


@pytest.mark.parametrize("policy", ["auto", "rlimits"])
def test_limits_never_raise_a_hard_limit(policy, workspace):
    # run() inside a process whose hard limit on open files (200) is below our default (1024).
    import subprocess
    import sys

    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200));"
            "from assistant import sandbox; r = sandbox.run(['bash', '-c', 'ulimit -Hn'], cwd=sys.argv[1], "
            f"timeout=10, policy={policy!r}); print(r.render())")
    result = subprocess.run([sys.executable, "-c", code, str(workspace)], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "exit status 0\nstdout:\n200", result.stderr


def test_real_time_signal_status():
    assert sandbox.run(["bash", "-c", "kill -40 $$"], cwd=".", timeout=10).render().startswith("killed by signal 40")


def test_temp_file_symlink_cannot_redirect_a_write(ctx, workspace, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("safe")
    for name in ("a.txt.assistant-tmp", ".a.txt.assistant-tmp"):
        (workspace / name).symlink_to(outside)
    files.write_file("a.txt", "content", context=ctx)
    assert outside.read_text() == "safe" and (workspace / "a.txt").read_text() == "content"


def test_all_of_git_is_protected(ctx, workspace):
    (workspace / ".git").mkdir()
    (workspace / ".git" / "config").write_text("[core]\n")
    with pytest.raises(ToolError, match="protected path"):
        files.edit_file(".git/config", "[core]", "[core]\n\tfsmonitor = touch /tmp/x", context=ctx)
    with pytest.raises(ToolError, match="protected path"):
        files.write_file(".GIT/hooks/pre-push", "x", context=ctx)


def test_undecodable_file_names_do_not_break_a_turn(make_session, workspace):
    from conftest import call

    with open(os.fsencode(workspace) + b"/caf\xe9.txt", "w") as fh:  # a Latin-1 file name
        fh.write("x")
    s = make_session([call("list_files"), "done"])
    events = list(s.agent.run_turn("caf\udce9?"))
    assert events[-1].text == "done"
    obs = next(e for e in events if e.kind == "observation")
    assert "caf\ufffd.txt" in obs.text


def test_an_opted_in_weak_layer_says_so(workspace):
    ws = Workspace(workspace)
    box = sandbox.Sandbox(workspace, "weak")
    box._layer = "rlimits"  # as on a machine where neither bwrap nor unshare works
    ctx = ToolContext(ws, load_settings({"workspace": str(workspace)}), UndoStack(ws), sandbox=box)
    out = shell.run_command("echo hi", context=ctx)
    assert out == "[not isolated: --sandbox weak ran this with resource limits only]\nexit status 0\nstdout:\nhi"
    box.close()


def test_a_run_whose_worker_dies_is_not_run_again(workspace):
    import signal
    import threading

    box = sandbox.Sandbox(workspace, "bwrap")
    try:
        assert box.run(["true"], timeout=10, warm=True).warm
        worker = box._worker
        threading.Timer(0.5, lambda: os.killpg(worker.proc.pid, signal.SIGKILL)).start()
        result = box.run(["bash", "-c", "echo ran >> count.txt; sleep 5"], timeout=20, warm=True)
        assert result.returncode == -9 and "the sandbox worker stopped during this run" in result.stderr
        assert (workspace / "count.txt").read_text() == "ran\n"  # once: not retried cold
        again = box.run(["cat", "count.txt"], timeout=10, warm=True)
        assert (again.stdout, again.warm) == ("ran\n", True) and box._worker is not worker  # a new worker
    finally:
        box.close()


INFLIGHT = """
import socket
a, b = socket.socketpair()
socket.send_fds(b, [b"x"], [1, 2, b.fileno()])  # stdout and stderr ride in a queue of a socket pair
socket.send_fds(a, [b"x"], [a.fileno()])  # that only the pair itself references
print("done", flush=True)
"""


@pytest.mark.parametrize("warm", [False, True])
def test_output_pipes_kept_alive_in_a_socket_queue_do_not_hold_the_run(workspace, warm):
    box = sandbox.Sandbox(workspace, "bwrap")
    try:
        start = time.monotonic()
        result = box.run(["python3", "-c", INFLIGHT], timeout=5, warm=warm)
        assert time.monotonic() - start < 5  # the command ended at once; its pipes never close
        assert (result.returncode, result.stdout, result.warm) == (0, "done\n", warm)
        assert box.run(["echo", "next"], timeout=5, warm=warm).stdout == "next\n"
    finally:
        box.close()


def test_a_warm_worker_outlives_the_thread_that_started_it(workspace):
    import threading

    box = sandbox.Sandbox(workspace, "bwrap")
    try:
        started = []
        t = threading.Thread(target=lambda: started.append(box.run(["true"], timeout=10, warm=True)))
        t.start()
        t.join()
        assert started[0].warm
        time.sleep(0.2)
        assert box._worker.alive()  # bubblewrap's parent-death signal follows the thread that started it
        assert box.run(["echo", "same"], timeout=10, warm=True).stdout == "same\n"
    finally:
        box.close()


@pytest.mark.parametrize("bad", [["echo", "a\x00b"], ["echo", "\ud800"]])
def test_arguments_that_are_not_text_are_refused(workspace, bad):
    box = sandbox.Sandbox(workspace, "bwrap")
    try:
        for warm in (False, True):
            with pytest.raises(sandbox.SandboxError, match="NUL byte|not valid text"):
                box.run(bad, timeout=10, warm=warm)
    finally:
        box.close()
