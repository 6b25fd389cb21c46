"""``python -m silo_rt`` runs the CLI (also for ``accelerate launch -m silo_rt train``)."""

from .cli import main

main()
