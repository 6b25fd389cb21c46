"""What runs a restoration: a bundle's runner, the PyTorch reference or the embedded demo,
and the refusal of options that the chosen one would ignore."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import click

from ..degradations import get_degradation
from ..errors import SiloError
from .progress import step_progress

if TYPE_CHECKING:
    from .restore_request import RestoreRequest



def refuse_options(what: str, **given) -> None:
    """Refuse options that do not apply to ``what``, naming them."""
    ignored = [f"--{name.replace('_', '-')}" for name, value in given.items()
               if value is not None]
    if ignored:
        raise SiloError(f"{', '.join(ignored)} cannot be used with {what}")


def refuse_torch_options(**given) -> None:
    """A bundle embeds its model, operator, prompt and guidance: refuse options it ignores."""
    ignored = [f"--{name.replace('_', '-')}" for name, value in given.items()
               if value is not None]
    if ignored:
        raise SiloError(f"{', '.join(ignored)} cannot be used with a bundle: a bundle embeds "
                        "its model, operator, prompt and guidance at export (use "
                        "--backend torch with --model/--operator, or export a new bundle)")


def with_demo(request: RestoreRequest) -> RestoreRequest:
    """``request`` with the embedded demo bundle for its task (options a bundle ignores
    refused), announced on stderr."""
    from ..demo import SD15_HINT, demo_bundle

    bundle = demo_bundle(request.task)
    refuse_torch_options(prompt=request.prompt, cfg=request.cfg_scale, arch=request.arch,
                         time_input=request.time_input)
    click.echo(f"using the embedded 64x64 demo model ({bundle.name}); {SD15_HINT}", err=True)
    return replace(request, bundle=bundle)


def open_restorer(request: RestoreRequest):
    """A :class:`~silo_rt.restorer.Restorer` on the request's bundle, its task, step count
    and --keep-measured checked."""
    from ..restorer import Restorer

    restorer = Restorer.from_bundle(request.bundle, backend=request.backend,
                                    threads=request.threads, precision=request.precision,
                                    memory=request.memory,
                                    log=lambda line: click.echo(line, err=True))
    if request.task is not None and request.task != restorer.task:
        raise SiloError(f"bundle {request.bundle} is for task {restorer.task!r}, "
                        f"not {request.task!r}")
    if request.steps is not None:
        restorer.runner.schedule(request.steps)  # refuse an impossible count before starting
    if request.keep_measured:
        restorer.degradation.check_imposable()
    return restorer


def announced_eta(request: RestoreRequest, restorer) -> float:
    """The η a restoration uses (given, tuned, exported or by rule:
    :func:`silo_rt.step_budget.choose_eta`), announced on stderr unless given;
    ``restorer``: a :class:`~silo_rt.restorer.Restorer` or a bundle runner."""
    choice = restorer.eta_choice(request.eta, request.steps, request.sampler)
    if choice.source != "given":
        click.echo(f"{choice.describe()}", err=True)
    return choice.eta


def restore_with_bundle(request: RestoreRequest, *, y):
    """Restore ``y`` from the request's bundle (by tiles when it is not the bundle's size:
    the runner logs the tiles); returns ``(x, backend label)``."""
    restorer = open_restorer(request)
    restorer.runner.check_measurement(y)  # refuse before the backend line
    click.echo(f"backend: {restorer.backend}", err=True)
    return _restore(request, restorer, y, request.steps or restorer.steps,
                    progress_label(restorer.task, restorer.runner.backend,
                                   restorer.tile_count(y, request.tile_overlap)))


def _restore(request: RestoreRequest, restorer, y, total: int, label: str):
    """``restorer`` on ``y`` with the request's settings and a progress bar; returns
    ``(x, backend label)``."""
    with restorer:
        result = restorer(y, steps=request.steps, eta=announced_eta(request, restorer),
                          seed=request.seed, keep_measured=request.keep_measured,
                          sampler=request.sampler, sigma_y=request.sigma_y,
                          overlap=request.tile_overlap, callback=step_progress(total, label))
    return result.image, result.backend


def progress_label(task: str, backend: str, tiles: int) -> str:
    """The progress bar's label, with the tile count when tiled (``tiles`` > 1)."""
    count = f", {tiles} tiles" if tiles > 1 else ""
    return f"SILO {task} [{backend}{count}]"


def restore_with_torch(request: RestoreRequest, *, y, cuda: bool):
    """Restore ``y`` with the PyTorch reference (``--model`` + ``--operator``), on the GPU
    (a CUDA graph for the operator's own size) if ``cuda``; returns ``(x, backend label)``.

    A measurement of the operator's own size is restored in one piece; any other size by
    tiles of that size, as a bundle exported from the same operator would.
    """
    from ..restorer import Restorer

    refuse_options(f"--backend {request.backend}: the PyTorch reference runs in fp32 with "
                   "PyTorch's threads (--threads, --precision and --memory set a bundle's "
                   "backend)", threads=request.threads, precision=request.precision,
                   memory=None if request.memory == "fast" else request.memory)
    if request.keep_measured and request.task is not None:
        get_degradation(request.task).check_imposable()
    restorer = Restorer.from_model(request.model, request.operator_path, request.task,
                                   device="cuda" if cuda else "cpu", arch=request.arch,
                                   time_input=request.time_input, prompt=request.prompt,
                                   cfg_scale=request.cfg_scale or 1.0,
                                   log=lambda line: click.echo(line, err=True))
    if request.keep_measured:
        restorer.degradation.check_imposable()
    return _restore(request, restorer, y, request.steps or restorer.steps,
                    progress_label(restorer.task, restorer.backend,
                                   restorer.tile_count(y, request.tile_overlap)))
