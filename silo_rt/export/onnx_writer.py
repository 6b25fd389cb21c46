"""Writing modules to standard-ONNX files (opset 18, ``ai.onnx`` ops only).

Forward graphs go through ``torch.onnx.export(dynamo=True)``. The guided step, which contains
a gradient, cannot: it is first traced to a forward-only FX graph with
``make_fx(functionalize(...))`` and :func:`~.decompositions.gradient_decompositions`, under
the MATH attention kernel so attention's backward decomposes into ops ONNX has. Shapes are
static.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from ..errors import SiloError, first_line
from .attention import DEFAULT_ATTENTION, DEFAULT_CHUNK, export_attention
from .decompositions import gradient_decompositions, recompute_layer_norm_statistics

OPSET = 18
EXTERNAL_DATA_BYTES = 1_500_000_000  # well under protobuf's 2 GB limit


@contextmanager
def _quiet():
    """Silence the exporter's chatter (progress lines, torchvision notices) meanwhile; the
    warning filters and the logger level are restored afterwards."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"torch\.onnx.*")
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=UserWarning)
            yield
    finally:
        logger.setLevel(level)


def _tensor_bytes(module_or_gm) -> int:
    total = sum(p.numel() * p.element_size() for p in module_or_gm.parameters())
    total += sum(b.numel() * b.element_size() for b in module_or_gm.buffers())
    if isinstance(module_or_gm, torch.fx.GraphModule):
        for node in module_or_gm.graph.nodes:
            if node.op == "get_attr":
                value = getattr(module_or_gm, node.target, None)
                if isinstance(value, torch.Tensor):
                    total += value.numel() * value.element_size()
    return total


def _export(model, inputs, input_names, output_names, path: Path) -> list[Path]:
    """Export and save; returns the files written (the graph, plus external data if any)."""
    external = _tensor_bytes(model) > EXTERNAL_DATA_BYTES
    with _quiet():
        program = torch.onnx.export(model, tuple(inputs), dynamo=True, opset_version=OPSET,
                                    input_names=list(input_names),
                                    output_names=list(output_names), verbose=False)
    program.save(str(path), external_data=external)
    files = [path]
    if external:
        files += sorted(p for p in path.parent.iterdir()
                        if p.name.startswith(path.name) and p != path)
    return files


def export_forward(module: torch.nn.Module, inputs, input_names, output_names,
                   path: Path) -> list[Path]:
    """Export a forward-only module; its tensors are named ``input_names``/``output_names``
    (a graph's :mod:`~silo_rt.runtime.step_io` names)."""
    module.eval()
    with torch.no_grad(), export_attention(module):
        return _export(module, inputs, input_names, output_names, path)


def trace_step(step: torch.nn.Module, inputs, attention: str = DEFAULT_ATTENTION,
               chunk: int = DEFAULT_CHUNK) -> torch.fx.GraphModule:
    """Trace a :class:`~silo_rt.step.GuidedStep` (frozen weights) to forward-only ATen ops;
    ``attention``/``chunk``: how attention's backward is written (:mod:`.attention`)."""
    from torch.func import functionalize
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if any(p.requires_grad for p in step.parameters()):
        raise SiloError("freeze the prior and operator before tracing the step")

    def step_fn(*args):
        return step(*args)

    # Fake tensors: the trace computes no activations (a real trace of the sd15 step at
    # 512 px peaked at 18.7 GiB, this one at ~5). The weights, real tensors the step closes
    # over, become the graph's constants by reference.
    def trace(fn):
        return make_fx(fn, decomposition_table=gradient_decompositions(), tracing_mode="fake",
                       _allow_non_fake_inputs=True)(*inputs)

    with sdpa_kernel([SDPBackend.MATH]), export_attention(step, attention, chunk):
        if attention == "recompute":
            # functionalize has no rule for the autograd.Function that recomputes
            # attention: trace with it first, then functionalize the plain-op graph.
            graph = trace(functionalize(trace(step_fn), remove="mutations"))
        else:
            graph = trace(functionalize(step_fn, remove="mutations"))
    leftovers = {str(n.target) for n in graph.graph.nodes
                 if n.op == "call_function" and "backward" in str(n.target)}
    if leftovers:
        raise SiloError(f"cannot export the step: no decomposition for {sorted(leftovers)}")
    recompute_layer_norm_statistics(graph)
    return graph


def export_step(step: torch.nn.Module, inputs, input_names, output_names,
                path: Path, attention: str = DEFAULT_ATTENTION,
                chunk: int = DEFAULT_CHUNK) -> list[Path]:
    """Trace the guided step (``attention``: see :func:`trace_step`) and write it as one ONNX
    graph."""
    return _export(trace_step(step, inputs, attention, chunk), inputs, input_names,
                   output_names, path)


def check_graph(path: Path) -> None:
    """``onnx.checker`` (full check) and the ``ai.onnx``-only rule; raises :class:`SiloError`."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise SiloError(f"{path.name} failed the ONNX checker: {first_line(exc)}") from None
    model = onnx.load(str(path), load_external_data=False)
    domains = {node.domain for node in model.graph.node} - {"", "ai.onnx"}
    if domains:
        raise SiloError(f"{path.name} uses non-standard op domains {sorted(domains)}")
