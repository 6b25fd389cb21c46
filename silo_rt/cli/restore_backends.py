"""What runs a restoration: a bundle's runner, the PyTorch reference or the embedded demo,
and the refusal of options that the chosen one would ignore."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import click

from ..degradations import DEFAULT_SIGMA_Y, get_degradation
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


def open_runner(request: RestoreRequest):
    """A :class:`BundleRunner` for the request's bundle, its task, step count and
    --keep-measured checked."""
    from ..runtime import BundleRunner

    runner = BundleRunner(request.bundle, backend=request.backend, threads=request.threads,
                          precision=request.precision,
                          log=lambda line: click.echo(line, err=True))
    if request.task is not None and request.task != runner.task:
        raise SiloError(f"bundle {request.bundle} is for task {runner.task!r}, "
                        f"not {request.task!r}")
    if request.steps is not None:
        runner.schedule(request.steps)  # refuse an impossible step count before starting
    if request.keep_measured:
        runner.degradation.check_imposable()
    return runner


def bundle_eta(request: RestoreRequest, runner) -> float:
    """The η a bundle restoration uses (given, tuned, exported or by rule:
    :meth:`BundleRunner.eta_choice <silo_rt.runtime.BundleRunner.eta_choice>`), announced
    on stderr unless given."""
    choice = runner.eta_choice(request.eta, request.steps, request.sampler)
    if choice.source != "given":
        click.echo(f"{choice.describe()}", err=True)
    return choice.eta


def restore_with_bundle(request: RestoreRequest, *, y):
    """Restore ``y`` from the request's bundle (by tiles when it is not the bundle's size);
    returns ``(x, backend label)``."""
    runner = open_runner(request)
    tiles = runner.tiling(y, request.tile_overlap, request.steps, request.sampler)
    click.echo(f"backend: {runner.label}", err=True)
    if tiles is not None:
        click.echo(f"tiles: {tiles.describe()}", err=True)
    total = request.steps or runner.steps
    eta = bundle_eta(request, runner)
    x = runner.restore(y, request.seed, eta, request.sigma_y, steps=request.steps,
                       keep_measured=request.keep_measured, sampler=request.sampler,
                       overlap=request.tile_overlap,
                       callback=step_progress(total, progress_label(runner.task, runner.backend,
                                                                    tiles)))
    return x, runner.label


def progress_label(task: str, backend: str, tiles) -> str:
    """The progress bar's label, with the tile count when tiled."""
    count = "" if tiles is None else f", {tiles.tile_count} tiles"
    return f"SILO {task} [{backend}{count}]"


def restore_with_torch(request: RestoreRequest, *, y, cuda: bool):
    """Restore ``y`` with the PyTorch reference (``--model`` + ``--operator``), on the GPU
    with a CUDA graph if ``cuda``; returns ``(x, backend label)``."""
    refuse_options(f"--backend {request.backend}: the PyTorch reference runs in fp32 with "
                   "PyTorch's threads (--threads and --precision set a bundle's backend)",
                   threads=request.threads, precision=request.precision)
    if request.keep_measured and request.task is not None:
        get_degradation(request.task).check_imposable()
    x, label, config = _sample_torch(request, y=y, cuda=cuda)
    if request.keep_measured:
        x = get_degradation(config.task, config.resizer).keep_measured(y, x)
    return x, label


def _sample_torch(request: RestoreRequest, *, y, cuda: bool):
    """The PyTorch reference path; returns ``(x, backend label, operator config)``.

    A measurement of the operator's own size is restored in one piece; any other size by
    tiles of that size (:func:`~silo_rt.reference_tiles.restore_by_tiles`), as a bundle
    exported from the same operator would.
    """
    import torch

    from ..operators import load_operator
    from ..prior import load_prior
    from ..sampler import SamplingOptions
    from ..sampler import restore as silo_restore

    prior = load_prior(request.model)
    operator, config = load_operator(request.operator_path, prior, request.task, request.arch,
                                     None, request.time_input)
    task = request.task or config.task  # the operator file says which task it imitates
    if request.keep_measured:
        get_degradation(task).check_imposable()
    recommended = config.recommended
    steps = recommended.get("steps", 999) if request.steps is None else request.steps
    prompt = recommended.get("prompt", "") if request.prompt is None else request.prompt
    sigma_y = DEFAULT_SIGMA_Y if request.sigma_y is None else request.sigma_y
    eta = _reference_eta(request, task, recommended, steps)
    options = SamplingOptions(task=task, steps=steps, eta=eta, seed=request.seed,
                              prompt=prompt, cfg_scale=request.cfg_scale or 1.0,
                              sigma_y=sigma_y, sampler=request.sampler)
    options.validate()
    side = config.image_size // get_degradation(task).scale
    if y.shape[-2:] != (side, side):
        return _sample_torch_tiles(request, prior, operator, options, config, y, cuda)
    if cuda:
        from ..torch_cuda import restore_cuda

        return (restore_cuda(prior, operator, torch.from_numpy(y), options).numpy(),
                "torch-cuda (CUDA graph)", config)
    x = silo_restore(prior, operator, torch.from_numpy(y), options,
                     callback=step_progress(options.steps, f"SILO {task} [torch]"))
    return x.numpy(), "torch", config


def _sample_torch_tiles(request: RestoreRequest, prior, operator, options, config, y,
                        cuda: bool):
    """The reference by tiles of the operator's size (on the GPU, without a CUDA graph,
    if ``cuda``)."""
    from contextlib import nullcontext

    from ..reference_tiles import restore_by_tiles

    label = "torch-cuda (tiles)" if cuda else "torch"
    guard = nullcontext()
    if cuda:
        from ..torch_cuda import exact_fp32, require_cuda

        device = require_cuda()
        for module in (prior.unet, prior.vae, prior.text_encoder, operator):
            module.to(device)
        guard = exact_fp32()
    with guard:
        x = restore_by_tiles(
            prior, operator, y, options, config.image_size, request.tile_overlap,
            callback=step_progress(options.steps, f"SILO {options.task} [{label}, tiles]"),
            log=lambda line: click.echo(line, err=True))
    return x, label, config


def _reference_eta(request: RestoreRequest, task: str, recommended: dict, steps: int) -> float:
    """η for the PyTorch reference: given, else the task's default η (the operator makers'),
    made for their step count (999 unless the operator file says) and kept at any other
    (:func:`silo_rt.step_budget.choose_eta`); announced unless given."""
    from ..step_budget import choose_eta

    choice = choose_eta(request.eta, steps, request.sampler,
                        base_eta=get_degradation(task).eta,
                        base_steps=recommended.get("steps", 999), base_name="the default eta")
    if choice.source != "given":
        click.echo(choice.describe(), err=True)
    return choice.eta
