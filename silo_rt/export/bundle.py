"""Exporting a (prior, operator, task, size, schedule) to a bundle folder.

The bundle is built in a hidden temporary folder beside the target and renamed into place
only when complete, so an interrupted export never leaves a bundle that loads. A lock file
(``<out>.lock``, holding the exporter's pid) refuses a second concurrent export into the same
folder; a lock left by a dead process is taken over, and the hidden folders such a process
left behind (``.<out>.*.partial``, ``.<out>.old-*``) are removed. Bundles get the usual modes
(folders 0755, files 0644 under the default umask).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import SiloError
from ..provenance import package_versions
from ..runtime.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    MAX_BATCH,
    MAX_IMAGE_SIZE,
    sha256_file,
    write_manifest,
)
from ..sampler import SamplingOptions, batch_context
from ..schedule import alphas_record, from_scheduler
from ..step import GuidedStep
from ..tasks import get_task
from .graphs import (
    STEP_OUTPUT_NAMES,
    UNetOperatorGraph,
    VaeDecoderGraph,
    VaeEncoderGraph,
    step_input_names,
)
from .half_weights import store_exact_fp16_initializers
from .onnx_writer import check_graph, export_forward, export_step

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


@contextmanager
def export_lock(out: Path):
    """Hold ``<out>.lock`` for the duration; refuse if a live process holds it."""
    lock = out.with_name(out.name + ".lock")
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
                os.kill(pid, 0)
            except (ValueError, ProcessLookupError, FileNotFoundError):
                lock.unlink(missing_ok=True)  # stale: its exporter is gone
                continue
            except PermissionError:
                pass
            raise SiloError(f"another export (pid {pid}) is writing {out}; wait for it or "
                            f"remove {lock} if it is stale") from None
    else:
        raise SiloError(f"cannot take the export lock {lock}")
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        remove_leftovers(out)
        yield
    finally:
        lock.unlink(missing_ok=True)


def remove_leftovers(out: Path) -> None:
    """Remove the hidden build folders of exports into ``out`` that died (``kill -9``).

    Only called with the lock held: no live exporter owns such a folder then.
    """
    name = re.escape(out.name)
    # An .old-PID folder is the only copy when its exporter died between the two renames.
    kinds = r"[a-z0-9_]{8}\.partial|old-\d+" if (out / MANIFEST).is_file() else \
        r"[a-z0-9_]{8}\.partial"
    leftover = re.compile(rf"^\.{name}\.({kinds})$")
    for path in out.parent.iterdir():
        if leftover.match(path.name) and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)


def check_export_target(out: Path) -> None:
    """Refuse, before any work, a bundle folder that cannot be written or is not a bundle."""
    out = Path(out)
    if not out.parent.is_dir():
        raise SiloError(f"output folder does not exist: {out.parent}")
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise SiloError(f"output folder is not writable: {out.parent}")
    if out.is_symlink() or (out.exists() and not (out / MANIFEST).is_file()):
        raise SiloError(f"{out} exists and is not a bundle; refusing to replace it")


def _publish_modes(folder: Path) -> None:
    """mkdtemp makes a 0700 folder: give the bundle the usual modes under the umask."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def _check_steps(prior, steps: int) -> None:
    """Refuse more steps than the prior was trained with, before any tracing."""
    train_steps = int(prior.scheduler.config.num_train_timesteps)
    if steps > train_steps:
        raise SiloError(f"steps must be between 1 and {train_steps} (the prior's training "
                        f"steps), got {steps}")


def _example_inputs(prior, options: ExportOptions, context: torch.Tensor):
    """Representative tensors (any values work: shapes are what is traced)."""
    spec = get_task(options.sampling.task)
    b = options.batch
    latent = prior.latent_shape(options.image_size, b)
    side = options.image_size // spec.scale
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g)

    return {
        "measurement": rand(b, 3, side, side).clamp(-1, 1),
        "z_t": rand(*latent), "noise": rand(*latent), "w": rand(*latent), "z0": rand(*latent),
        "timestep": torch.tensor([500.0]),
        "coefficients": torch.tensor([1.2, -0.6, 0.1, 0.9, 0.05]),
        "eta": torch.tensor([0.5]), "sigma_y": torch.tensor([0.02]),
        "cfg_scale": torch.tensor([max(options.sampling.cfg_scale, 1.0)]),
        "context": batch_context(context, b),
    }


def _shapes(names, tensors) -> dict:
    return {n: list(t.shape) for n, t in zip(names, tensors)}


