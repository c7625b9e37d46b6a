def shout(text):
    """The text in capitals.

    >>> shout("gpl")
    'GPL'
    """
    return text.upper()
