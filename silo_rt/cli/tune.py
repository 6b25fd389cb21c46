"""``silo-rt tune``: the best η for a bundle at a step budget, on training images."""

from __future__ import annotations

from pathlib import Path

import click

from ..backends import AUTO, RUNNER_BACKENDS
from ..degradations import task_names
from ..errors import SiloError
from .group import cli
from .options import MODEL_HELP, SEED, STEPS, THREADS, FiniteFloat, refuse_unused

HELDOUT_PREFIXES = ("chelsea_", "coffee_")
"""File names of the demo's held-out crops (``silo-rt demo-data``), which tune refuses."""


def _parse_etas(text: str | None) -> list[float] | None:
    """``"0.5,1,2"`` → ``[0.5, 1.0, 2.0]``, each finite and in (0, 100]."""
    if text is None:
        return None
    check = FiniteFloat(0.0, 100.0, min_open=True)
    try:
        values = [check.convert(v.strip(), None, None) for v in text.split(",") if v.strip()]
    except click.BadParameter as exc:
        raise SiloError(f"--etas: {exc.message}") from None
    if not values:
        raise SiloError("--etas needs at least one value, e.g. --etas 0.5,1,2")
    return sorted(set(values))


@cli.command()
@click.option("--bundle", type=click.Path(path_type=Path), default=None,
              help="bundle to tune [default: the embedded demo's for --task]")
@click.option("--task", type=click.Choice(list(task_names())), default=None,
              help="with no --bundle: which embedded demo bundle (sr4, ip)")
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="folder of TRAINING images (never held-out ones: the η chosen here must "
                   "not have seen the images it is judged on); other sizes are centre-cropped "
                   "and resized to the bundle's")
@click.option("--steps", "step_counts", type=STEPS, multiple=True, required=True,
              help="step budget to tune for (repeat for several)")
@click.option("--sampler", "samplers", type=click.Choice(["ddpm", "ddim"]), multiple=True,
              help="update rule(s) to tune (repeat for both)  [default: ddpm and ddim]")
@click.option("--images", "count", type=click.IntRange(1, 64), default=4, show_default=True,
              help="how many images of --data to use (spread over its sorted list)")
@click.option("--etas", default=None,
              help="comma-separated η values to try [default: the bundle's η times 1/8, 1/4, "
                   "..., 8]")
@click.option("--seed", type=SEED, default=0, show_default=True, help="restoration seed")
@click.option("--threads", type=THREADS, default=None, help="ONNX Runtime / OpenVINO threads")
@click.option("--backend", type=click.Choice((AUTO, *RUNNER_BACKENDS)), default="ort",
              show_default=True, help="how the bundle runs (as restore --backend)")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="where to record the result [default: BUNDLE/tuning.json, which restore "
                   "reads; '-' only prints it]")
@click.option("--model", default=None,
              help="tune the PyTorch reference instead of a bundle: " + MODEL_HELP
                   + " (with --operator; the result is printed, to pass as restore --eta)")
@click.option("--operator", "operator_path", type=click.Path(path_type=Path), default=None,
              help="the operator for --model (.safetensors or the authors' .pt)")
