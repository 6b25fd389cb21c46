"""``silo-rt restore``: the command's options, gathered into a
:class:`~.restore_request.RestoreRequest`.

What a request does is in :mod:`.restore_flow`; this module only declares the options.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..backends import AUTO, MEMORY_MODES, RESTORE_CHOICES
from ..degradations import task_names
from ..tiling import DEFAULT_OVERLAP
from .group import cli
from .options import (
    CFG,
    ETA,
    MAX_SAMPLES,
    MODEL_HELP,
    SEED,
    SIGMA_HELP,
    SIGMA_Y,
    STEPS,
    TASK_HELP,
    THREADS,
    pt_arch_option,
    sampler_option,
    time_input_option,
)
from .restore_flow import run_restore
from .restore_request import RestoreRequest


@cli.command()
@click.argument("measurement", type=click.Path(path_type=Path))
@click.option("--bundle", type=click.Path(path_type=Path), default=None,
              help="exported bundle folder (runs without PyTorch)")
@click.option("--task", type=click.Choice(list(task_names())), default=None,
              help=TASK_HELP + " [default: the bundle's task; sr4 for the embedded demo; "
                   "required with --model]")
@click.option("--model", default=None, help=MODEL_HELP + " (torch backend)")
@click.option("--operator", "operator_path", type=click.Path(path_type=Path), default=None,
              help="trained operator (torch backend): .safetensors, an authors' released .pt, "
                   "or a .pt state dict with --arch")
@pt_arch_option
@time_input_option
@click.option("--backend", type=click.Choice(RESTORE_CHOICES), default=AUTO, show_default=True,
              help="torch = PyTorch reference on the CPU, torch-cuda = the same on a GPU with a "
                   "CUDA graph (both need --model/--operator); ort = ONNX Runtime, openvino = "
                   "OpenVINO (CPU), trt = TensorRT with CUDA graphs (these run a --bundle); "
                   "auto = with a bundle, TensorRT when usable, else the faster of ort and "
                   "openvino where openvino agrees with ort on the bundle (checked once, "
                   "cached); without one, torch")
@click.option("--precision", type=click.Choice(["fp16", "fp32", "bf16"]), default=None,
              help="precision of a bundle's step: fp16 (trt, or ort on a bundle exported "
                   "with --precision fp16), bf16 (openvino on CPUs with AMX/AVX512-BF16; not "
                   "fp32 parity)  [default: fp16 with trt, else fp32]")
@click.option("--threads", type=THREADS, default=None,
              help="CPU threads for ONNX Runtime [default: all cores]")
@click.option("--steps", type=STEPS, default=None,
              help="sampling steps [default: the count a bundle was exported with; 999 or the "
                   "operator makers' count with --model]; fewer is faster (README: How many "
                   "steps)")
@sampler_option
@click.option("--eta", type=ETA, default=None,
              help="consistency scale [default: tuned for this step count and sampler by "
                   "`silo-rt tune`, else the bundle's (0.5, 1.0 for ip, with --model), at any "
                   "step count; says which]")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--prompt", default=None,
              help="text condition (torch backend; a bundle embeds its prompt at export)  "
                   "[default: empty, or the authors' prompt for their operators]")
@click.option("--cfg", "cfg_scale", type=CFG, default=None,
              help="classifier-free guidance scale, 1 = off (torch backend; a bundle embeds "
                   "its scale at export)  [default: 1]")
@click.option("--sigma-y", type=SIGMA_Y, default=None, help=SIGMA_HELP)
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="restored image to write (.png); for a folder or .txt list of "
                   "measurements, the output folder (created if its parent exists)")
@click.option("--compare", "compare_path", type=click.Path(path_type=Path), default=None,
              help="also write a side-by-side picture: measurement, restoration (with "
                   "--samples: their mean and the std map) and (with --reference) the ground "
                   "truth, PSNR in the caption")
@click.option("--reference", type=click.Path(path_type=Path), default=None,
              help="ground-truth image: prints the restoration's PSNR and adds it to --compare")
@click.option("--keep-measured", is_flag=True,
              help="make the result agree exactly with the measurement (ip: copy the "
                   "observed pixels; sr4/sr8: replace what the low-resolution image "
                   "determines), keeping only the model's detail")
@click.option("--samples", type=click.IntRange(1, MAX_SAMPLES), default=None,
              help="draw K posterior samples (sample i seeded from --seed and i; a bundle): "
                   "OUT is their mean, OUT-stem.sample1..K.png the samples and "
                   "OUT-stem.std.png a heat map of the per-pixel std (scale bar in [-1, 1] "
                   "units); prints their spread")
@click.option("--overwrite", is_flag=True,
              help="a folder of measurements: restore again the images that OUT holds from "
                   "a run with other settings (bundle, seed, steps, sampler, eta, sigma-y, "
                   "precision, keep-measured); without it such a rerun is refused")
@click.option("--tile-overlap", type=click.IntRange(0, 1024), default=DEFAULT_OVERLAP,
              help="latent pixels that neighbouring tiles share and blend (x8 image pixels "
                   "on SD-1.x); 0 lets tiles only abut  [default: a quarter of the tile: 16 "
                   "on SD-1.x at 512 px, 4 on the demo]")
@click.option("--memory", type=click.Choice(MEMORY_MODES), default="fast", show_default=True,
              help="low: ONNX Runtime holds the weights of the step's low-resolution layers "
                   "once, as stored, instead of a copy per layout, for slightly slower steps "
                   "(SD-1.5 at 512 px: 6.2 instead of 8.6 GiB, steps 1.06x; README); auto "
                   "runs ort so by itself where only fast would not fit")
def restore(**params):
    """Restore a MEASUREMENT image, or a folder / .txt list of them, with SILO (Algorithm 1).

    From a bundle (`--bundle`, ONNX Runtime, no PyTorch needed), with the PyTorch reference
    (`--model` + `--operator`), or, given neither, with the embedded 64x64 demo model
    (tasks sr4 and ip; no download, no PyTorch).

    Any size and aspect: a measurement of another size than the bundle's (or operator's)
    is restored by overlapping tiles of that size, blended after every step (gb, sr4, sr8,
    jpeg; README: Images of any size). The tile is the operator's own size: its LayerNorms
    and sigma map are tied to it.

    A folder (its .png/.jpg/.jpeg/.webp files) or a .txt list (one path a line, relative to
    the list) is restored from a bundle into the folder OUT: OUT/<stem>.png per image, written
    atomically, each image seeded from --seed and its file name, a JSON line per image in
    OUT/restore-log.jsonl (seed, settings, seconds, CPSNR, backend); a rerun skips what is done
    with the same settings, retries what failed and refuses (without --overwrite) to mix in
    results of other settings. Shard it
    over processes or GPUs with `accelerate launch --multi_gpu --num_processes N -m silo_rt
    restore DIR --out OUT ...`.
    """
    run_restore(RestoreRequest(**params))
