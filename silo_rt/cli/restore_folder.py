"""``restore DIR|LIST --out FOLDER``: every image from a bundle, resumable, sharded over
processes."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import click

from ..backends import REFERENCE_BACKENDS
from ..errors import SiloError
from .progress import open_bar
from .restore_backends import announced_eta, open_restorer, refuse_options, with_demo

if TYPE_CHECKING:
    from .restore_request import RestoreRequest


def restore_folder(request: RestoreRequest) -> None:
    """Restore the folder or list ``request.measurement`` into the folder ``request.out``."""
    refuse_options("a folder of measurements", compare=request.compare_path,
                   reference=request.reference, samples=request.samples)
    if request.bundle is None and (request.model is not None
                                   or request.operator_path is not None
                                   or request.backend in REFERENCE_BACKENDS):
        raise SiloError("a folder of measurements is restored from a bundle (--bundle or "
                        "the embedded demo), not with the PyTorch reference")
    if request.bundle is None:
        request = with_demo(request)
    _restore_all(request)


def _restore_all(request: RestoreRequest) -> None:
    import os

    from ..datasets import current_processes, list_inputs, restore_dataset
    from ..environment import env_int

    paths = list_inputs(request.measurement)
    processes = current_processes()
    if request.threads is None and processes.world > 1:  # the processes share the cores
        local = env_int("LOCAL_WORLD_SIZE", processes.world, 1, processes.world)
        request = replace(request, threads=max(1, (os.cpu_count() or 1) // local))
    restorer = open_restorer(request)
    runner = restorer.runner
    where = "" if processes.world == 1 else f" (process {processes.rank + 1} of " \
                                            f"{processes.world})"

    def progress(total, initial):
        return open_bar(total, f"SILO {runner.task} [{runner.backend}]{where}", "image",
                        initial, disable=not processes.is_main)

    summary = restore_dataset(restorer, paths, request.out, request.seed,
                              announced_eta(request, runner), request.sigma_y, request.steps,
                              request.keep_measured, processes, progress,
                              precision=request.precision, sampler=request.sampler,
                              overwrite=request.overwrite, source=request.measurement,
                              overlap=request.tile_overlap)
    failed, report = summary["failed"], summary["report"]
    click.echo(f"restored {summary['restored']} of {summary['shard']} images into "
               f"{request.out}{where}; {summary['skipped']} were already done"
               f"{f', {len(failed)} failed' if failed else ''} (backend {runner.label})")
    processes.wait()  # every process's line is out before the main one exits non-zero
    if report:
        names = ", ".join(f"{name} ({reason})" for name, reason in sorted(report.items()))
        total = summary["shard"] if processes.world == 1 else summary["total"]
        raise SiloError(f"{len(report)} of {total} images could not be restored (each logged "
                        f"in {request.out}; a rerun retries only these): {names}")
