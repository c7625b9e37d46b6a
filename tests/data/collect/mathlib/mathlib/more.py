def mul(a: int, b: int) -> int:
    """Multiply two numbers (no examples)."""
    return a * b
