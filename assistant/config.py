"""Settings: defaults < user config.toml < workspace .assistant/config.toml < ASSISTANT_* environment < flags."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from assistant.errors import ConfigError

log = logging.getLogger("assistant.config")

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class Settings:
    """Every setting the assistant reads; each field can come from a file, the environment or a flag."""

    model: str = "smollm2-135m"
    model_name: str | None = None
    api_key: str | None = None
    device_map: str | None = None
    torch_dtype: str = "auto"
    quantization: str = "auto"
    trust_remote_code: bool = False
    low_cpu_mem_usage: bool = False
    context_window: int | None = None
    max_new_tokens: int = 384
    enable_thinking: bool | None = None
    temperature: float = 0.0
    constrain: bool = True
    decoder: str = "auto"
    server_grammar: str = "auto"
    request_timeout: float = 120.0
    max_actions_per_turn: int = 1
    max_steps: int = 8
    observation_summary_chars: int = 2000
    system_prompt: str | None = None
    disable_system_prompt: bool = False
    approval: str = "ask"
    command_timeout: int = 60
    sandbox: str = "auto"
    sandbox_uid: int = 65533
    audit_log: str | None = None
    workspace: str = "."
    memory: bool = True
    memory_vector_dir: str | None = None
    recall_k: int = 3
    recall_chars: int = 300
    recall_min_score: float = 0.35
    search_min_score: float = 0.35
    context7: bool = True
    context7_url: str = "https://context7.com/api"
    context7_api_key: str | None = None
    context7_chars: int = 256
    context7_timeout: float = 10.0
    tools: str = "all"  # the tools the agent gets: "all", names ("run_python,read_file"), "all,-collect_samples"
    repair_program: str | None = None  # a program from `assistant optimize`: the repair loop's prompts (default: ours)
    monitor: str | None = None  # a telemetry server's URL (`assistant telemetry serve`): events are sent there
    sources: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    # "sandbox" mirrors assistant.sandbox.POLICIES (not imported here: it loads ctypes; a test keeps them equal).
    CHOICES = {"quantization": ("auto", "none", "int8", "8bit", "4bit"), "decoder": ("auto", "generate"),
               "server_grammar": ("auto", "gbnf", "vllm", "json", "off"), "approval": ("ask", "auto", "never"),
               "sandbox": ("auto", "bwrap", "unshare", "weak", "rlimits")}
    SECRET = ("api_key", "context7_api_key")
    MINIMUM = {"max_new_tokens": 1, "max_actions_per_turn": 1, "max_steps": 1, "command_timeout": 1,
               "observation_summary_chars": 0, "context_window": 1, "request_timeout": 0.1,
               "sandbox_uid": 1, "recall_k": 0, "recall_chars": 20, "context7_chars": 20,
               "context7_timeout": 0.1}
    # A cloned repository's .assistant/config.toml must not be able to approve commands, send keys or prompts
    # to a server of its choosing, load remote code, move the audit log or rewrite the system prompt.
    NOT_FROM_WORKSPACE = ("approval", "yes", "model", "model_name", "api_key", "trust_remote_code", "audit_log",
                          "system_prompt", "disable_system_prompt", "workspace", "sandbox", "sandbox_uid",
                          "memory_vector_dir", "context7_url", "context7_api_key", "monitor", "repair_program")

    # Older names still accepted in config files, ASSISTANT_* variables and load_settings() flags.
    # `yes = true` (ASSISTANT_YES, --yes) is `approval = "auto"`; `yes = false` changes nothing.
    ALIASES = ("yes",)
    # Variables read without the ASSISTANT_ prefix too (the names other Context7 clients use); ASSISTANT_* wins.
    PLAIN_ENV = {"context7_url": "CONTEXT7_URL", "context7_api_key": "CONTEXT7_API_KEY"}

    def public_items(self) -> list[tuple[str, Any, str]]:
        """(name, value, source) for `config show`; secrets are masked."""
        rows = []
        for f in setting_fields():
            value = getattr(self, f.name)
            if f.name in self.SECRET and value:
                value = "***"
            rows.append((f.name, value, self.sources.get(f.name, "default")))
        return rows


def setting_fields() -> list[dataclasses.Field]:
    return [f for f in fields(Settings) if f.name != "sources"]


def _types() -> dict[str, Any]:
    return get_type_hints(Settings)


def _coerce(name: str, raw: Any, origin: str) -> Any:
    """Turn a TOML value or an environment string into the field's type, or raise a one-line ConfigError."""
    hint = _types()[name]
    allows_none = "None" in str(hint)
    base = str(hint).replace(" | None", "").replace("typing.Optional[", "").rstrip("]")
    try:
        if raw is None or (isinstance(raw, str) and raw == "" and allows_none):
            value = None
        elif "bool" in base:
            value = _coerce_bool(raw, name, origin)
        elif "int" in base:
            if isinstance(raw, bool):
                raise ValueError("expected an integer")
            value = int(raw)
        elif "float" in base:
            value = float(raw)
        else:
            value = str(raw)
    except ValueError as exc:
        raise ConfigError(f"{origin}: bad value for {name}: {exc}") from None
    minimum = Settings.MINIMUM.get(name)
    if minimum is not None and value is not None and value < minimum:
        raise ConfigError(f"{origin}: {name} must be at least {minimum}, got {value}")
    choices = Settings.CHOICES.get(name)
    if choices and value not in choices:
        raise ConfigError(f"{origin}: {name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def user_config_path() -> Path:
    explicit = os.environ.get("ASSISTANT_CONFIG")
    if explicit:
        return Path(explicit)
    from platformdirs import user_config_path as ucp

    return ucp("assistant") / "config.toml"


def workspace_config_path(workspace: Path) -> Path:
    return workspace / ".assistant" / "config.toml"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    known = {f.name for f in setting_fields()} | set(Settings.ALIASES)
    out = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"{path}: unknown setting {key!r} (see `assistant config show`)")
        out[name] = value
    return out


