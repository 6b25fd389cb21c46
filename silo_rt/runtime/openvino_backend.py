"""OpenVINO execution of a bundle's ONNX graphs on the CPU, in fp32 or bf16.

OpenVINO reads the bundle's portable ONNX files directly; nothing is stored beside them.
One rewrite is made in memory before compiling (:func:`unshare_transposed_conv_weights`):
OpenVINO 2026.4 computes a ``Convolution`` wrongly when its weight tensor is also the weight
of a ``ConvolutionBackpropData`` (the gradient of a strided convolution, which every step
graph has), so each such transposed convolution gets its own copy of the weight.

``bf16`` (``INFERENCE_PRECISION_HINT``) runs matmuls and convolutions in bfloat16 on CPUs with
AMX or AVX512-BF16; it is not float32 parity (one step's latent moves ~1e-3 relative) and is
only chosen on request. The measured effect on restorations is in ``benchmarks/README.md``.

``memory="low"`` (:func:`weights_as_parameters`) makes the step's weights inputs set once, so
the plugin keeps them as given instead of repacking a copy per layout when compiling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..backends import MEMORY_MODES, StepCallback
from ..bundle_format import Manifest
from ..errors import SiloError, first_line
from . import step_io
from .finite import check_losses
from .ort_backend import WEIGHT_MIN_ELEMENTS, release_freed_heap

PRECISIONS = {"fp32": "f32", "bf16": "bf16"}
WEIGHT_PREFIX = "silo_weight_"
"""Names of the inputs :func:`weights_as_parameters` makes (never a :mod:`.step_io` name)."""


def openvino_available() -> bool:
    """Whether the ``openvino`` package can be imported here."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def cpu_has_native_bf16() -> bool:
    """Whether OpenVINO reports bf16 among this CPU's optimisation capabilities."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def unshare_transposed_conv_weights(model) -> int:
    """Give every ``ConvolutionBackpropData`` whose weight a ``Convolution`` also reads its
    own copy of that weight (a ``Constant``, or a ``Convert`` of one); returns how many.

    Works around an OpenVINO CPU fault (seen with 2026.4.1): the sharing ``Convolution``
    comes out wrong (relative error ~1), which breaks the step graph's gradient.
    """
    from openvino import opset13 as ops

    copied = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "ConvolutionBackpropData":
            continue
        weight = op.input_value(1)
        readers = {t.get_node().get_type_name() for t in weight.get_target_inputs()}
        if "Convolution" not in readers:
            continue
        op.input(1).replace_source_output(_copy_constant(weight, ops))
        copied += 1
    return copied


def _copy_constant(output, ops):
    """A fresh node computing the same constant as ``output`` (Constant or Convert(Constant))."""
    node = output.get_node()
    kind = node.get_type_name()
    if kind == "Constant":
        return ops.constant(np.array(node.get_data(), copy=True)).output(0)
    if kind == "Convert" and node.input_value(0).get_node().get_type_name() == "Constant":
        source = _copy_constant(node.input_value(0), ops)
        return ops.convert(source, node.get_output_element_type(0)).output(0)
    raise SiloError(f"cannot run this graph with OpenVINO: a transposed convolution's weight "
                    f"comes from a {kind} node, not a constant")


def weights_as_parameters(model, min_elements: int = WEIGHT_MIN_ELEMENTS
                          ) -> dict[str, np.ndarray]:
    """Replace every float ``Constant`` of ``model`` with at least ``min_elements`` by a new
    input; returns each input's name and value (a writable copy, to be set on the infer
    request and kept alive as long as it).

    A compiled model holds each constant weight repacked for every operation that reads it
    (sd15's step: 9.3 GiB for 3.2 GB of weights); an input is read as it is, each step.
    """
    from openvino import opset13 as ops

    values, parameters = {}, []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Constant" or op.get_output_element_type(0).is_integral():
            continue
        shape = list(op.get_output_shape(0))
        if int(np.prod(shape, dtype=np.int64)) < min_elements:
            continue
        name = f"{WEIGHT_PREFIX}{len(values)}"
        parameter = ops.parameter(shape, op.get_output_element_type(0), name=name)
        parameter.output(0).get_tensor().set_names({name})
        for target in list(op.output(0).get_target_inputs()):
            target.replace_source_output(parameter.output(0))
        values[name] = np.array(op.get_data(), copy=True)
        parameters.append(parameter)
    model.add_parameters(parameters)
    return values


class OpenVinoGraphs:
    """Compiled OpenVINO models for a bundle's graphs (the same interface as
    :class:`~silo_rt.runtime.ort_backend.OrtGraphs`).

    Args:
        bundle: bundle folder (already verified with
            :func:`~silo_rt.bundle_format.load_manifest`).
        manifest: its :class:`~silo_rt.bundle_format.Manifest`.
        threads: inference threads (None = OpenVINO's default, all cores).
        precision: ``fp32`` or ``bf16`` (the inference precision hint of every graph).
        memory: ``fast`` or ``low`` (the step's weights held once, as inputs:
            :func:`weights_as_parameters`).
    """

    device = "cpu"

    @classmethod
    def open(cls, bundle: Path, manifest: Manifest, *, precision: str | None = None,
             threads: int | None = None, providers: list[str] | None = None,
             memory: str = "fast", log=lambda line: None) -> OpenVinoGraphs:
        """The registry's way in (:attr:`silo_rt.backends.Backend.opens`)."""
        return cls(bundle, manifest, threads, precision or "fp32", memory)

    @property
    def label(self) -> str:
        low = ", low memory" if self.memory == "low" else ""
        return f"openvino ({self.precision}{low})"

    def __init__(self, bundle: Path, manifest: Manifest, threads: int | None = None,
                 precision: str = "fp32", memory: str = "fast"):
        if precision not in PRECISIONS:
            raise SiloError(f"OpenVINO runs fp32 or bf16, not {precision}")
        try:
            import openvino as ov
        except ImportError:
            raise SiloError("the openvino backend needs OpenVINO: "
                            "pip install 'silo-rt[openvino]'") from None
        if precision == "bf16" and not cpu_has_native_bf16():
            raise SiloError("this CPU has no native bf16 (AMX or AVX512-BF16), where OpenVINO "
                            "would run fp32 anyway: use --precision fp32")
        self.manifest = manifest
        self.precision = precision
        if memory not in MEMORY_MODES:
            raise SiloError(f"memory must be one of {', '.join(MEMORY_MODES)}, not {memory!r}")
        self.memory = memory
        self._weights: dict[str, dict] = {}  # graph -> its weight inputs' values
        self.step_graph = step_io.STEP
        self._core = ov.Core()
        self._config = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision],
                        "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self._config["INFERENCE_NUM_THREADS"] = threads
        self._bundle = Path(bundle)
        self._requests: dict = {}
        self.unshared: dict[str, int] = {}  # graph -> transposed-conv weights copied

    def request(self, name: str):
        """The (lazily compiled) infer request of graph ``name``."""
        import openvino as ov

        if name not in self._requests:
            path = self.manifest.graph_file(self._bundle, name)
            try:
                model = self._core.read_model(str(path))
                self.unshared[name] = unshare_transposed_conv_weights(model)
                if self.memory == "low" and name == self.step_graph:
                    self._weights[name] = weights_as_parameters(model)
                compiled = self._core.compile_model(model, "CPU", self._config)
            except SiloError:
                raise
            except Exception as exc:  # OpenVINO raises its own exception types
                raise SiloError(f"OpenVINO cannot load {path.name}: {first_line(exc)}") \
                    from None
            request = compiled.create_infer_request()
            for weight, value in self._weights.get(name, {}).items():
                request.set_tensor(weight, ov.Tensor(value, shared_memory=True))
            self._requests[name] = request
            del model, compiled  # the request keeps what it needs
            release_freed_heap()  # the parsed ONNX model and compile-time copies
        return self._requests[name]

    def close(self) -> None:
        self._requests.clear()
        self._weights.clear()

    def run(self, name: str, **inputs: np.ndarray) -> list[np.ndarray]:
        """Run graph ``name`` on numpy inputs (float32); outputs in the graph's order."""
        request = self.request(name)
        request.infer({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()})
        return [np.array(request.get_output_tensor(i).data, copy=True)
                for i in range(len(request.model_outputs))]

    def single_step(self, z, w, context, timestep, coefficients, noise, eta, sigma_y,
                    cfg_scale=None):
        """A zero-argument callable that runs one step on fixed inputs (benchmarks)."""
        request = self.request(self.step_graph)
        feeds = {**step_io.step_constants(w, context, eta, sigma_y, cfg_scale),
                 **step_io.step_inputs(z, timestep, coefficients, noise)}

        def run():
            request.infer(feeds)
            return feeds

        return run

    def run_steps(self, z: np.ndarray, w: np.ndarray, context: np.ndarray,
                  timesteps: np.ndarray, coefficients: np.ndarray, noise: np.ndarray,
                  eta: float, sigma_y: float, cfg_scale: float | None = None,
                  callback: StepCallback | None = None, want_latents: bool = False
                  ) -> np.ndarray:
        """Run ``len(timesteps)`` fused guided steps from ``z``; returns the final latent.

        Arguments as :meth:`~silo_rt.runtime.ort_backend.OrtGraphs.run_steps`; stops with a
        :class:`SiloError` naming the step at the first NaN/Inf loss. The fixed inputs are set
        once; each step copies only its latent-sized ones into OpenVINO's tensors.
        """
        request = self.request(self.step_graph)
        steps = len(timesteps)
        ts = np.asarray(timesteps, np.float32).reshape(steps, 1)
        coefficients = np.ascontiguousarray(coefficients, np.float32)
        noise = np.ascontiguousarray(noise, np.float32)
        import openvino as ov

        for name, array in step_io.step_constants(w, context, eta, sigma_y, cfg_scale).items():
            request.set_tensor(name, ov.Tensor(array))  # a copy, set once for every step
        current = np.array(z, np.float32, copy=True)
        losses = np.empty(steps, np.float32)
        for i in range(steps):
            request.infer(step_io.step_inputs(current, ts[i], coefficients[i], noise[i]))
            current = np.array(request.get_tensor(step_io.Z_PREV).data, copy=True)
            losses[i] = request.get_tensor(step_io.LOSS).data
            if not np.isfinite(losses[i]):
                check_losses(losses[: i + 1], timesteps)
            if callback is not None:
                callback(i, int(timesteps[i]), current.copy() if want_latents else None,
                         float(losses[i]))
        return current
