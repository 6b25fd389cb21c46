"""Every backend name, once: what it runs, where, and which commands take it.

``silo-rt restore --backend``, ``silo-rt bench --backends``, the bundle runner and the bench
read their choices from :data:`BACKENDS`; nothing else lists backend names. Also the one
definition of a step callback, shared by the PyTorch reference and the graph backends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .errors import SiloError

StepCallback = Callable[[int, int, Any, float], None]
"""``callback(step_index, timestep, z_{t-1}, loss)`` after each step; ``z_{t-1}`` is a torch
tensor (reference), a numpy array (ONNX Runtime) or None (TensorRT keeps it on the GPU)."""


@runtime_checkable
class GraphBackend(Protocol):
    """What a bundle backend provides (:class:`~silo_rt.runtime.ort_backend.OrtGraphs`,
    :class:`~silo_rt.runtime.tensorrt.backend.TrtGraphs`); the bundle runner uses only this.
    """

    def run(self, name: str, **inputs: np.ndarray) -> list[np.ndarray]:
        """Run graph ``name`` (``vae_encoder``, ``vae_decoder``…) on float32 inputs."""

    def run_steps(self, z, w, context, timesteps, coefficients, noise, eta, sigma_y,
                  cfg_scale=None, callback: StepCallback | None = None,
                  want_latents: bool = False) -> np.ndarray:
        """``len(timesteps)`` fused guided steps from ``z``; returns the final latent."""

    def close(self) -> None:
        """Release sessions, engines and device memory."""


MEMORY_MODES = ("fast", "low")
"""How ONNX Runtime holds the step's weights: ``fast``, its own way (every layout a kernel
reads, prepacked when loading: about two copies of the weights, because the step reads each
weight as the forward does and transposed/flipped for the backward); ``low``, the weights of
the low-resolution layers once, as stored, each other layout computed when a step needs it:
less memory, slightly slower steps (:mod:`silo_rt.runtime.low_memory`). (OpenVINO with its
weights as inputs instead of constants held more, not less: ``benchmarks/memory/``.)"""


@dataclass(frozen=True)
class Backend:
    """A way of running SILO.

    Attributes:
        name: as on the command line.
        runs: ``bundle`` (a bundle's ONNX graphs), ``reference`` (PyTorch model + operator)
            or ``compiled`` (the reference step compiled by ``torch.compile``).
        gpu: needs an NVIDIA GPU.
        restore: ``silo-rt restore --backend`` takes it.
        bench: ``silo-rt bench --backends`` times it.
        scaling: ``silo-rt bench --sizes/--batches`` sweeps it.
        help: one line for ``--help``.
        opens: for a backend the bundle runner opens, ``"module:Class"`` whose classmethod
            ``open(bundle, manifest, precision=, threads=, providers=, memory=, log=)``
            returns the graphs (a :class:`GraphBackend` with a ``label``); the runner
            imports nothing else per backend.
        precisions: the step precisions it runs (the first is its default, unless its class
            chooses from the bundle).
        title: its name in messages.
        precision_hint: appended to the refusal of another precision.
        memories: the ways it can hold a step's weights (``--memory``; the first is its
            default): ``low`` keeps one copy of most weights at some speed.
    """

    name: str
    runs: str
    gpu: bool
    restore: bool
    bench: bool
    scaling: bool
    help: str
    opens: str | None = None
    precisions: tuple[str, ...] = ()
    title: str = ""
    precision_hint: str = ""
    memories: tuple[str, ...] = ("fast",)

    def check_memory(self, memory: str) -> None:
        """Refuse a memory mode this backend does not have, in one line."""
        if memory not in self.memories:
            runs = [b.title or b.name for b in BACKENDS.values() if memory in b.memories]
            raise SiloError(f"--memory {memory} is not a mode of {self.title or self.name}"
                            + (f" ({' and '.join(runs)} only)" if runs else ""))

    def check_precision(self, precision: str | None) -> None:
        """Refuse a precision this backend does not run, in one line."""
        if precision is not None and self.precisions and precision not in self.precisions:
            raise SiloError(f"{self.title} runs a bundle's {' or '.join(self.precisions)} "
                            f"step, not {precision}{self.precision_hint}")

    def open(self, bundle, manifest, *, precision: str | None = None,
             threads: int | None = None, providers: list[str] | None = None,
             memory: str = "fast", log=lambda line: None) -> GraphBackend:
        """The class named by :attr:`opens`, opened on a verified bundle (``precision`` and
        ``memory`` checked against the row first)."""
        from importlib import import_module

        if self.opens is None:
            raise SiloError(f"the {self.name} backend does not open a bundle by itself")
        self.check_precision(precision)
        self.check_memory(memory)
        module, _, name = self.opens.partition(":")
        return getattr(import_module(module), name).open(
            bundle, manifest, precision=precision, threads=threads, providers=providers,
            memory=memory, log=log)


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("torch", "reference", False, True, True, True,
            "PyTorch eager reference"),
    Backend("torch-cuda", "reference", True, True, True, False,
            "the reference on a GPU (restore: with a CUDA graph)"),
    Backend("torch-cuda-graph", "reference", True, False, True, False,
            "the reference step replayed from a CUDA graph"),
    Backend("torch-compile", "compiled", False, False, True, True,
            "the reference step compiled by Inductor (compiling takes minutes)"),
    Backend("torch-compile-cuda-graph", "compiled", True, False, True, False,
            "the compiled step with CUDA graphs"),
    Backend("ort", "bundle", False, True, True, True,
            "ONNX Runtime on a bundle (CUDA when this onnxruntime has it)",
            opens="silo_rt.runtime.ort_backend:OrtGraphs", precisions=("fp32", "fp16"),
            title="ONNX Runtime", precision_hint=" (bf16: --backend openvino)",
            memories=("fast", "low")),
    Backend("openvino", "bundle", False, True, True, True,
            "OpenVINO on a bundle's ONNX graphs (CPU; restore --precision bf16: bfloat16)",
            opens="silo_rt.runtime.openvino_backend:OpenVinoGraphs",
            precisions=("fp32", "bf16"), title="OpenVINO"),
    Backend("openvino-bf16", "bundle", False, False, True, True,
            "OpenVINO in bfloat16 (CPUs with AMX or AVX512-BF16; not fp32 parity)"),
    Backend("trt", "bundle", True, True, False, False,
            "TensorRT with CUDA graphs on a bundle (precision from --precision)",
            opens="silo_rt.runtime.tensorrt.backend:TrtGraphs", precisions=("fp16", "fp32"),
            title="TensorRT"),
    Backend("trt-fp32", "bundle", True, False, True, False, "TensorRT, fp32 step"),
    Backend("trt-fp16", "bundle", True, False, True, False, "TensorRT, fp16 step"),
)}

AUTO = "auto"
"""restore's default: TensorRT when usable with a bundle, else the fastest CPU backend that
agrees with ONNX Runtime on the bundle (:mod:`silo_rt.runtime.backend_choice`); without a
bundle, the PyTorch reference."""


def names(use: str) -> tuple[str, ...]:
    """The backends a use (``restore``, ``bench``, ``scaling``) takes, in registry order."""
    return tuple(b.name for b in BACKENDS.values() if getattr(b, use))


RESTORE_CHOICES = (AUTO, *names("restore"))
BUNDLE_BACKENDS = tuple(b.name for b in BACKENDS.values() if b.runs == "bundle")
RUNNER_BACKENDS = tuple(b for b in BUNDLE_BACKENDS if BACKENDS[b].restore)
"""What :class:`~silo_rt.runtime.BundleRunner` opens (besides ``auto``): ``ort``,
``openvino``, ``trt``."""
CPU_BUNDLE_BACKENDS = tuple(b for b in RUNNER_BACKENDS if not BACKENDS[b].gpu)
"""Bundle backends ``restore`` takes that run without a GPU (``ort``, ``openvino``)."""
REFERENCE_BACKENDS = tuple(b.name for b in BACKENDS.values() if b.runs == "reference")
GPU_BACKENDS = tuple(b.name for b in BACKENDS.values() if b.gpu)


def runner_backend(name: str) -> tuple[str, str | None]:
    """A bundle backend's bench name as ``(BundleRunner backend, precision)``:
    ``trt-fp16`` → ``("trt", "fp16")``, ``openvino-bf16`` → ``("openvino", "bf16")``,
    ``ort`` → ``("ort", None)`` (the runner's default precision)."""
    backend, _, precision = name.partition("-")
    return backend, precision or None


def check_backends(requested, use: str) -> tuple[str, ...]:
    """``requested`` (names) if ``use`` takes them all, else a :class:`SiloError` listing the
    choices."""
    allowed = names(use)
    requested = tuple(requested)
    unknown = [name for name in requested if name not in allowed]
    if unknown or not requested:
        raise SiloError(f"unknown backend(s) {unknown}; choose from {', '.join(allowed)}")
    return requested