def export_bundle(prior, operator, op_config, options: ExportOptions, out: Path,
                  on_stage: StageCallback | None = None) -> dict:
    """Write a bundle to ``out`` (replacing an existing one atomically); returns the manifest.

    Args:
        prior: the frozen :class:`~silo_rt.prior.LatentPrior`.
        operator, op_config: the frozen H_θ and its :class:`OperatorConfig`.
        options: sampling settings, image size and batch.
        out: bundle folder to create.
        on_stage: progress callback, ``(stage name, seconds)``.
    """
    sampling = options.sampling
    sampling.validate()
    _check_steps(prior, sampling.steps)
    op_config.check_compatible(prior, sampling.task, options.image_size)
    out = Path(out)
    check_export_target(out)

    report = on_stage or (lambda stage, seconds: None)
    cfg = sampling.cfg_scale > 1.0
    fingerprint = prior.fingerprint()  # of the trained prior, before any rounding
    if options.weights == "fp16":
        from .half_weights import round_module_to_fp16

        prior = dataclasses.replace(prior, unet=round_module_to_fp16(prior.unet),
                                    vae=round_module_to_fp16(prior.vae))
        operator = round_module_to_fp16(operator)
    with export_lock(out):
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
        try:
            manifest = _write_bundle(prior, operator, op_config, options, tmp, cfg, report,
                                     fingerprint)
            _publish_modes(tmp)
            _replace_dir(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return manifest


def _replace_dir(new: Path, target: Path) -> None:
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)


def half_precision_step(prior, operator, arch: str, cfg_scale: float) -> GuidedStep:
    """The guided step with fp16 copies of the UNet and operator (fp32 inputs, outputs and
    tail; see :mod:`silo_rt.step`). The VAE and text encoder are not copied."""
    half_prior = dataclasses.replace(prior, unet=copy.deepcopy(prior.unet).half())
    return GuidedStep(half_prior, copy.deepcopy(operator).half(), arch, cfg_scale)


def _timed(report, stage, fn):
    start = time.perf_counter()
    result = fn()
    report(stage, time.perf_counter() - start)
    return result


def _write_bundle(prior, operator, op_config, options, folder: Path, cfg: bool, report,
                  fingerprint: str):
    sampling = options.sampling
    context = prior.encode_prompt(sampling.prompt, sampling.cfg_scale)
    ex = _example_inputs(prior, options, context)
    step = GuidedStep(prior, operator, op_config.arch, sampling.cfg_scale)
    graphs, files = {}, []

    def add(name, module_or_step, input_names, output_names, inputs, outputs):
        path = folder / f"{name}.onnx"
        if isinstance(module_or_step, GuidedStep):
            written = export_step(module_or_step, inputs, input_names, output_names, path)
        else:
            written = export_forward(module_or_step, inputs, path)
        if options.weights == "fp16" and written == [path]:
            store_exact_fp16_initializers(path)
        check_graph(path)
        files.extend(written)
        graphs[name] = {"file": path.name, "inputs": _shapes(input_names, inputs),
                        "outputs": _shapes(output_names, outputs)}

    def graph_stage(name, module, names):
        inputs = [ex[n] for n in names]
        with torch.no_grad():
            outputs = module(*inputs)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        _timed(report, name, lambda: add(name, module, names, module.output_names, inputs,
                                         outputs))

    graph_stage("vae_encoder", VaeEncoderGraph(prior, sampling.task, options.image_size),
                VaeEncoderGraph.input_names)
    graph_stage("vae_decoder", VaeDecoderGraph(prior), VaeDecoderGraph.input_names)
    if options.include_unet_h:
        graph_stage("unet_h", UNetOperatorGraph(step), UNetOperatorGraph.input_names)
    names = step_input_names(cfg)
    step_inputs = [ex[n] for n in names]
    # z_prev has z_t's shape and the loss is a scalar; no need to run the step for that.
    step_outputs = (ex["z_t"], torch.zeros(()))
    _timed(report, "step", lambda: add("step", step, names, STEP_OUTPUT_NAMES, step_inputs,
                                       step_outputs))
    if options.precision == "fp16":
        half = half_precision_step(prior, operator, op_config.arch, sampling.cfg_scale)
        _timed(report, "step_fp16", lambda: add("step_fp16", half, names, STEP_OUTPUT_NAMES,
                                                step_inputs, step_outputs))

    np.save(folder / "context.npy", ex["context"].numpy().astype(np.float32))
    files.append(folder / "context.npy")
    schedule = from_scheduler(prior.scheduler, sampling.steps).to_json()
    schedule.update(alphas_record(prior.scheduler) or {})  # lets the runtime change steps
    spec = get_task(sampling.task)
    latent = list(prior.latent_shape(options.image_size, options.batch))
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "task": sampling.task, "arch": op_config.arch, "batch": options.batch,
        "image_size": options.image_size,
        "measurement_shape": list(ex["measurement"].shape), "latent_shape": latent,
        "precision": "fp32",
        "weights": options.weights,
        "eta": sampling.resolved_eta, "sigma_y": sampling.sigma_y,
        "clamp_latent": spec.clamp_latent, "cfg_scale": sampling.cfg_scale,
        "prompt": sampling.prompt,
        "init_noise_sigma": float(prior.scheduler.init_noise_sigma),
        "context": {"file": "context.npy", "shape": list(ex["context"].shape)},
        "schedule": schedule,
        "noise": "silo_rt.noise.NoiseSource (numpy PCG64 streams spawned from the seed)",
        "graphs": graphs,
        "prior": {"name": prior.name, "fingerprint": fingerprint,
                  "random_weights": prior.is_random},
        "operator": json.loads(op_config.to_json()),
        "versions": package_versions(("silo-rt", "torch", "diffusers", "transformers", "onnx",
                                        "onnxscript")),
        "files": {p.name: sha256_file(p) for p in files},
    }
    write_manifest(folder, manifest)
    return manifest
