"""The ``silo-rt`` command line: degrade, train, export, restore, tune, bench.

Every failure ends in exactly one ``error: …`` line on stderr (click's usage errors too):
exit status 2 for a mistake, 1 for a failed check, 130 for Ctrl-C; ``silo-rt --debug …``
prints the exception's traceback before that line. Numeric options are range-checked once,
in :mod:`.options` (ranges in ``--help``). A command checks all its outputs before any
work (folder exists and is writable, not a folder, not an input) and writes them under
temporary names renamed together at the end, so a failed command replaces nothing.
Heavy libraries are imported inside each command.

Layout: :mod:`.group` defines the click group, one module per command (or small family of
commands) registers on it, and :mod:`.entry` holds ``main``, the console entry point.
"""

from . import bench, degrade, evaluate, export, restore, train, tune  # noqa: F401  (registers)
from .entry import main
from .group import cli

__all__ = ["cli", "main"]
