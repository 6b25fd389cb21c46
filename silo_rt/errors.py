"""The one exception type that the CLI turns into a one-line message and a non-zero exit."""


class SiloError(Exception):
    """A user-facing error: bad input, a mismatched checkpoint or bundle, a missing file.

    The message must stand alone on one line and name the problem (and the file, if any).
    ``exit_code`` is the CLI's exit status (2, a usage error, unless a check failed: 1).
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


def first_line(exc_or_text: BaseException | str) -> str:
    """The first non-blank line of an exception's message (or of a text), stripped.

    For the one-line messages of :class:`SiloError` that quote another library's error:
    ``first_line(ValueError("\\n  bad shape\\n  at node 3"))`` is ``"bad shape"``. An
    exception whose message is empty or blank gives its type name (``"KeyError"``), an
    empty text ``""``; it never raises.
    """
    is_text = isinstance(exc_or_text, str)
    try:
        text = exc_or_text if is_text else str(exc_or_text)
    except Exception:  # a broken __str__ must not hide the error being reported
        text = ""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return "" if is_text else type(exc_or_text).__name__


def error_summary(exc: BaseException) -> str:
    """An exception as one line where its type matters (the bench's "failed" entries):
    a :class:`SiloError`'s first line, else ``"Type: first line"`` (``"Type"`` alone for an
    empty message)."""
    text = first_line(exc)
    if isinstance(exc, SiloError) or text == type(exc).__name__:
        return text
    return f"{type(exc).__name__}: {text}"
