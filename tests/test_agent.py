"""The loop driven by a scripted model: call formats, malformed calls, limits, vetoes, interrupts, auditing."""

import json

import pytest

from conftest import call

from assistant.events import Answer, Error, Meta, Observation, ToolCall
from assistant.hookspecs import hookimpl
from assistant.logs.audit import read_records, verify
from assistant.agent import REPEAT_NOTE
from assistant.errors import AssistantError
from assistant.prompts import FINAL_MARK


def kinds(events):
    return [e.kind for e in events if e.kind != "token"]


def run(session, text="go"):
    return list(session.agent.run_turn(text))


def test_json_call_then_answer(make_session, workspace):
    s = make_session([call("read_file", path="hello.py"), "It prints hello."])
    events = run(s)
    assert kinds(events) == ["meta", "tool_call", "observation", "answer"]
    obs = next(e for e in events if isinstance(e, Observation))
    assert obs.ok and "print('hello')" in obs.text
    assert events[-1].text == "It prints hello."
    # The observation went back to the model, marked as the last action of the turn.
    last_prompt = s.model.received[-1]
    assert last_prompt[-2]["content"].startswith("Observation from read_file:")
    assert last_prompt[-1]["content"] == FINAL_MARK


def test_fenced_and_legacy_formats_run_the_tool(make_session):
    fenced = 'Let me see.\n```json\n{"name": "list_files", "arguments": {"path": "."}}\n```'
    legacy = 'Action: list_files\nAction Input: {"path": "."}'
    for output in (fenced, legacy):
        s = make_session([output, "done"])
        events = run(s)
        assert [e.name for e in events if isinstance(e, ToolCall)] == ["list_files"]
        assert "hello.py" in next(e for e in events if isinstance(e, Observation)).text


def test_malformed_call_becomes_observation_and_model_retries(make_session, workspace):
    s = make_session(['{"tool_calls": [{"name": "write_file", "arguments": {"path": "x.txt", "content": "hal',
                      call("write_file", path="x.txt", content="whole"), "written"])
    events = run(s)
    obs = [e for e in events if isinstance(e, Observation)]
    assert obs[0].name == "format" and not obs[0].ok and "cut off" in obs[0].text
    assert (workspace / "x.txt").read_text() == "whole"  # only the complete call ran
    assert isinstance(events[-1], Answer)


def test_three_retries_then_the_turn_ends(make_session, workspace):
    bad = '{"name": "write_file", "arguments": {"path": "y.txt"}}'
    s = make_session([bad] * 5)
    events = run(s)
    assert len([e for e in events if isinstance(e, Observation) and e.name == "format"]) == 4
    assert isinstance(events[-1], Error) and "4 malformed tool calls" in events[-1].message
    assert not (workspace / "y.txt").exists()
    assert len(s.model.outputs) == 1  # the fifth output was never requested


def test_veto_hook_stops_the_call(make_session, workspace):
    class NoWrites:
        @hookimpl
        def before_tool_call(self, call, context):
            return "writes are frozen" if call.name == "write_file" else None

    s = make_session([call("write_file", path="z.txt", content="no"), "ok"], plugins=[NoWrites()])
    events = run(s)
    obs = next(e for e in events if isinstance(e, Observation))
    assert obs.text == "Denied: writes are frozen" and not obs.ok
    assert not (workspace / "z.txt").exists()


def test_commands_need_approval_without_yes(make_session, workspace):
    s = make_session([call("run_command", command="touch made.txt"), "ok"])
    obs = next(e for e in run(s) if isinstance(e, Observation))
    assert obs.text.startswith("Denied: run_command needs approval") and "--yes" in obs.text
    assert not (workspace / "made.txt").exists()

    asked = []
    s = make_session([call("run_command", command="touch made.txt"), "ok"], ask=lambda q: asked.append(q) or False)
    obs = next(e for e in run(s) if isinstance(e, Observation))
    assert obs.text == "Denied: the user declined to run run_command" and asked == ["Run run_command: touch made.txt"]

    s = make_session([call("run_command", command="touch made.txt"), "ok"], yes=True)
    obs = next(e for e in run(s) if isinstance(e, Observation))
    assert obs.ok and obs.text.startswith("exit status 0") and (workspace / "made.txt").exists()


