"""Built-in tool plugins, one module per tool family (installed as `assistant.plugins`)."""