def _resolve_aliases(values: dict[str, Any], origin: str) -> dict[str, str]:
    """Rewrite alias keys of one layer into their settings (in place); returns {setting: source note}.
    A setting given by its own name in the same layer wins over its alias."""
    notes = {}
    if "yes" in values:
        given_as = {"flag": "--yes", "environment": "ASSISTANT_YES"}.get(origin, "yes = true")
        yes = _coerce_bool(values.pop("yes"), "yes", "--yes" if origin == "flag" else origin)
        if yes and "approval" not in values:
            values["approval"] = "auto"
            notes["approval"] = f"{origin} ({given_as})"
    return notes


def _coerce_bool(raw: Any, name: str, origin: str) -> bool:
    if isinstance(raw, bool):
        return raw
    word = str(raw).strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{origin}: bad value for {name}: expected true or false, got {raw!r}")


def load_settings(flags: dict[str, Any] | None = None, *, env: dict[str, str] | None = None) -> Settings:
    """Build Settings from every layer. `flags` holds only the flags the user actually gave."""
    env = os.environ if env is None else env
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    settings = Settings()
    workspace = Path(flags.get("workspace") or env.get("ASSISTANT_WORKSPACE") or ".").expanduser().resolve()
    if not workspace.is_dir():
        raise ConfigError(f"workspace {workspace} is not a folder")

    layers: list[tuple[str, dict[str, Any]]] = [(str(user_config_path()), _read_toml(user_config_path()))]
    ws_path = workspace_config_path(workspace)
    ws_values = _read_toml(ws_path)
    for name in Settings.NOT_FROM_WORKSPACE:
        if name in ws_values:
            del ws_values[name]
            log.warning("%s: %s is ignored in a workspace config (set it in %s, the environment or a flag)",
                        ws_path, name, user_config_path())
    layers.append((str(ws_path), ws_values))
    env_layer = {name: env[key] for name, key in Settings.PLAIN_ENV.items() if key in env}
    for name in [f.name for f in setting_fields()] + list(Settings.ALIASES):
        key = "ASSISTANT_" + name.upper()
        if key in env:
            env_layer[name] = env[key]
    layers.append(("environment", env_layer))
    layers.append(("flag", flags))

    for origin, values in layers:
        notes = _resolve_aliases(values, origin)
        for name, raw in values.items():
            setattr(settings, name, _coerce(name, raw, f"{origin}" if origin != "flag" else "--" + name.replace("_", "-")))
            settings.sources[name] = notes.get(name, origin)
    settings.workspace = str(workspace)
    return settings