def test_step_limit(make_session):
    outputs = [call("read_file", path="hello.py", start_line=i) for i in range(1, 10)]
    s = make_session(outputs, max_steps=3, max_actions_per_turn=5)
    events = run(s)
    assert isinstance(events[-1], Error) and events[-1].message.startswith("no answer after 3 model steps")
    assert len([e for e in events if isinstance(e, ToolCall)]) == 3


def test_action_limit_asks_for_an_answer_then_ends(make_session):
    s = make_session([call("read_file", path="hello.py"), call("list_files"), call("list_files", path="."),
                      "unused"])
    events = run(s)
    assert [e.name for e in events if isinstance(e, ToolCall)] == ["read_file"]
    assert s.model.received[2][-1]["content"] == FINAL_MARK
    assert isinstance(events[-1], Error) and "allowed actions" in events[-1].message


def test_repeated_call_is_detected(make_session):
    same = call("read_file", path="hello.py")
    s = make_session([same] * 5, max_actions_per_turn=10)
    events = run(s)
    assert isinstance(events[-1], Error) and "repeated the same read_file call 3 times" in events[-1].message
    assert len([e for e in events if isinstance(e, ToolCall)]) == 2


def test_tool_exception_is_an_observation_and_audited(make_session):
    def explode(reason: str) -> str:
        """Always fails.

        Args:
            reason: why
        """
        raise ValueError(f"boom: {reason}")

    class Plugin:
        @hookimpl
        def register_tools(self, register):
            register(explode)

    s = make_session([call("explode", reason="test"), "sorry"], plugins=[Plugin()])
    events = run(s)
    obs = next(e for e in events if isinstance(e, Observation))
    assert obs.text == "Error: ValueError: boom: test" and not obs.ok
    assert isinstance(events[-1], Answer)
    recs = list(read_records(s.audit.path))
    tb = next(r for r in recs if r["kind"] == "tool_exception")
    assert "ValueError: boom: test" in tb["data"]["traceback"]


def test_long_observation_is_summarised_for_the_model(make_session, workspace):
    (workspace / "big.txt").write_text("\n".join(f"line {i}" for i in range(300)))
    s = make_session([call("read_file", path="big.txt", max_lines=300), "ok"], observation_summary_chars=200)
    obs = next(e for e in run(s) if isinstance(e, Observation))
    assert "characters not shown" in obs.text and len(obs.text) < 300
    assert obs.full is not None and "line 299" in obs.full


def test_ctrl_c_mid_generation_ends_the_turn_cleanly(make_session):
    s = make_session([{"text": "I am thinking about", "raise": "KeyboardInterrupt"}, "second turn works"])
    events = run(s)
    assert isinstance(events[-1], Error) and events[-1].message == "interrupted"
    assert any(isinstance(e, Meta) and e.name == "interrupted" for e in events)
    assert run(s, "again")[-1].text == "second turn works"
    recorded = [r["kind"] for r in read_records(s.audit.path)]
    assert "interrupted" in recorded
    assert verify(s.audit.path)[1] is None


def test_ctrl_c_in_the_consumer_closes_the_turn(make_session):
    s = make_session([call("read_file", path="hello.py"), "never"])
    gen = s.agent.run_turn("go")
    for event in gen:
        if isinstance(event, ToolCall):
            break
    gen.close()  # what the REPL does on KeyboardInterrupt
    assert [r["kind"] for r in read_records(s.audit.path)][-2:] == ["interrupted", "resources"]


