"""``python -m silo_rt`` runs the CLI (also for ``accelerate launch -m silo_rt train ...`` and
``accelerate launch --multi_gpu --num_processes N -m silo_rt restore DIR --out OUT ...``)."""

from .cli import main

main()
