"""The one user-facing error family: an AssistantError is shown as one line, without a traceback."""


class AssistantError(Exception):
    """Base class for every error meant for the user (printed as one line; --debug adds the traceback)."""


class ConfigError(AssistantError):
    """A bad setting, flag or config file."""


class ModelError(AssistantError):
    """A model could not be found, loaded, reached or understood."""


class ToolError(AssistantError):
    """A tool refused or failed; the agent turns it into an `Error: ...` observation."""


class FormatError(AssistantError):
    """The model's output held a tool call that does not parse or validate (shown to the model, not raised)."""


class AuditError(AssistantError):
    """The audit log cannot be written or read."""
