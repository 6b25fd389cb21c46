"""Each TensorRT engine against ONNX Runtime on the same inputs, with NVIDIA's polygraphy.

For each graph of a bundle (``vae_encoder``, ``vae_decoder``, ``step`` and ``step_fp16``
where present), polygraphy builds a TensorRT engine (strongly typed, TF32 off, as
:mod:`.build` builds them) and an ONNX Runtime CPU session from the same ONNX file, feeds
both the same seeded inputs and compares every output within ``rtol``/``atol``. With
``mark_all`` every intermediate tensor is marked as an output in both, and the first one, in
the ONNX graph's order, that disagrees is reported: where the engine first parts from ONNX
Runtime. This is the check a first GPU run needs before any end-to-end number is trusted.

Needs a CUDA GPU, NVIDIA's ``tensorrt`` (polygraphy does not drive ``tensorrt_rtx``) and
``pip install polygraphy``; elsewhere each verdict says in one line why it cannot run
(``ok`` None). ``against="onnxrt"`` compares ONNX Runtime with itself: the CPU self-check of
this module's plumbing that the tests run.

Usage: ``python -m silo_rt.runtime.tensorrt.compare BUNDLE|--demo TASK [--json FILE]``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from ...errors import SiloError
from .. import step_io
from . import api, cuda_device

RTOL = {"fp32": 1e-3, "fp16": 5e-2}
"""Relative tolerance per graph precision (fp32 engines keep TF32 off)."""
ATOL = {"fp32": 1e-4, "fp16": 1e-2}


@dataclass
class Comparison:
    """One graph's verdict: ``ok`` None when the comparison could not run here."""

    graph: str
    ok: bool | None
    message: str
    first_mismatch: str | None = None
    outputs_compared: int = 0

    def line(self) -> str:
        state = {True: "agrees", False: "DISAGREES", None: "not compared"}[self.ok]
        return f"{self.graph}: {state}: {self.message}"


def tensor_order(model) -> list[str]:
    """Every tensor an ONNX graph computes, in the graph's (topological) node order."""
    return [out for node in model.graph.node for out in node.output if out]


def first_mismatch(order: list[str], passed: dict[str, bool]) -> str | None:
    """The first tensor of ``order`` whose comparison failed (tensors TensorRT fused away,
    absent from ``passed``, are skipped); None when all that were compared agree."""
    return next((name for name in order if name in passed and not passed[name]), None)


def _passed_by_output(accuracy) -> dict[str, bool]:
    """``{output: passed}`` from polygraphy's ``compare_accuracy`` result (an
    ``AccuracyResult``, or in newer polygraphy a list of them), first pair, first iteration."""
    if not hasattr(accuracy, "values"):  # AccuracyResults: a list of AccuracyResult
        accuracy = accuracy[0]
    iterations = next(iter(accuracy.values()))
    return {name: bool(result) for name, result in iterations[0].items()}


def _no_polygraphy() -> str | None:
    """Why polygraphy cannot be used here (None: it can)."""
    try:
        import polygraphy  # noqa: F401
    except ImportError:
        return "polygraphy is not installed (pip install polygraphy)"
    return None


def _missing() -> str | None:
    """Why polygraphy cannot compare TensorRT here (None: it can)."""
    if why := _no_polygraphy():
        return why
    try:
        _, flavor = api.import_tensorrt()
    except SiloError as exc:
        return str(exc)
    if flavor != "tensorrt":
        return "polygraphy drives NVIDIA's `tensorrt`, not TensorRT-RTX (install `tensorrt`)"
    try:
        cuda_device.this_device()
    except SiloError as exc:  # no cuda-python, no driver, no GPU
        return str(exc)
    return None


def _runners(onnx_path: Path, against: str, mark_all: bool, optimization_level: int):
    from polygraphy import constants
    from polygraphy.backend.onnx import BytesFromOnnx, ModifyOutputs, OnnxFromPath
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    model = OnnxFromPath(str(onnx_path))
    if mark_all:
        model = ModifyOutputs(model, outputs=constants.MARK_ALL)
    ort = OnnxrtRunner(SessionFromOnnx(BytesFromOnnx(model), providers=["cpu"]),
                       name="onnxruntime")
    if against == "onnxrt":
        return OnnxrtRunner(SessionFromOnnx(BytesFromOnnx(model), providers=["cpu"]),
                            name="onnxruntime-again"), ort
    from polygraphy.backend.trt import (
        CreateConfig,
        EngineFromNetwork,
        ModifyNetworkOutputs,
        NetworkFromOnnxPath,
        TrtRunner,
    )

    network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=True)
    if mark_all:
        network = ModifyNetworkOutputs(network, outputs=constants.MARK_ALL)
    config = CreateConfig(tf32=False, builder_optimization_level=optimization_level)
    return TrtRunner(EngineFromNetwork(network, config=config), name="tensorrt"), ort


