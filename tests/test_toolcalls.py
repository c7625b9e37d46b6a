import json

import pytest

from assistant.errors import FormatError
from assistant.loader import load_plugins
from assistant.toolcalls import MAX_ARGUMENT_BYTES, first_call_end, parse_tool_calls


@pytest.fixture(scope="module")
def tools():
    return load_plugins().tools


def parsed(text, tools):
    return [(c.name, c.arguments) for c in parse_tool_calls(text, tools)]


def test_json_tool_calls(tools):
    text = '{"tool_calls": [{"name": "read_file", "arguments": {"path": "a.py"}}]}'
    assert parsed(text, tools) == [("read_file", {"path": "a.py"})]


def test_fenced_json_with_prose(tools):
    text = 'I will look.\n```json\n{"name": "list_files", "arguments": {"path": "src"}}\n```\n'
    assert parsed(text, tools) == [("list_files", {"path": "src"})]


def test_openai_function_style_with_string_arguments(tools):
    text = json.dumps({"tool_calls": [{"type": "function", "function": {"name": "run_python", "arguments": '{"code": "1+1"}'}}]})
    assert parsed(text, tools) == [("run_python", {"code": "1+1"})]


def test_legacy_action_format(tools):
    text = 'Thought: list them\nAction: run_command\nAction Input: {"command": "ls -la"}'
    assert parsed(text, tools) == [("run_command", {"command": "ls -la"})]


def test_legacy_action_plain_input_for_single_argument_tool(tools):
    assert parsed("Action: run_command\nAction Input: ls -la\n", tools) == [("run_command", {"command": "ls -la"})]


def test_near_json_is_repaired(tools):
    text = "{'tool_calls': [{'name': 'read_file', 'arguments': {'path': 'x.py',}}]}"
    assert parsed(text, tools) == [("read_file", {"path": "x.py"})]


def test_plain_answer_has_no_calls(tools):
    assert parse_tool_calls("17 * 23 = 391.", tools) == []
    assert parse_tool_calls('Here is JSON you asked for: {"a": 1}', tools) == []


def test_truncated_call_is_never_run(tools):
    with pytest.raises(FormatError, match="cut off"):
        parse_tool_calls('{"tool_calls": [{"name": "run_command", "arguments": {"command": "rm -rf /tmp/x', tools)


def test_wrong_argument_type(tools):
    with pytest.raises(FormatError, match=r"invalid arguments for read_file: argument path: 7 is not of type 'string'"):
        parse_tool_calls('{"name": "read_file", "arguments": {"path": 7}}', tools)


def test_unknown_argument_name(tools):
    with pytest.raises(FormatError) as err:
        parse_tool_calls('{"name": "read_file", "arguments": {"file": "a.py"}}', tools)
    assert "'path' is a required property" in str(err.value)
    assert "('file' was unexpected)" in str(err.value)


def test_missing_required_argument(tools):
    with pytest.raises(FormatError, match="'path' is a required property"):
        parse_tool_calls('{"name": "read_file", "arguments": {}}', tools)


def test_unknown_tool_lists_the_real_ones(tools):
    with pytest.raises(FormatError, match=r"unknown tool 'delete_everything'; the tools are: collect_samples, context7, dedupe, edit_file, list_files"):
        parse_tool_calls('{"name": "delete_everything", "arguments": {}}', tools)


def test_huge_arguments_refused(tools):
    text = json.dumps({"name": "write_file", "arguments": {"path": "a", "content": "x" * (1024 * 1024)}})
    with pytest.raises(FormatError, match=f"too large .* limit is {MAX_ARGUMENT_BYTES}"):
        parse_tool_calls(text, tools)


def test_fused_calls_refused(tools):
    text = '{"name": "run_command", "arguments": {"command": "ls"} "name": "read_file", "arguments": {"path": "x"}}'
    with pytest.raises(FormatError, match="fused"):
        parse_tool_calls(text, tools)


def test_two_whole_calls_in_order_and_duplicates_dropped(tools):
    one = '{"name": "read_file", "arguments": {"path": "a"}}'
    two = '{"name": "list_files", "arguments": {"path": "."}}'
    assert parsed(f"{one}\n{two}\n{one}", tools) == [("read_file", {"path": "a"}), ("list_files", {"path": "."})]


def test_mentions_of_the_format_without_a_call_are_an_error(tools):
    with pytest.raises(FormatError, match="could not find a complete tool call"):
        parse_tool_calls('I would use "tool_calls" here but', tools)


def test_first_call_end_finds_where_to_stop(tools):
    call = '{"tool_calls": [{"name": "list_files", "arguments": {"path": "."}}]}'
    assert first_call_end("ok " + call + " and more", tools) == 3 + len(call)
    assert first_call_end('{"tool_calls": [{"name": "list_files"', tools) is None
    assert first_call_end("no call here", tools) is None
    js = 'In JavaScript: const user = {"name": "Bob", "age": 3}; then'
    assert first_call_end(js, tools) is None  # JSON in an answer does not stop the answer
