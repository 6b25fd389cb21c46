"""The one exception type that the CLI turns into a one-line message and a non-zero exit."""


class SiloError(Exception):
    """A user-facing error: bad input, a mismatched checkpoint or bundle, a missing file.

    The message must stand alone on one line and name the problem (and the file, if any).
    """
