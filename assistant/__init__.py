"""assistant: a local-first REPL coding assistant (Reason -> Act -> Observe over local or HTTP models)."""

__version__ = "0.1.0"
