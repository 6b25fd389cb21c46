"""Rewriting bundles exported before silo-rt's graphs were TensorRT-clean (ONNX level).

New exports are clean by construction (LayerNorm statistics recomputed in the traced step,
SR upsampling as matrix products). Bundles written earlier contain the two constructs
TensorRT's ONNX parser refuses; :func:`make_parser_clean` rewrites them into equivalent
standard ops, so an old bundle (the embedded demo's among them) builds TensorRT engines:

* ``LayerNormalization`` with its mean / inverse-std outputs (read by a traced backward):
  the node keeps only ``Y`` and the statistics are recomputed with ``ReduceMean``, ``Sub``,
  ``Mul``, ``Add``, ``Sqrt`` and ``Reciprocal`` (population variance, as the op defines);
* ``Resize(mode="cubic", antialias=1)`` upsampling a static 4-D image: two ``MatMul`` s with
  the interpolation matrices of :func:`silo_rt.resize.bicubic_aa_matrix` (what
  ``F.interpolate(bicubic, antialias=True)`` computes, from which the node was exported).

Both rewrites compute what the nodes computed (checked with ONNX Runtime in the tests).
"""

from __future__ import annotations

import numpy as np

from ..errors import SiloError
from ..resize import bicubic_aa_matrix


def _attribute(node, name, default):
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _initializer(model, name: str):
    from onnx import numpy_helper

    for tensor in model.graph.initializer:
        if tensor.name == name:
            return numpy_helper.to_array(tensor)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(_attribute(node, "value", None))
    return None


def _constant(model, name: str, value: np.ndarray) -> str:
    from onnx import numpy_helper

    model.graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def _split_layer_norm(model, node, nodes_out: list, index: int) -> None:
    from onnx import helper

    axis = _attribute(node, "axis", -1)
    if axis >= 0:
        raise SiloError(f"{node.name}: LayerNormalization with a non-negative axis cannot be "
                        "rewritten without the input's rank")
    eps = float(_attribute(node, "epsilon", 1e-5))
    x = node.input[0]
    mean_out, inv_std_out = (list(node.output) + ["", ""])[1:3]
    prefix = f"{node.name or 'layer_norm'}_{index}_stats"
    axes = _constant(model, f"{prefix}_axes", np.arange(axis, 0, dtype=np.int64))
    epsilon = _constant(model, f"{prefix}_eps", np.array(eps, np.float32))
    mean = mean_out or f"{prefix}_mean"
    nodes_out.append(helper.make_node("ReduceMean", [x, axes], [mean], keepdims=1,
                                      name=f"{prefix}_mean"))
    if inv_std_out:
        nodes_out += [
            helper.make_node("Sub", [x, mean], [f"{prefix}_centred"], name=f"{prefix}_sub"),
            helper.make_node("Mul", [f"{prefix}_centred", f"{prefix}_centred"],
                             [f"{prefix}_square"], name=f"{prefix}_square"),
            helper.make_node("ReduceMean", [f"{prefix}_square", axes], [f"{prefix}_var"],
                             keepdims=1, name=f"{prefix}_var"),
            helper.make_node("Add", [f"{prefix}_var", epsilon], [f"{prefix}_var_eps"],
                             name=f"{prefix}_add"),
            helper.make_node("Sqrt", [f"{prefix}_var_eps"], [f"{prefix}_std"],
                             name=f"{prefix}_sqrt"),
            helper.make_node("Reciprocal", [f"{prefix}_std"], [inv_std_out],
                             name=f"{prefix}_inv_std"),
        ]
    del node.output[1:]


def _resize_as_matmuls(model, shapes, node, index: int) -> list:
    from onnx import helper

    if _attribute(node, "mode", b"nearest") not in (b"cubic", "cubic"):
        raise SiloError(f"{node.name}: only cubic antialiased Resize nodes can be rewritten")
    sizes = _initializer(model, node.input[3]) if len(node.input) > 3 and node.input[3] else None
    shape = _static_shape(shapes, node.input[0])
    if sizes is None or shape is None or len(shape) != 4:
        raise SiloError(f"{node.name}: Resize needs static 4-D sizes to be rewritten")
    (in_h, in_w), (out_h, out_w) = shape[2:], [int(v) for v in sizes[2:]]
    if out_h < in_h or out_w < in_w:
        raise SiloError(f"{node.name}: only upsampling Resize nodes are rewritten")
    prefix = f"{node.name or 'resize'}_{index}"
    rows = _constant(model, f"{prefix}_rows", bicubic_aa_matrix(in_h, out_h).astype(np.float32))
    cols_t = _constant(model, f"{prefix}_cols_t",
                       np.ascontiguousarray(bicubic_aa_matrix(in_w, out_w).T, np.float32))
    return [helper.make_node("MatMul", [rows, node.input[0]], [f"{prefix}_rows_out"],
                             name=f"{prefix}_rows"),
            helper.make_node("MatMul", [f"{prefix}_rows_out", cols_t], [node.output[0]],
                             name=f"{prefix}_cols")]


def _static_shape(model, name: str) -> list[int] | None:
    for value in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        if value.name == name:
            dims = value.type.tensor_type.shape.dim
            return [d.dim_value for d in dims] if all(d.dim_value for d in dims) else None
    return None


def make_parser_clean(model) -> list[str]:
    """Rewrite ``model`` (an ``onnx.ModelProto``, in place); returns one line per rewrite."""
    import onnx

    shapes = onnx.shape_inference.infer_shapes(model)  # read, not kept: the file stays small
    rewritten, nodes = [], []
    for index, node in enumerate(model.graph.node):
        if node.op_type == "LayerNormalization" and sum(1 for o in node.output if o) > 1:
            nodes.append(node)
            _split_layer_norm(model, node, nodes, index)
            rewritten.append(f"{node.name}: LayerNormalization statistics recomputed")
        elif node.op_type == "Resize" and _attribute(node, "antialias", 0):
            nodes.extend(_resize_as_matmuls(model, shapes, node, index))
            rewritten.append(f"{node.name}: antialiased cubic Resize as two MatMuls")
        else:
            nodes.append(node)
    if rewritten:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        used = {name for n in model.graph.node for name in n.input}
        unused = [t for t in model.graph.initializer if t.name not in used]
        for tensor in unused:
            model.graph.initializer.remove(tensor)
    return rewritten