def tune(bundle, task, data, step_counts, samplers, count, etas, seed, threads, backend, out,
         model, operator_path):
    """Find the consistency scale η that restores best at a step budget, on TRAINING images.

    For each image of --data (and nothing else), the measurement is made as `evaluate` makes
    it and restored with each η of a grid; the η with the best mean PSNR is recorded in the
    bundle's tuning.json, which `restore --steps N` then uses for that step count and
    sampler unless given --eta (with --model/--operator it is printed). Never give it
    held-out images: tuning on the images you report on makes the report optimistic (the
    demo's held-out crops are refused).
    """
    from ..step_budget import TuningRecord
    from ..tuning import eta_grid, make_problem, training_images, tune_eta

    grid = _parse_etas(etas)
    paths = training_images(data, count)
    held_out = [p.name for p in paths if p.name.startswith(HELDOUT_PREFIXES)]
    if held_out:
        raise SiloError(f"--data holds the demo's held-out crops ({held_out[0]}, ...): tune "
                        "on training images (silo-rt demo-data writes them to train/)")
    refuse_unused("the PyTorch reference (--model)", backend=model is None)
    if model is not None or operator_path is not None:
        runner, base_eta, sigma_y, label = _reference(bundle, task, model, operator_path,
                                                      step_counts, out, threads)
        target, record = None, TuningRecord("", runner.task)
    else:
        runner, target = _bundle_runner(bundle, task, backend, threads, out, step_counts)
        base_eta, sigma_y, label = runner.manifest.eta, runner.manifest.sigma_y, runner.label
        record = _existing_record(runner, target)
    problem = make_problem(runner, paths, sigma_y)
    click.echo(f"tuning {runner.task} on {len(paths)} training images of {data} "
               f"({label})", err=True)
    for sampler in samplers or ("ddpm", "ddim"):
        for steps in step_counts:
            etas_tried = grid or eta_grid(base_eta)
            entry = tune_eta(runner, problem, steps, sampler, etas_tried, seed, sigma_y,
                             progress=lambda eta, score, s=steps, m=sampler: click.echo(
                                 f"  {m} {s} steps: eta {eta:<8g} PSNR {score:.2f} dB",
                                 err=True))
            edge = "" if entry.eta not in (etas_tried[0], etas_tried[-1]) or len(
                etas_tried) == 1 else " (at the edge of the grid: widen --etas)"
            click.echo(f"{runner.task} {sampler} {steps} steps: best eta {entry.eta:g} "
                       f"({entry.psnr:.2f} dB){edge}")
            record = record.with_entry(entry)
    if target is None:
        click.echo(record.to_json())
        return
    record.save(target)
    click.echo(f"wrote {target}")


def _bundle_runner(bundle, task, backend, threads, out, step_counts):
    """The bundle's runner (the demo's for ``task`` without one) and where to record."""
    from ..demo import demo_bundle
    from ..runtime import BundleRunner

    bundle = demo_bundle(task) if bundle is None else bundle
    runner = BundleRunner(bundle, backend=backend, threads=threads)
    if task is not None and task != runner.task:
        raise SiloError(f"bundle {bundle} is for task {runner.task!r}, not {task!r}")
    target = runner.tuning_path if out is None else (None if str(out) == "-" else Path(out))
    if target is not None and not target.parent.is_dir():
        raise SiloError(f"output folder does not exist: {target.parent}")
    for steps in step_counts:
        runner.schedule(steps)  # refuse an impossible count before any work
    return runner, target


def _reference(bundle, task, model, operator_path, step_counts, out, threads):
    """The PyTorch reference for --model/--operator: ``(restorer, base η, σ_y, label)``."""
    from ..degradations import DEFAULT_SIGMA_Y, get_degradation
    from ..operators import load_operator
    from ..prior import load_prior
    from ..schedule import from_scheduler
    from ..tuning import ReferenceRestorer

    if bundle is not None:
        raise SiloError("give --bundle or --model/--operator, not both")
    if model is None or operator_path is None:
        raise SiloError("the PyTorch reference needs both --model and --operator")
    if out is not None and str(out) != "-":
        raise SiloError("with --model, tune prints the eta to pass as restore --eta; --out "
                        "records a bundle's tuning")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    prior = load_prior(model)
    operator, config = load_operator(operator_path, prior, task)
    for steps in step_counts:
        from_scheduler(prior.scheduler, steps)  # refuse an impossible count before any work
    prompt = config.recommended.get("prompt", "")
    return (ReferenceRestorer(prior, operator, config, prompt),
            get_degradation(config.task).eta, DEFAULT_SIGMA_Y, "PyTorch reference")


def _existing_record(runner, target):
    """The record to add to: the target's, when it is this bundle's; else a new one."""
    from ..bundle_format import bundle_identity
    from ..step_budget import TuningRecord

    sha = bundle_identity(runner.path)
    if target is not None and target.exists():
        record = TuningRecord.load(target)
        if record.bundle_sha256 == sha:
            return record
    return TuningRecord(sha, runner.task)
