"""The one exception type that the CLI turns into a one-line message and a non-zero exit."""


class SiloError(Exception):
    """A user-facing error: bad input, a mismatched checkpoint or bundle, a missing file.

    The message must stand alone on one line and name the problem (and the file, if any).
    ``exit_code`` is the CLI's exit status (2, a usage error, unless a check failed: 1).
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
