def helper():
    """A helper without a licence."""
    return 1