def test_audit_log_records_the_whole_turn(make_session):
    s = make_session([call("list_files"), "Two files."])
    run(s, "what is here?")
    s.close()
    recs = list(read_records(s.audit.path))
    assert [r["kind"] for r in recs] == ["session_start", "user", "model_output", "tool_call", "observation",
                                        "model_output", "answer", "resources", "session_end"]
    assert recs[1]["data"]["text"] == "what is here?"
    assert json.loads(recs[2]["data"]["text"])["tool_calls"][0]["name"] == "list_files"
    assert verify(s.audit.path) == (9, None)


def test_generation_stops_after_the_first_complete_call(make_session):
    s = make_session([call("list_files") + "\nObservation: fake\nAnd another thing", "done"])
    run(s)
    recs = [r for r in read_records(s.audit.path) if r["kind"] == "model_output"]
    assert recs[0]["data"]["text"] == call("list_files")


def test_an_echoed_loop_instruction_is_not_an_answer(make_session):
    s = make_session([call("list_files"), f"hello.py is here.\n{FINAL_MARK}"])
    assert run(s)[-1].text == "hello.py is here."
    s = make_session([call("list_files"), FINAL_MARK])
    last = run(s)[-1]
    assert isinstance(last, Error) and last.message == "the model gave an empty answer"


def test_a_model_stuck_repeating_a_line_is_stopped(make_session):
    s = make_session(["The files are:\n" + ".gitignore:\n" * 50 + "never reached"])
    events = run(s)
    assert events[-1].text == "The files are:\n.gitignore:\n" + REPEAT_NOTE
    assert sum(1 for e in events if e.kind == "token") < 20  # generation stopped early
    s = make_session(["It prints:\n" + "hello\n" * 5 + "and stops."])
    assert run(s)[-1].text == "It prints:\n" + "hello\n" * 5 + "and stops."  # a short repeat is an answer


def test_custom_and_disabled_system_prompt(make_session):
    s = make_session(["hi"], system_prompt="You are terse. Tools:\n{tools}")
    run(s)
    system = s.model.received[0][0]
    assert system["role"] == "system" and system["content"].startswith("You are terse. Tools:\n- run_command(")
    s = make_session(["hi"], disable_system_prompt=True)
    run(s)
    assert all(m["role"] != "system" for m in s.model.received[0])


def test_audit_log_flag_appends_to_one_file(make_session, tmp_path):
    shared = tmp_path / "one.jsonl"
    for text in ("first", "second"):
        s = make_session([text], audit_log=str(shared))
        run(s, text)
        s.close()
    records = list(read_records(shared))
    assert [r["data"]["text"] for r in records if r["kind"] == "answer"] == ["first", "second"]
    assert len({r["session"] for r in records}) == 2 and verify(shared)[1] is None


def test_remembered_notes_reach_the_next_session(make_session):
    from assistant.memory_bank.notes import remember

    remember("the project uses tabs")
    s = make_session(["ok"])
    run(s)
    assert "the project uses tabs" in s.model.received[0][0]["content"]


def test_closing_a_finished_turn_is_not_an_interruption(make_session):
    s = make_session(["done"])
    gen = s.agent.run_turn("go")
    for event in gen:
        if isinstance(event, Answer):
            break
    gen.close()
    assert "interrupted" not in [r["kind"] for r in read_records(s.audit.path)]


def test_the_tools_setting_chooses_what_the_agent_gets(make_session):
    everything = set(make_session().registry.tools)
    assert {"dedupe", "collect_samples", "run_python"} <= everything
    assert set(make_session(tools="all,-collect_samples,-dedupe").registry.tools) == everything - {
        "dedupe", "collect_samples"}
    session = make_session([call("dedupe", input="a", output="b"), "Fine."], tools="read_file, list_files")
    assert list(session.registry.tools) == ["list_files", "read_file"]  # the order the plugins registered them
    events = list(session.agent.run_turn("dedupe it"))
    assert any("unknown tool 'dedupe'" in getattr(e, "text", "") for e in events)  # not callable either
    with pytest.raises(AssistantError, match="unknown tool 'grep' in the tools setting; the tools are: "):
        make_session(tools="all,-grep")
