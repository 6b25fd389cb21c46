"""``silo-rt export``: a prior + operator to a bundle of ONNX graphs (and TensorRT engines)."""

from __future__ import annotations

from pathlib import Path

import click

from ..degradations import DEFAULT_SIGMA_Y, task_names
from ..errors import SiloError
from .group import cli
from .options import (
    CFG,
    ETA,
    IMAGE_SIZE,
    MODEL_HELP,
    SIGMA_HELP,
    SIGMA_Y,
    STEPS,
    pt_arch_option,
    refuse_unused,
    time_input_option,
)
from .recipe import recipe_option


@cli.command()
@recipe_option
@click.option("--operator", "operator_path", required=True, type=click.Path(path_type=Path),
              help="trained operator: .safetensors, one of the SILO authors' released .pt files "
                   "(e.g. trained_ckpt/CNN/sr_8_cnn_ffhq_operator.pt), or a .pt state dict "
                   "with --arch")
@pt_arch_option
@time_input_option
@click.option("--model", required=True, help=MODEL_HELP)
@click.option("--task", type=click.Choice(list(task_names())), default=None,
              help="degradation [default: the operator's task]")
@click.option("--size", type=IMAGE_SIZE, default=None,
              help="image side in px [default: the operator's training size]")
@click.option("--batch", type=click.IntRange(1, 64), default=1, show_default=True,
              help="batch size the graphs are traced for (shapes are static)")
@click.option("--steps", type=STEPS, default=None,
              help="DDPM steps [default: 999, or what the operator's makers used]")
@click.option("--eta", type=ETA, default=None,
              help="consistency scale [default: 0.5, or 1.0 for ip]")
@click.option("--prompt", default=None,
              help="text condition, embedded into the bundle [default: empty, or the "
                   "authors' prompt for their operators]")
@click.option("--cfg", "cfg_scale", type=CFG, default=1.0, show_default=True,
              help="classifier-free guidance scale (1 = off; > 1 doubles the UNet batch)")
@click.option("--sigma-y", type=SIGMA_Y, default=DEFAULT_SIGMA_Y, help=SIGMA_HELP)
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32",
              show_default=True,
              help="fp16: also write step_fp16, the step with an fp16 UNet and H_theta (fp32 "
                   "inputs, outputs, loss and update), for fp16 TensorRT engines")
@click.option("--check", "checks", type=click.Choice(["trt"]), multiple=True,
              help="trt: parse every graph with the installed TensorRT (or TensorRT-RTX, no GPU "
                   "needed) and build it ahead of time; one verdict per graph, exit 1 if any "
                   "graph is refused")
@click.option("--compare", is_flag=True,
              help="with --check trt: also run each graph's TensorRT engine against ONNX "
                   "Runtime on the same inputs, every intermediate tensor compared, and name "
                   "the first that disagrees (polygraphy; needs a GPU and NVIDIA's tensorrt: "
                   "elsewhere one line per graph says why not); exit 1 if any disagrees")
@click.option("--engines", type=click.Choice(["none", "trt"]), default="none",
              show_default=True,
              help="also build TensorRT engines for this machine's GPU into the bundle")
@click.option("--opt-level", type=click.IntRange(0, 5), default=3, show_default=True,
              help="TensorRT builder optimisation level")
@click.option("--weights", type=click.Choice(["fp32", "fp16"]), default="fp32",
              show_default=True,
              help="fp16: round the weights to half precision and store them so (bundle half "
                   "the size, still computed in fp32; used by the embedded demo)")
@click.option("--attention", type=click.Choice(["recompute", "keep"]), default="recompute",
              show_default=True,
              help="the step's attention backward: recompute rebuilds each query chunk's "
                   "probabilities from Q and K, one chunk after another (sd15 at 512 px: a "
                   "restoration peaks at 8.9 instead of 13.1 GiB), keep stores them from the "
                   "forward")
@click.option("--attention-chunk", type=click.IntRange(1, None), default=None,
              help="query rows a chunk with --attention recompute [default: 512]")
@click.option("--no-unet-h", is_flag=True,
              help="leave out the unet_h graph (used by bench and parity checks, not by "
                   "restore)")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="bundle folder to write, e.g. engines/sr8-512")
