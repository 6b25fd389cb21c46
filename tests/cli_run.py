"""Running the ``silo-rt`` CLI in-process from a test (shared by the CLI test modules)."""

from silo_rt.cli import main


def run(argv, capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err
