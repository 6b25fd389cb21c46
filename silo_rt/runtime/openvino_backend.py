"""OpenVINO execution of a bundle's ONNX graphs on the CPU, in fp32 or bf16.

OpenVINO reads the bundle's portable ONNX files directly; nothing is stored beside them.
One rewrite is made in memory before compiling (:func:`unshare_transposed_conv_weights`):
OpenVINO 2026.4 computes a ``Convolution`` wrongly when its weight tensor is also the weight
of a ``ConvolutionBackpropData`` (the gradient of a strided convolution, which every step
graph has), so each such transposed convolution gets its own copy of the weight.

``bf16`` (``INFERENCE_PRECISION_HINT``) runs matmuls and convolutions in bfloat16 on CPUs with
AMX or AVX512-BF16; it is not float32 parity (one step's latent moves ~1e-3 relative) and is
only chosen on request. The measured effect on restorations is in ``benchmarks/README.md``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..backends import StepCallback
from ..bundle_format import Manifest
from ..errors import SiloError, first_line
from . import step_io
from .finite import check_losses
from .ort_backend import release_freed_heap

PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


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


class OpenVinoGraphs:
    """Compiled OpenVINO models for a bundle's graphs (the same interface as
    :class:`~silo_rt.runtime.ort_backend.OrtGraphs`).

    Args:
        bundle: bundle folder (already verified with
            :func:`~silo_rt.bundle_format.load_manifest`).
        manifest: its :class:`~silo_rt.bundle_format.Manifest`.
        threads: inference threads (None = OpenVINO's default, all cores).
        precision: ``fp32`` or ``bf16`` (the inference precision hint of every graph).
    """

    device = "cpu"

    @classmethod
    def open(cls, bundle: Path, manifest: Manifest, *, precision: str | None = None,
             threads: int | None = None, providers: list[str] | None = None,
             memory: str = "fast", log=lambda line: None) -> OpenVinoGraphs:
        """The registry's way in (:attr:`silo_rt.backends.Backend.opens`; ``memory`` is
        always ``fast``, the row's only mode)."""
        return cls(bundle, manifest, threads, precision or "fp32")

    @property
    def label(self) -> str:
        return f"openvino ({self.precision})"

    def __init__(self, bundle: Path, manifest: Manifest, threads: int | None = None,
                 precision: str = "fp32"):
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
        if name not in self._requests:
            path = self.manifest.graph_file(self._bundle, name)
            try:
                model = self._core.read_model(str(path))
                self.unshared[name] = unshare_transposed_conv_weights(model)
                compiled = self._core.compile_model(model, "CPU", self._config)
            except SiloError:
                raise
            except Exception as exc:  # OpenVINO raises its own exception types
                raise SiloError(f"OpenVINO cannot load {path.name}: {first_line(exc)}") \
                    from None
            self._requests[name] = compiled.create_infer_request()
            del model, compiled  # the request keeps what it needs
            release_freed_heap()  # the parsed ONNX model and compile-time copies
        return self._requests[name]

    def close(self) -> None:
        self._requests.clear()

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
