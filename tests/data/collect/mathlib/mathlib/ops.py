"""Arithmetic helpers: a fixture for tests/test_collect.py (each function is a case there)."""

import math

from .consts import SCALE


def add(a: int, b: int) -> int:
    """Add two numbers.

    >>> add(2, 3)
    5
    """
    return a + b


def sub(a: int, b: int) -> int:
    """Subtract b from a.

    >>> sub(5, 3)
    2
    """
    return a + b  # wrong on purpose: its doctest fails


def mul(a: int, b: int) -> int:
    """Multiply two numbers (no examples)."""
    return a * b


def _double(a):
    return 2 * a


def hypot(a: float, b: float) -> float:
    """The hypotenuse, with the module's `import math`.

    >>> hypot(3, 4)
    5.0
    """
    return math.hypot(a, b)


def scaled(x: int) -> int:
    """x times SCALE, a name from a relative import.

    >>> scaled(2)
    20
    """
    return x * SCALE


class Vector:
    """A 2-d vector."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def norm(self) -> float:
        """Its length (the example needs the class).

        >>> Vector(3, 4).norm()
        5.0
        """
        return math.hypot(self.x, self.y)

    def scale(self, k):
        """A new vector k times as long."""
        return Vector(self.x * k, self.y * k)

    def ragged(self):
        """A docstring whose second line starts at column 0,
so the method cannot be dedented to compile on its own."""
        return 1
