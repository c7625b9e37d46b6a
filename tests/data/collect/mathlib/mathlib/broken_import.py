import no_such_module_anywhere


def ident(x):
    """The module's imports fail, so this doctest fails.

    >>> ident(1)
    1
    """
    return x
