"""`assistant bench tools` end to end on a scripted model: the classification and the figures it prints."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import call


def test_bench_tools_counts_valid_invalid_cut_and_right_tool(tmp_path, isolated_home):
    data = tmp_path / "set.jsonl"
    rows = [{"id": "a", "prompt": "list files", "tool": "list_files"},
            {"id": "b", "prompt": "compute 2+2", "tool": "run_python"},
            {"id": "c", "prompt": "read x", "tool": "read_file", "also": ["run_command"]},
            {"id": "d", "prompt": "hello", "tool": "list_files"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    replies = [call("list_files", path="."),                       # valid, right tool
               call("run_command", command="echo $((2+2))"),       # valid, wrong tool
               '{"tool_calls": [{"name": "read_file", "arguments": {"pth": "x"}}]}',  # invalid
               "Hello there."]                                     # an answer
    script = tmp_path / "replies.jsonl"
    script.write_text("".join(json.dumps(r) + "\n" for r in replies))
    r = subprocess.run([sys.executable, "-m", "assistant", "bench", "tools", "--model", f"scripted:{script}",
                        "--data", str(data), "--decoding", "free", "--workspace", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    line = next(l for l in r.stdout.splitlines() if l.strip().startswith("free"))
    # calls tried 3/4, valid-call rate 2/3, none cut, valid of tried 2/3, right tool 1/4, one answer
    assert line.split()[1:7] == ["75%", "67%", "0", "67%", "25%", "1"], line
    assert "list_files 1/2" in r.stdout and "run_python 0/1" in r.stdout
    said = dict(line.split(": ", 1) for line in r.stdout.splitlines()[-2:])
    saved = json.loads(open(said["results"]).read())
    assert open(said["chart"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert [x["kind"] for x in saved["results"]["free"]] == ["valid", "valid", "invalid", "answer"]