def compare_graph(onnx_path: Path, graph: str | None = None, precision: str = "fp32",
                  mark_all: bool = True, against: str = "trt", seed: int = 0,
                  optimization_level: int = 1) -> Comparison:
    """Compare one ONNX graph's TensorRT engine (``against="trt"``) with ONNX Runtime."""
    import onnx

    onnx_path = Path(onnx_path)
    graph = graph or onnx_path.stem
    why = _missing() if against == "trt" else _no_polygraphy()
    if why is not None:
        return Comparison(graph, None, why)
    from polygraphy.comparator import Comparator, CompareFunc, DataLoader
    from polygraphy.logger import G_LOGGER

    G_LOGGER.severity = G_LOGGER.ERROR  # the verdict line says what matters
    model = onnx.load(str(onnx_path), load_external_data=False)
    inputs = {i.name for i in model.graph.input}
    runners = _runners(onnx_path, against, mark_all, optimization_level)
    ranges = {spec.name: spec.value_range for io in step_io.GRAPHS.values()
              for spec in io.inputs if spec.name in inputs}
    loader = DataLoader(seed=seed, iterations=1, val_range={"": (-1.0, 1.0), **ranges})
    results = Comparator.run(list(runners), data_loader=loader)
    accuracy = Comparator.compare_accuracy(results, compare_func=CompareFunc.simple(
        rtol=RTOL[precision], atol=ATOL[precision]))
    passed = _passed_by_output(accuracy)
    order = tensor_order(model)
    first = first_mismatch(order, passed)
    failures = sum(not ok for ok in passed.values())
    if first is None and failures == 0:
        return Comparison(graph, True, f"{len(passed)} tensors agree within rtol "
                          f"{RTOL[precision]:g}, atol {ATOL[precision]:g}", None, len(passed))
    where = f"first at tensor {first!r}" if first else "outputs only"
    return Comparison(graph, False, f"{failures} of {len(passed)} tensors differ beyond rtol "
                      f"{RTOL[precision]:g}, atol {ATOL[precision]:g}; {where}", first,
                      len(passed))


def compare_bundle(bundle: Path, mark_all: bool = True, against: str = "trt",
                   log=lambda line: None) -> list[Comparison]:
    """:func:`compare_graph` for the bundle's engine graphs, one line each to ``log``."""
    from ...bundle_format import load_manifest

    manifest = load_manifest(bundle, verify=True)
    verdicts = []
    engine_graphs = (step_io.VAE_ENCODER, step_io.VAE_DECODER, *step_io.STEP_GRAPHS.values())
    for name in engine_graphs:
        if name not in manifest.graphs:
            continue
        verdict = compare_graph(Path(bundle) / manifest.graphs[name].file, name,
                                "fp16" if name == step_io.STEP_FP16 else "fp32", mark_all,
                                against)
        log(verdict.line())
        verdicts.append(verdict)
    return verdicts


def main(argv=None) -> int:
    """``BUNDLE | --demo TASK [--json FILE] [--outputs-only]``: exit 1 when an engine
    disagrees, 0 otherwise (also when the comparison cannot run here: it says why)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m silo_rt.runtime.tensorrt.compare")
    parser.add_argument("bundle", nargs="?", type=Path)
    parser.add_argument("--demo", help="an embedded demo bundle's task instead of BUNDLE")
    parser.add_argument("--json", type=Path, help="write the verdicts here")
    parser.add_argument("--outputs-only", action="store_true",
                        help="compare the graph outputs only (no intermediate tensors)")
    args = parser.parse_args(argv)
    if (args.bundle is None) == (args.demo is None):
        parser.error("give a BUNDLE or --demo TASK")
    try:
        if args.demo:
            from ...demo import demo_bundle

            bundle = demo_bundle(args.demo)
        else:
            bundle = args.bundle
        verdicts = compare_bundle(bundle, mark_all=not args.outputs_only, log=print)
    except SiloError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        args.json.write_text(json.dumps([asdict(v) for v in verdicts], indent=1))
    return 1 if any(v.ok is False for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