def export(operator_path, arch, time_input, model, task, size, batch, steps, eta, prompt,
           cfg_scale, sigma_y, precision, checks, compare, engines, opt_level, weights,
           attention, attention_chunk, no_unet_h, out):
    """Export a prior + operator to a bundle of ONNX graphs with a manifest.

    The bundle holds the VAE encoder and decoder, the UNet + H_theta forward, and the fused
    guided step (UNet + H_theta forward and their vector-Jacobian product) for one task,
    image size and batch size, plus the schedule and the prompt's text embedding, so
    `silo-rt restore --bundle` needs neither PyTorch nor a text encoder.
    """
    import time

    from ..export import ExportOptions, export_bundle
    from ..export.bundle import check_export_target
    from ..operators import load_operator
    from ..prior import load_prior
    from ..sampler import SamplingOptions

    refuse_unused("an export without --check trt", compare="trt" in checks)
    check_export_target(out)  # before loading anything
    if engines == "trt":
        from ..runtime.tensorrt.keys import current_key

        current_key(precision)  # fail before the long export when TensorRT or a GPU is missing
    if "trt" in checks:
        from ..runtime.tensorrt.api import import_tensorrt

        import_tensorrt()  # likewise: the check needs TensorRT (no GPU)
    started = time.perf_counter()
    prior = load_prior(model)
    operator, config = load_operator(operator_path, prior, task, arch, size, time_input)
    task = task or config.task
    size = size or config.image_size
    steps = config.recommended.get("steps", 999) if steps is None else steps
    prompt = config.recommended.get("prompt", "") if prompt is None else prompt
    options = SamplingOptions(task=task, steps=steps, eta=eta, prompt=prompt,
                              cfg_scale=cfg_scale, sigma_y=sigma_y)
    options.validate()
    click.echo(f"exporting {config.arch}/{task} at {size}px, batch {batch}, {steps} steps "
               f"to {out} (loaded in {time.perf_counter() - started:.1f} s)", err=True)
    if config.source == "authors":
        click.echo(f"  the SILO authors' {config.arch} operator ({config.time_input} time "
                   f"input, {config.resizer} SR resizer, prompt {prompt!r})", err=True)

    def stage(name, seconds):
        click.echo(f"  {name:<12} {seconds:7.1f} s", err=True)

    export_options = ExportOptions(sampling=options, image_size=size, batch=batch,
                                   include_unet_h=not no_unet_h, weights=weights,
                                   precision=precision, check_tensorrt="trt" in checks,
                                   attention=attention,
                                   **({} if attention_chunk is None
                                      else {"attention_chunk": attention_chunk}))
    manifest = export_bundle(prior, operator, config, export_options, out, on_stage=stage,
                             log=lambda line: click.echo(line, err=True), consume=True)
    from ..export.passes import refused_by_tensorrt

    refused = ", ".join(refused_by_tensorrt(manifest.export_passes))
    if engines == "trt":
        from ..runtime.tensorrt.build import build_engines
        from ..runtime.tensorrt.keys import EngineBuildConfig

        build_engines(out, manifest, EngineBuildConfig(precision, True, opt_level),
                      log=lambda line: click.echo(line, err=True))
    click.echo(f"wrote bundle {out} in {time.perf_counter() - started:.1f} s")
    if refused:
        raise SiloError(f"TensorRT refused {refused} (see above)", exit_code=1)
    if compare:
        compare_engines(out)


def compare_engines(bundle: Path) -> None:
    """``--compare``: each graph's TensorRT engine against ONNX Runtime (one line a graph);
    exit 1 when one disagrees, naming the first tensor that does."""
    from ..runtime.tensorrt.compare import compare_bundle

    verdicts = compare_bundle(bundle, log=lambda line: click.echo(f"  compare {line}",
                                                                  err=True))
    wrong = [v for v in verdicts if v.ok is False]
    if wrong:
        raise SiloError("TensorRT disagrees with ONNX Runtime on "
                        + ", ".join(f"{v.graph} (first at {v.first_mismatch or 'an output'})"
                                    for v in wrong), exit_code=1)
