"""``silo-rt bench``: latency of every backend side by side, or (``--sizes``) its scaling."""

from __future__ import annotations

from pathlib import Path

import click

from ..backends import BACKENDS
from ..errors import SiloError
from .group import cli
from .options import IMAGE_SIZE, MODEL_HELP, STEPS, THREADS, task_option


@cli.command()
@click.option("--model", default="small", show_default=True, help=MODEL_HELP)
@task_option
@click.option("--arch", type=click.Choice(["cnn", "readout"]), default="cnn", show_default=True,
              help="operator architecture (a random-init operator unless --operator is given)")
@click.option("--operator", "operator_path", type=click.Path(path_type=Path), default=None,
              help="time a trained operator instead of a random-init one")
@click.option("--bundle", type=click.Path(path_type=Path), default=None,
              help="time this bundle for the ort backend instead of exporting one")
@click.option("--size", type=IMAGE_SIZE, default=None,
              help="image side in px [default: the prior's native size]")
@click.option("--backends", default="torch,ort", show_default=True,
              help="comma-separated backends to run side by side in this process: "
                   + "; ".join(f"{b.name} = {b.help}{' (GPU)' if b.gpu else ''}"
                               for b in BACKENDS.values() if b.bench))
@click.option("--steps", type=STEPS, default=20, show_default=True,
              help="steps of the end-to-end restoration that is timed")
@click.option("--reps", type=click.IntRange(1, 100_000), default=10, show_default=True,
              help="timed repetitions per graph / step (after the warm-up)")
@click.option("--warmup", type=click.IntRange(0, 100_000), default=2, show_default=True,
              help="untimed repetitions before timing")
@click.option("--threads", type=THREADS, default=2, show_default=True,
              help="CPU threads for every backend")
@click.option("--baselines", default="ldps,psld", show_default=True,
              help="decoder-in-the-loop baselines to time one step of (ldps, gml-dps, psld; "
                   "'none' to skip)")
@click.option("--baseline-reps", type=click.IntRange(1, 100_000), default=3, show_default=True,
              help="timed repetitions of each baseline step")
@click.option("--restore-reps", type=click.IntRange(1, 100_000), default=3, show_default=True,
              help="timed end-to-end restorations per backend (median reported)")
@click.option("--no-restoration", is_flag=True,
              help="skip the end-to-end restorations (graphs and steps only)")
@click.option("--cache", type=click.Path(path_type=Path), default=Path("engines"),
              show_default=True, help="where exported bench bundles are kept and reused")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="write the machine-readable result (schema silo-rt-bench/1) to this file")
@click.option("--markdown", "markdown_path", type=click.Path(path_type=Path), default=None,
              help="write a Markdown table to this file")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None,
              help="write a PNG bar chart of per-step latency per backend")
@click.option("--sizes", default=None,
              help="comma-separated image sides: instead of the bench, measure each backend's "
                   "step time and peak memory at every size x --batches, each point in a "
                   "fresh process; --plot draws time per image vs pixels (log-log)")
@click.option("--batches", default="1", show_default=True,
              help="comma-separated batch sizes for --sizes")
def bench(model, task, arch, operator_path, bundle, size, backends, steps, reps, warmup,
          threads, baselines, baseline_reps, restore_reps, no_restoration, cache, json_path,
          markdown_path, plot_path, sizes, batches):
    """Measure latency: per graph (UNet+H forward, fused guided step, VAE encoder and
    decoder; median and p90), per restoration, peak memory, one step of the LDPS/PSLD
    baselines on the same prior, and the arithmetic floor (FLOPs of one step against the
    machine's measured matmul rate). Backends run in one process so their ratios are
    measured together.
    """
    import json

    from ..bench import BenchConfig, render_markdown, render_table, run_bench, write_plot
    from ..bench.report import all_failed
    from ..images import OutputPlan

    if sizes:
        return _bench_scaling(model, task, arch, backends, sizes, batches, reps, warmup,
                              threads, steps, not no_restoration, cache, json_path,
                              markdown_path, plot_path)
    config = BenchConfig(
        model=model, task=task, arch=arch, operator=operator_path, bundle=bundle,
        image_size=size, backends=tuple(b.strip() for b in backends.split(",") if b.strip()),
        steps=steps, reps=reps, warmup=warmup, threads=threads,
        baselines=() if baselines.strip() in ("", "none") else
        tuple(b.strip() for b in baselines.split(",")),
        baseline_reps=baseline_reps, restoration=not no_restoration,
        restore_reps=restore_reps, cache=cache,
        log=lambda line: click.echo(line, err=True))
    outputs = OutputPlan([json_path, markdown_path, plot_path])  # before the benchmark
    result = run_bench(config)
    click.echo(render_table(result))
    with outputs:
        if json_path:
            text = json.dumps(result, indent=1)
            outputs.stage(json_path, lambda path: Path(path).write_text(text))
        if markdown_path:
            text = render_markdown(result)
            outputs.stage(markdown_path, lambda path: Path(path).write_text(text))
        if plot_path:
            outputs.stage(plot_path, lambda path: write_plot(result, path))
    if all_failed(result):
        raise SiloError(f"every backend failed ({', '.join(sorted(result['failed']))}; see "
                        "above)", exit_code=1)


def _bench_scaling(model, task, arch, backends, sizes, batches, reps, warmup, threads, steps,
                   restore, cache, json_path, markdown_path, plot_path):
    """``bench --sizes``: step time and peak memory over image sizes and batch sizes."""
    import json

    from ..bench.scaling import (
        ScalingConfig,
        parse_int_list,
        render_scaling_markdown,
        run_scaling,
        write_scaling_plot,
    )
    from ..images import OutputPlan

    scaling = ScalingConfig(
        model=model, task=task, arch=arch,
        backends=tuple(b.strip() for b in backends.split(",") if b.strip()),
        sizes=parse_int_list(sizes, "--sizes"), batches=parse_int_list(batches, "--batches"),
        reps=reps, warmup=warmup, threads=threads, steps=steps, restore=restore, cache=cache,
        log=lambda line: click.echo(line, err=True))
    outputs = OutputPlan([json_path, markdown_path, plot_path])  # before the measurement
    result = run_scaling(scaling)
    text = render_scaling_markdown(result)
    click.echo(text)
    with outputs:
        if json_path:
            data = json.dumps(result, indent=1)
            outputs.stage(json_path, lambda path: Path(path).write_text(data))
        if markdown_path:
            outputs.stage(markdown_path, lambda path: Path(path).write_text(text))
        if plot_path:
            outputs.stage(plot_path, lambda path: write_scaling_plot(result, path))
    if result["failed"] and not result["points"]:
        raise SiloError("every scaling point failed (see above)", exit_code=1)
