"""The FP32 tail of the fp16 step: which nodes it is, and whether they stay float32.

Precision is a property of the ONNX files, not of the builder: every network is strongly
typed, so the bundle's ``step_fp16`` graph (fp16 UNet/H_θ with explicit Casts, fp32 inputs,
outputs and tail) gives the fp16 step. Before it is built, every node after its last heavy op
(the loss norm, the clamp, the η-scaled update and the posterior mean) must output float32,
in the ONNX types (:func:`onnx_tail_violations`) and in the layers TensorRT made from them
(:func:`tail_layer_violations`).
"""

from __future__ import annotations

import re

from .api import dtype_name

# Ops whose inputs end the FP32 "tail" of the step graph.
HEAVY_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
# TensorRT data types (by enum name) and ONNX element types narrower than float32.
REDUCED_TRT_FLOATS = frozenset({"HALF", "BF16", "FP8", "FP4", "E8M0"})
REDUCED_ONNX_FLOATS = frozenset({10, 16, 17, 18, 19, 20, 23})  # FLOAT16, BFLOAT16, FLOAT8*, 4
_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]]+)\]")


def fp32_tail(model) -> set[str]:
    """Names of the step graph's nodes downstream of its last heavy op (see HEAVY_OPS).

    Walks back from the graph outputs through producers, stopping at convolutions and
    matrix products: what it collects is the cheap, precision-sensitive end of the step,
    whose outputs must all be float32 in the fp16 step graph.
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    tail, frontier = set(), [o.name for o in model.graph.output]
    while frontier:
        node = producer.get(frontier.pop())
        if node is None or node.name in tail or node.op_type in HEAVY_OPS:
            continue
        tail.add(node.name)
        frontier.extend(node.input)
    return tail


def onnx_tail_violations(model, tail_nodes) -> list[str]:
    """Tail nodes whose ONNX output type (after shape inference) is narrower than float32."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input)}
    lines = []
    for node in model.graph.node:
        if node.name not in tail_nodes:
            continue
        for out in node.output:
            elem = types.get(out)
            if elem in REDUCED_ONNX_FLOATS:
                lines.append(f"node {node.name} ({node.op_type}) outputs "
                             f"{onnx.TensorProto.DataType.Name(elem).lower()} in the ONNX "
                             "graph; the step's tail must be float32")
    return lines


def layer_onnx_node(layer, nodes) -> str | None:
    """The ONNX node a TensorRT layer was made from, or None for parser helper layers.

    Layer metadata ``[ONNX Layer: <node>]`` where the parser records it; otherwise the name:
    the parser names a node's first layer ``<node>`` and its extra layers ``<node>_<n>``.
    """
    found = _ONNX_LAYER.search(getattr(layer, "metadata", "") or "")
    if found:
        return found.group(1)
    name = layer.name
    if name in nodes:
        return name
    base = name.rsplit("_", 1)[0]
    return base if base in nodes and name[len(base) + 1:].isdigit() else None


def tail_layer_violations(network, tail_nodes) -> list[str]:
    """Layers of the parsed network that belong to the FP32 tail but output a reduced float.

    A layer belongs to the tail when it was made from a tail node (:func:`layer_onnx_node`),
    or it is a parser helper (``ONNXTRT_*``, no ONNX node) fed by a tail layer: the parser
    wraps a low-precision ``ReduceL2`` in such casts. Layers are in topological order.
    """
    tail_nodes = set(tail_nodes)
    tail_tensors: dict[str, str] = {}  # tensor name -> the tail node that produced it
    lines = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        node = layer_onnx_node(layer, tail_nodes)
        node = node if node in tail_nodes else None
        if node is None and layer.name.startswith("ONNXTRT_"):
            inputs = (layer.get_input(j) for j in range(layer.num_inputs))
            node = next((tail_tensors[t.name] for t in inputs
                         if t is not None and t.name in tail_tensors), None)
        if node is None:
            continue
        for j in range(layer.num_outputs):
            tensor = layer.get_output(j)
            tail_tensors[tensor.name] = node
            dtype = dtype_name(tensor.dtype)
            if dtype in REDUCED_TRT_FLOATS:
                lines.append(f"node {node}: TensorRT layer {layer.name} outputs "
                             f"{dtype.lower()}; the step's tail must be float32")
    return lines
