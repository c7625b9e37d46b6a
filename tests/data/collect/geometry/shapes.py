"""Areas and perimeters: a second permissive fixture repository for tests/test_collect.py."""


def square_area(side):
    """The area of a square."""
    return side * side


def rect_area(width, height):
    """The area of a rectangle."""
    return width * height


def circle_area(r):
    """The area of a circle (roughly)."""
    return 3.14159 * r * r


def perimeter(width, height):
    """The perimeter of a rectangle.

    >>> perimeter(2, 3)
    10
    """
    return 2 * (width + height)
