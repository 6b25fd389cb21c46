"""Exporting a (prior, operator, task, size, schedule) to a bundle folder.

:func:`export_bundle` checks everything it can before tracing, then runs the export passes
(:mod:`.passes`) in a hidden temporary folder and swaps the finished bundle into place
(:mod:`.atomic`), so an interrupted export never leaves a bundle that loads. The manifest is
written by the one writer of the format (:mod:`silo_rt.bundle_format`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..bundle_format import (
    MAX_BATCH,
    MAX_IMAGE_SIZE,
    ContextSpec,
    Manifest,
    ScheduleRecord,
    sha256_file,
    write_manifest,
)
from ..degradations import get_degradation
from ..errors import SiloError
from ..latents import LatentDecoder, MeasurementEncoder
from ..provenance import package_versions
from ..runtime import step_io
from ..sampler import SamplingOptions, batch_context
from ..schedule import alphas_record, from_scheduler
from ..step import GuidedStep
from .atomic import check_export_target, export_lock, publish_modes, replace_dir
from .attention import ATTENTION_MODES, DEFAULT_ATTENTION, DEFAULT_CHUNK
from .graphs import UNetOperatorGraph
from .passes import (
    BundleDraft,
    ExportPass,
    Fp16Weights,
    OnnxCheck,
    TensorRTCheck,
    WriteGraph,
    run_passes,
)

StageCallback = Callable[[str, float], None]
"""``callback(stage, seconds)`` after each export stage."""


@dataclass
class ExportOptions:
    """What to export besides the model: sampling settings baked into the manifest."""

    sampling: SamplingOptions
    image_size: int
    batch: int = 1
    include_unet_h: bool = True
    weights: str = "fp32"  # "fp16": weights rounded to and stored in half precision
    precision: str = "fp32"  # "fp16": also a strongly typed fp16 step graph, ``step_fp16``
    check_tensorrt: bool = False  # parse and build every graph with TensorRT(-RTX)
    attention: str = DEFAULT_ATTENTION  # the step's attention backward: recompute | keep
    attention_chunk: int = DEFAULT_CHUNK  # query rows a chunk, with recompute

    def __post_init__(self):
        if not (isinstance(self.batch, int) and 1 <= self.batch <= MAX_BATCH):
            raise SiloError(f"batch must be between 1 and {MAX_BATCH}, got {self.batch}")
        if not (isinstance(self.image_size, int) and 8 <= self.image_size <= MAX_IMAGE_SIZE
                and self.image_size % 8 == 0):
            raise SiloError(f"image size must be a multiple of 8 between 8 and "
                            f"{MAX_IMAGE_SIZE}, got {self.image_size}")
        if self.weights not in ("fp32", "fp16"):
            raise SiloError(f"weights must be fp32 or fp16, got {self.weights!r}")
        if self.precision not in ("fp32", "fp16"):
            raise SiloError(f"precision must be fp32 or fp16, got {self.precision!r}")
        if self.attention not in ATTENTION_MODES:
            raise SiloError(f"attention must be one of {', '.join(ATTENTION_MODES)}, "
                            f"got {self.attention!r}")
        if not (isinstance(self.attention_chunk, int) and self.attention_chunk >= 1):
            raise SiloError(f"attention chunk must be a positive integer, got "
                            f"{self.attention_chunk!r}")


def _check_steps(prior, steps: int) -> None:
    """Refuse more steps than the prior was trained with, before any tracing."""
    train_steps = int(prior.scheduler.config.num_train_timesteps)
    if steps > train_steps:
        raise SiloError(f"steps must be between 1 and {train_steps} (the prior's training "
                        f"steps), got {steps}")


def example_inputs(prior, options: ExportOptions, context: torch.Tensor):
    """``{graph input name: tensor}``, one representative value of every exported graph's
    inputs at ``options``' image size and batch (seeded; any values work: the shapes are what
    is traced)."""
    spec = get_degradation(options.sampling.task)
    b = options.batch
    latent = prior.latent_shape(options.image_size, b)
    side = options.image_size // spec.scale
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g)

    io = step_io
    return {
        io.MEASUREMENT: rand(b, 3, side, side).clamp(-1, 1),
        io.Z_T: rand(*latent), io.NOISE: rand(*latent), io.W: rand(*latent),
        io.Z0: rand(*latent),
        io.TIMESTEP: torch.tensor([500.0]),
        io.COEFFICIENTS: torch.tensor([1.2, -0.6, 0.1, 0.9, 0.05]),
        io.ETA: torch.tensor([0.5]), io.SIGMA_Y: torch.tensor([0.02]),
        io.CFG_SCALE: torch.tensor([max(options.sampling.cfg_scale, 1.0)]),
        io.CONTEXT: batch_context(context, b),
    }


def export_bundle(prior, operator, op_config, options: ExportOptions, out: Path,
                  on_stage: StageCallback | None = None,
                  log: Callable[[str], None] | None = None, consume: bool = False) -> Manifest:
    """Write a bundle to ``out`` (replacing an existing one atomically); returns its manifest.

    Args:
        prior: the frozen :class:`~silo_rt.prior.LatentPrior`.
        operator, op_config: the frozen H_θ and its :class:`OperatorConfig`.
        options: sampling settings, image size, batch, weights, precision, checks.
        out: bundle folder to create.
        on_stage: progress callback, ``(graph name, seconds)``.
        log: lines of the TensorRT check.
        consume: the caller will not use ``prior`` and ``operator`` again, so ``--weights
            fp16`` may round them in place instead of in a copy (SD-1.5: 3.8 GiB less).
    """
    sampling = options.sampling
    sampling.validate()
    _check_steps(prior, sampling.steps)
    op_config.check_compatible(prior, sampling.task, options.image_size)
    out = Path(out)
    check_export_target(out)

    fingerprint = prior.fingerprint()  # of the trained prior, before any rounding
    if options.weights == "fp16":
        from .half_weights import round_module_to_fp16

        copy = not consume
        prior = dataclasses.replace(prior, unet=round_module_to_fp16(prior.unet, copy),
                                    vae=round_module_to_fp16(prior.vae, copy))
        operator = round_module_to_fp16(operator, copy)
    with export_lock(out):
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
        try:
            manifest = _write_bundle(prior, operator, op_config, options, tmp, fingerprint,
                                     on_stage, log)
            publish_modes(tmp)
            replace_dir(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return manifest


def export_passes(prior, operator, options: ExportOptions) -> list[ExportPass]:
    """The passes that write a bundle of ``options``, in order (see :mod:`.passes`)."""
    sampling = options.sampling
    step = GuidedStep(prior, operator, sampling.cfg_scale)
    half = (half_precision_step(prior, operator, sampling.cfg_scale)
            if options.precision == "fp16" else None)

    def write(graph, module, skip=None):  # the graph's tensors named as step_io says
        io = step_io.GRAPHS[graph]
        return WriteGraph(graph, module, io.input_names(sampling.cfg_scale > 1.0),
                          io.output_names, skip=skip,
                          attention=(options.attention, options.attention_chunk))

    return [
        write(step_io.VAE_ENCODER, MeasurementEncoder(prior, sampling.task, options.image_size)),
        write(step_io.VAE_DECODER, LatentDecoder(prior)),
        write(step_io.UNET_H, UNetOperatorGraph(step),
              skip=None if options.include_unet_h else "left out (--no-unet-h)"),
        write(step_io.STEP, step),
        write(step_io.STEP_FP16, half, skip=None if half is not None else "precision fp32"),
        Fp16Weights(), OnnxCheck(), TensorRTCheck(),
    ]


def _write_bundle(prior, operator, op_config, options: ExportOptions, folder: Path,
                  fingerprint: str, on_stage, log) -> Manifest:
    sampling = options.sampling
    context = prior.encode_prompt(sampling.prompt, sampling.cfg_scale)
    example = example_inputs(prior, options, context)
    draft = BundleDraft(folder, example, options.weights, options.check_tensorrt,
                        on_stage or (lambda stage, seconds: None), log or (lambda line: None))
    run_passes(draft, export_passes(prior, operator, options))
    np.save(folder / "context.npy", example[step_io.CONTEXT].numpy().astype(np.float32))
    schedule = from_scheduler(prior.scheduler, sampling.steps)
    alphas = alphas_record(prior.scheduler) or {}  # lets the runtime change the step count
    manifest = Manifest(
        task=sampling.task, arch=op_config.arch, batch=options.batch,
        image_size=options.image_size,
        measurement_shape=list(example[step_io.MEASUREMENT].shape),
        latent_shape=list(prior.latent_shape(options.image_size, options.batch)),
        eta=sampling.resolved_eta, sigma_y=sampling.sigma_y, cfg_scale=sampling.cfg_scale,
        prompt=sampling.prompt, init_noise_sigma=float(prior.scheduler.init_noise_sigma),
        context=ContextSpec("context.npy", list(example[step_io.CONTEXT].shape)),
        schedule=ScheduleRecord(**schedule.to_json(), **alphas),
        graphs=draft.graphs,
        files={p.relative_to(folder).as_posix(): sha256_file(p)
               for p in [*draft.files, folder / "context.npy"]},
        clamp_latent=get_degradation(sampling.task).clamp_latent,
        weights=options.weights,
        noise="silo_rt.noise.NoiseSource (numpy PCG64 streams spawned from the seed)",
        prior={"name": prior.name, "fingerprint": fingerprint,
               "random_weights": prior.is_random},
        operator=json.loads(op_config.to_json()),
        versions=package_versions(("silo-rt", "torch", "diffusers", "transformers", "onnx",
                                   "onnxscript")),
        export_passes=dict(draft.passes),
    )
    write_manifest(folder, manifest)
    return manifest


def half_precision_step(prior, operator, cfg_scale: float) -> GuidedStep:
    """The guided step with fp16 copies of the UNet and operator (fp32 inputs, outputs and
    tail; see :mod:`silo_rt.step`). The VAE and text encoder are not copied."""
    half_prior = dataclasses.replace(prior, unet=copy.deepcopy(prior.unet).half())
    return GuidedStep(half_prior, copy.deepcopy(operator).half(), cfg_scale)
