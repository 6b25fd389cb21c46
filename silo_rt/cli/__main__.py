"""``python -m silo_rt.cli`` runs the CLI (as ``python -m silo_rt`` does)."""

from .entry import main

main()
