"""The console entry point: run the group and turn every failure into one ``error:`` line."""

from __future__ import annotations

import sys
import traceback

import click

from ..errors import SiloError
from .group import RunState, cli
from .progress import close_bars

# Modules of the optional extras, and the extra that brings each.
OPTIONAL_MODULES = {"torch": "reference", "diffusers": "reference", "transformers": "reference",
                    "kornia": "reference", "accelerate": "reference", "safetensors": "reference",
                    "onnx": "export", "onnxscript": "export", "matplotlib": "bench",
                    "skimage": "demo",
                    "cuda": "gpu"}


def main(argv=None):
    """Console entry point: run the CLI; every failure, click's usage errors included, ends
    in exactly one ``error: …`` line (exit 2 for a mistake, 1 for a failed check, 130 for
    Ctrl-C). With ``--debug`` the exception's traceback comes first."""
    state = RunState()
    try:
        cli.main(args=argv, prog_name="silo-rt", standalone_mode=False, obj=state)
    except SiloError as exc:
        _fail(str(exc), exc.exit_code, exc, state)
    except ModuleNotFoundError as exc:
        extra = OPTIONAL_MODULES.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        _fail(f"this command needs {exc.name!r}: pip install 'silo-rt[{extra}]'", 2, exc, state)
    except click.exceptions.Abort as exc:
        close_bars()
        _show_traceback(exc, state)
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code, exc, state)
    return 0


def _fail(message: str, exit_code: int, exc: BaseException, state: RunState):
    """Close any progress bar, print the one error line (after the traceback with --debug)
    and exit."""
    close_bars()
    _show_traceback(exc, state)
    line = " ".join(message.split())  # one line, whatever the message held
    click.echo(f"error: {line}", err=True)
    sys.exit(exit_code)


def _show_traceback(exc: BaseException, state: RunState) -> None:
    if state.debug:
        traceback.print_exception(exc, file=sys.stderr)
