"""Export as named passes over a bundle being written.

Each pass either applies or says why it does not (``skip_reason``); :func:`run_passes`
records ``{pass: "applied" | "applied: …" | "skipped: …"}``, which the manifest keeps as
``export_passes``, so a bundle says what was done to it. In order:

=================  ==============================================================
graph <name>       trace the module and write ``<name>.onnx`` (one per graph)
fp16 weights       store fp16-exact initializers as fp16 (``--weights fp16``)
onnx check         ``onnx.checker`` (full) and the ``ai.onnx``-only rule, every graph
tensorrt check     parse + build every graph with TensorRT(-RTX) (``--check trt``)
=================  ==============================================================

TensorRT engines need the target GPU and are built after the bundle is in place
(:func:`silo_rt.runtime.tensorrt.build.build_engines` records them in the manifest).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..bundle_format import GraphSpec
from ..runtime import step_io
from ..step import GuidedStep
from .onnx_writer import check_graph, export_forward, export_step


@dataclass
class BundleDraft:
    """What the passes share while a bundle is written into ``folder``.

    Attributes:
        example: representative input tensors by name (shapes are what is traced).
        graphs: the graphs written so far, by name.
        graph_files: ``{graph: [its .onnx file, external data files…]}``.
        passes: the record :func:`run_passes` keeps.
    """

    folder: Path
    example: dict[str, torch.Tensor]
    weights: str = "fp32"
    check_tensorrt: bool = False
    report: Callable[[str, float], None] = lambda stage, seconds: None
    log: Callable[[str], None] = lambda line: None
    graphs: dict[str, GraphSpec] = field(default_factory=dict)
    graph_files: dict[str, list[Path]] = field(default_factory=dict)
    passes: dict[str, str] = field(default_factory=dict)

    @property
    def files(self) -> list[Path]:
        return [f for files in self.graph_files.values() for f in files]


class ExportPass:
    """A named step of export. Subclasses set ``name`` and implement :meth:`apply`."""

    name = ""

    def skip_reason(self, draft: BundleDraft) -> str | None:
        """Why this pass does not apply to ``draft`` (None: it applies)."""
        return None

    def apply(self, draft: BundleDraft) -> str | None:  # pragma: no cover - abstract
        """Do the work; may return a short note recorded after "applied: "."""
        raise NotImplementedError


class WriteGraph(ExportPass):
    """Trace ``module`` (a forward module, or a :class:`GuidedStep` whose VJP is traced) with
    the example inputs ``input_names`` and write ``<graph>.onnx``."""

    def __init__(self, graph: str, module: torch.nn.Module | None, input_names, output_names,
                 skip: str | None = None, attention: tuple[str, int] | None = None):
        self.name = f"graph {graph}"
        self.graph, self.module, self.skip = graph, module, skip
        # (mode, query rows a chunk) of a step's attention backward; None: export_step's
        self.attention = attention
        self.input_names, self.output_names = tuple(input_names), tuple(output_names)

    def skip_reason(self, draft):
        return self.skip

    def apply(self, draft):
        inputs = [draft.example[n] for n in self.input_names]
        path = draft.folder / f"{self.graph}.onnx"
        start = time.perf_counter()
        if isinstance(self.module, GuidedStep):
            written = export_step(self.module, inputs, self.input_names, self.output_names,
                                  path, *(self.attention or ()))
            # z_prev has z_t's shape and the loss is a scalar: no need to run the step.
            outputs = (draft.example[step_io.Z_T], torch.zeros(()))
        else:
            with torch.no_grad():
                outputs = self.module(*inputs)
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            written = export_forward(self.module, inputs, self.input_names,
                                     self.output_names, path)
        draft.graph_files[self.graph] = written
        draft.graphs[self.graph] = GraphSpec(path.name, _shapes(self.input_names, inputs),
                                             _shapes(self.output_names, outputs))
        draft.report(self.graph, time.perf_counter() - start)
        if isinstance(self.module, GuidedStep) and self.attention \
                and self.attention[0] == "recompute":
            return f"attention recomputed in the backward, {self.attention[1]} query rows a chunk"
        return None


class Fp16Weights(ExportPass):
    """``--weights fp16``: every graph's fp16-exact initializers stored as fp16, external
    data included (:func:`~.half_weights.store_exact_fp16_initializers`)."""

    name = "fp16 weights"

    def skip_reason(self, draft):
        return None if draft.weights == "fp16" else "weights fp32"

    def apply(self, draft):
        from .half_weights import store_exact_fp16_initializers

        converted = saved = 0
        for graph, files in draft.graph_files.items():
            count, freed, written = store_exact_fp16_initializers(files[0],
                                                                  external=len(files) > 1)
            draft.graph_files[graph] = written
            converted, saved = converted + count, saved + freed
        return f"{converted} initializers, {saved / 2**20:.1f} MiB saved"


class OnnxCheck(ExportPass):
    """The full ONNX checker and the ``ai.onnx``-only rule on every graph."""

    name = "onnx check"

    def apply(self, draft):
        for files in draft.graph_files.values():
            check_graph(files[0])
        return None


class TensorRTCheck(ExportPass):
    """``--check trt``: NVIDIA's parser and builder on every graph (TensorRT-RTX needs no
    GPU). A refusal is recorded and reported, not raised: the bundle is still written."""

    name = "tensorrt check"

    def skip_reason(self, draft):
        return None if draft.check_tensorrt else "not asked (--check trt)"

    def apply(self, draft):
        from ..runtime.tensorrt.check import check_bundle_with_tensorrt

        files = {name: spec.file for name, spec in draft.graphs.items()}
        verdicts = check_bundle_with_tensorrt(draft.folder, files, log=draft.log)
        refused = [v.graph for v in verdicts if v.ok is False]
        if refused:  # read back by refused_by_tensorrt
            return f"{REFUSED.removeprefix('applied: ')}{', '.join(refused)}"
        return "every graph parsed and built"


REFUSED = "applied: refused "


def refused_by_tensorrt(export_passes: dict[str, str]) -> list[str]:
    """The graphs a recorded ``tensorrt check`` pass says TensorRT refused (none if it was
    skipped or everything built)."""
    note = export_passes.get(TensorRTCheck.name, "")
    return note.removeprefix(REFUSED).split(", ") if note.startswith(REFUSED) else []


def run_passes(draft: BundleDraft, passes: list[ExportPass]) -> dict[str, str]:
    """Run ``passes`` in order on ``draft``; returns (and keeps) what each did."""
    for export_pass in passes:
        reason = export_pass.skip_reason(draft)
        if reason is not None:
            draft.passes[export_pass.name] = f"skipped: {reason}"
            continue
        note = export_pass.apply(draft)
        draft.passes[export_pass.name] = f"applied: {note}" if note else "applied"
    return draft.passes


def _shapes(names, tensors) -> dict:
    return {n: list(t.shape) for n, t in zip(names, tensors)}
