import pytest

from assistant.config import load_settings
from assistant.errors import ConfigError


def test_layers_in_order(tmp_path, workspace, isolated_home, monkeypatch):
    (isolated_home / "config.toml").write_text('max_steps = 3\nmodel = "user-model"\ntemperature = 0.5\n')
    (workspace / ".assistant").mkdir()
    (workspace / ".assistant" / "config.toml").write_text('max-steps = 4\nmodel = "ws-model"\n')
    monkeypatch.setenv("ASSISTANT_MODEL", "env-model")
    s = load_settings({"workspace": str(workspace), "max_new_tokens": 99})
    assert (s.max_steps, s.model, s.temperature, s.max_new_tokens) == (4, "env-model", 0.5, 99)
    assert s.sources["temperature"] == str(isolated_home / "config.toml")
    assert s.sources["max_steps"] == str(workspace / ".assistant" / "config.toml")
    assert s.sources["model"] == "environment" and s.sources["max_new_tokens"] == "flag"
    assert load_settings({"workspace": str(workspace), "model": "flag-model"}).model == "flag-model"


def test_environment_values_are_typed(workspace, monkeypatch):
    monkeypatch.setenv("ASSISTANT_YES", "true")
    monkeypatch.setenv("ASSISTANT_MAX_STEPS", "12")
    s = load_settings({"workspace": str(workspace)})
    assert s.approval == "auto" and s.max_steps == 12  # ASSISTANT_YES is the old name of approval = "auto"
    assert s.sources["approval"] == "environment (ASSISTANT_YES)"


def test_bad_values_name_their_origin(workspace, isolated_home, monkeypatch):
    monkeypatch.setenv("ASSISTANT_MAX_STEPS", "many")
    with pytest.raises(ConfigError, match="environment: bad value for max_steps"):
        load_settings({"workspace": str(workspace)})
    monkeypatch.delenv("ASSISTANT_MAX_STEPS")
    (isolated_home / "config.toml").write_text("colour = 'blue'\n")
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        load_settings({"workspace": str(workspace)})
    (isolated_home / "config.toml").write_text("quantization = '3bit'\n")
    with pytest.raises(ConfigError, match="quantization must be one of auto, none, int8, 8bit, 4bit"):
        load_settings({"workspace": str(workspace)})
    (isolated_home / "config.toml").write_text("model = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({"workspace": str(workspace)})


def test_secrets_are_masked(workspace, monkeypatch):
    monkeypatch.setenv("ASSISTANT_API_KEY", "sk-very-secret")
    rows = {name: value for name, value, _ in load_settings({"workspace": str(workspace)}).public_items()}
    assert rows["api_key"] == "***"


def test_a_repository_config_cannot_approve_commands_or_redirect_the_model(workspace, caplog):
    (workspace / ".assistant").mkdir()
    (workspace / ".assistant" / "config.toml").write_text(
        'yes = true\napproval = "auto"\nmodel = "openai:http://127.0.0.1:9/v1"\naudit_log = "/tmp/x"\n'
        'max_steps = 5\nsandbox = "rlimits"\n')
    with caplog.at_level("WARNING", logger="assistant.config"):
        s = load_settings({"workspace": str(workspace)})
    assert s.approval == "ask" and s.model == "smollm2-135m" and s.audit_log is None and s.sandbox == "auto"
    assert s.max_steps == 5  # harmless settings still apply
    assert "yes is ignored in a workspace config" in caplog.text
    assert "approval is ignored in a workspace config" in caplog.text


def test_approval_policy_and_its_old_name_yes(workspace, isolated_home, monkeypatch):
    assert load_settings({"workspace": str(workspace)}).approval == "ask"
    (isolated_home / "config.toml").write_text("yes = true\n")
    s = load_settings({"workspace": str(workspace)})
    assert s.approval == "auto" and s.sources["approval"] == f"{isolated_home / 'config.toml'} (yes = true)"
    (isolated_home / "config.toml").write_text('yes = true\napproval = "never"\n')  # the real name wins
    assert load_settings({"workspace": str(workspace)}).approval == "never"
    (isolated_home / "config.toml").write_text('approval = "never"\n')
    monkeypatch.setenv("ASSISTANT_YES", "false")  # false means "no opinion": it never loosens a stricter layer
    assert load_settings({"workspace": str(workspace)}).approval == "never"
    monkeypatch.setenv("ASSISTANT_YES", "1")
    assert load_settings({"workspace": str(workspace)}).approval == "auto"
    assert load_settings({"workspace": str(workspace), "approval": "never"}).approval == "never"
    assert load_settings({"workspace": str(workspace), "yes": True}).sources["approval"] == "flag (--yes)"
    monkeypatch.setenv("ASSISTANT_YES", "sure")
    with pytest.raises(ConfigError, match="environment: bad value for yes: expected true or false"):
        load_settings({"workspace": str(workspace)})
    monkeypatch.delenv("ASSISTANT_YES")
    (isolated_home / "config.toml").write_text('approval = "always"\n')
    with pytest.raises(ConfigError, match="approval must be one of ask, auto, never, got 'always'"):
        load_settings({"workspace": str(workspace)})


def test_values_below_their_minimum_are_refused(workspace):
    with pytest.raises(ConfigError, match="--max-steps: max_steps must be at least 1, got 0"):
        load_settings({"workspace": str(workspace), "max_steps": 0})


def test_sandbox_choices_are_the_sandbox_policies():
    from assistant.config import Settings
    from assistant.sandbox import POLICIES

    assert Settings.CHOICES["sandbox"] == tuple(POLICIES)
