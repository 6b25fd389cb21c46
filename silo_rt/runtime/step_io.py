"""The bundle graphs' inputs and outputs: names, order, shapes and dtypes, in one place.

In the spirit of optimum's ``OnnxConfig``: the exporter names the graphs' tensors from here
(:mod:`silo_rt.export.graphs`) and every backend binds them from here (ONNX Runtime,
OpenVINO, TensorRT, the benchmarks), so a change of a graph's signature is one edit. This is
the only module where the tensor names are written out. numpy only (no torch).

Shapes are written in these dimensions (all fixed when a bundle is exported):

====  =========================================================================
B     batch the bundle was exported for
C     latent channels; ``h``, ``w``: latent height and width (image / 8 for SD)
H, W  restored image height and width (``image_size``)
Hy    measurement height and width (``Wy``): ``H / scale`` for SR, else ``H``
Bc    text-context batch: B, or 2B with classifier-free guidance (cfg_scale > 1)
L, D  text-context tokens and width
K     schedule coefficients per step (:data:`silo_rt.schedule.COEFFICIENT_NAMES`)
====  =========================================================================

Every tensor is float32 (``step_fp16`` too: fp16 lives inside it, behind Casts). The step
takes ``cfg_scale`` only when it was exported with classifier-free guidance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import SiloError
from ..schedule import COEFFICIENT_NAMES

# ---------------------------------------------------------------------------- graph names
VAE_ENCODER = "vae_encoder"
VAE_DECODER = "vae_decoder"
UNET_H = "unet_h"
STEP = "step"
STEP_FP16 = "step_fp16"
STEP_GRAPHS = {"fp32": STEP, "fp16": STEP_FP16}
"""The step graph of each precision (fp16 only changes the step; the VAE graphs are fp32)."""

# --------------------------------------------------------------------------- tensor names
MEASUREMENT = "measurement"
NOISE = "noise"
W = "w"
Z0 = "z0"
IMAGE = "image"
Z_T = "z_t"
TIMESTEP = "timestep"
COEFFICIENTS = "coefficients"
ETA = "eta"
CONTEXT = "context"
SIGMA_Y = "sigma_y"
CFG_SCALE = "cfg_scale"
EPS = "eps"
W_HAT = "w_hat"
Z_PREV = "z_prev"
LOSS = "loss"

LATENT = ("B", "C", "h", "w")
ONE = (1,)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a graph.

    Attributes:
        name: the ONNX tensor name.
        shape: dimensions, symbolic (see the module docstring) or fixed ints; ``()`` = scalar.
        value_range: ``(low, high)`` of meaningful values: what test and comparison inputs
            are drawn from.
        dtype: numpy dtype name.
    """

    name: str
    shape: tuple[str | int, ...]
    value_range: tuple[float, float] = (-1.0, 1.0)
    dtype: str = "float32"

    @property
    def rank(self) -> int:
        return len(self.shape)

    def resolve(self, dims: Mapping[str, int]) -> tuple[int, ...]:
        """The shape with ``dims`` (``{"B": 1, "C": 4, ...}``) put in for the symbols."""
        try:
            return tuple(d if isinstance(d, int) else int(dims[d]) for d in self.shape)
        except KeyError as exc:
            raise SiloError(f"{self.name}'s shape {self.shape} needs dimension "
                            f"{exc.args[0]}") from None


@dataclass(frozen=True)
class GraphIO:
    """One bundle graph's inputs and outputs, in the order of the exported module's
    ``forward`` (inputs) and of its results (outputs).

    ``cfg_only`` names the inputs present only when the graph was exported with
    classifier-free guidance.
    """

    graph: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    cfg_only: frozenset[str] = frozenset()

    def input_specs(self, cfg: bool = False) -> tuple[TensorSpec, ...]:
        return tuple(s for s in self.inputs if cfg or s.name not in self.cfg_only)

    def input_names(self, cfg: bool = False) -> tuple[str, ...]:
        return tuple(s.name for s in self.input_specs(cfg))

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.outputs)

    def spec(self, name: str) -> TensorSpec:
        for spec in (*self.inputs, *self.outputs):
            if spec.name == name:
                return spec
        raise SiloError(f"graph {self.graph} has no tensor {name!r}")

    def example_inputs(self, dims: Mapping[str, int], cfg: bool = False,
                       seed: int = 0) -> dict[str, np.ndarray]:
        """Random inputs of the right shapes and dtypes, uniform in each ``value_range``."""
        rng = np.random.default_rng(seed)
        return {s.name: rng.uniform(*s.value_range, s.resolve(dims)).astype(s.dtype)
                for s in self.input_specs(cfg)}


def _step(graph: str) -> GraphIO:
    return GraphIO(graph, (
        TensorSpec(Z_T, LATENT),
        TensorSpec(TIMESTEP, ONE, (1.0, 999.0)),
        TensorSpec(COEFFICIENTS, ("K",)),
        TensorSpec(NOISE, LATENT),
        TensorSpec(W, LATENT),
        TensorSpec(ETA, ONE, (0.0, 1.0)),
        TensorSpec(CONTEXT, ("Bc", "L", "D")),
        TensorSpec(SIGMA_Y, ONE, (0.0, 0.1)),
        TensorSpec(CFG_SCALE, ONE, (1.0, 7.5)),
    ), (TensorSpec(Z_PREV, LATENT), TensorSpec(LOSS, ())), frozenset({CFG_SCALE}))


GRAPHS: dict[str, GraphIO] = {io.graph: io for io in (
    GraphIO(VAE_ENCODER, (TensorSpec(MEASUREMENT, ("B", 3, "Hy", "Wy")),
                          TensorSpec(NOISE, LATENT)),
            (TensorSpec(W, LATENT),)),
    GraphIO(VAE_DECODER, (TensorSpec(Z0, LATENT),),
            (TensorSpec(IMAGE, ("B", 3, "H", "W")),)),
    GraphIO(UNET_H, (TensorSpec(Z_T, LATENT), TensorSpec(TIMESTEP, ONE, (1.0, 999.0)),
                     TensorSpec(COEFFICIENTS, ("K",)), TensorSpec(CONTEXT, ("Bc", "L", "D")),
                     TensorSpec(SIGMA_Y, ONE, (0.0, 0.1))),
            (TensorSpec(EPS, LATENT), TensorSpec(Z0, LATENT), TensorSpec(W_HAT, LATENT))),
    _step(STEP),
    _step(STEP_FP16),
)}
"""Every graph a bundle can hold (:data:`silo_rt.bundle_format.REQUIRED_GRAPHS` and
``OPTIONAL_GRAPHS``), by name."""

STEP_IO = GRAPHS[STEP]
STEP_PER_STEP = (Z_T, TIMESTEP, COEFFICIENTS, NOISE)
"""The step inputs that change every step; the others stay fixed over a restoration."""
STEP_OUTPUTS = STEP_IO.output_names
"""``(z_prev, loss)``: the next latent and the step's measurement loss."""


def dims(batch: int, latent_shape, image_size: int, measurement_shape,
         context_shape) -> dict[str, int]:
    """The dimensions of one bundle, from the shapes its manifest records."""
    b, c, h, w = (int(d) for d in latent_shape)
    bc, length, width = (int(d) for d in context_shape)
    return {"B": int(batch), "C": c, "h": h, "w": w, "H": int(image_size),
            "W": int(image_size), "Hy": int(measurement_shape[2]),
            "Wy": int(measurement_shape[3]), "Bc": bc, "L": length, "D": width,
            "K": len(COEFFICIENT_NAMES)}


def manifest_dims(manifest) -> dict[str, int]:
    """:func:`dims` of a :class:`~silo_rt.bundle_format.Manifest`."""
    return dims(manifest.batch, manifest.latent_shape, manifest.image_size,
                manifest.measurement_shape, manifest.context.shape)


def step_constants(w, context, eta: float, sigma_y: float,
                   cfg_scale: float | None) -> dict[str, np.ndarray]:
    """The step inputs that stay fixed over a restoration, by name, as contiguous float32
    arrays (``cfg_scale`` only when given: the step of a bundle exported with CFG)."""
    constants = {W: w, ETA: np.array([eta]), CONTEXT: context, SIGMA_Y: np.array([sigma_y])}
    if cfg_scale is not None:
        constants[CFG_SCALE] = np.array([cfg_scale])
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in constants.items()}


def step_inputs(z, timestep, coefficients, noise) -> dict[str, np.ndarray]:
    """The per-step inputs (:data:`STEP_PER_STEP`) of one step, by name, as contiguous
    float32 arrays (``timestep`` as ``(1,)``)."""
    return {Z_T: np.ascontiguousarray(z, np.float32),
            TIMESTEP: np.asarray(timestep, np.float32).reshape(1),
            COEFFICIENTS: np.ascontiguousarray(coefficients, np.float32),
            NOISE: np.ascontiguousarray(noise, np.float32)}


def encoder_inputs(measurement, noise) -> dict[str, np.ndarray]:
    """``vae_encoder``'s inputs by name: the measurement ``(B, 3, Hy, Wy)`` and the noise
    ``(B, C, h, w)`` that picks the encoder's posterior sample."""
    return {MEASUREMENT: measurement, NOISE: noise}


def decoder_inputs(z0) -> dict[str, np.ndarray]:
    """``vae_decoder``'s inputs by name: the clean latent ``(B, C, h, w)``."""
    return {Z0: z0}
