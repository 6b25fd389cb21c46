"""The step graph as ONNX Runtime's ``--memory low`` loads it (CPU only).

ONNX Runtime's ``fast`` session holds about two copies of every weight: the step reads each
weight as the forward does and, transposed or flipped, as its backward does, and the session
folds and prepacks one constant per layout (sd15: 6.5 GiB for 3.2 GB of weights). ``low``
lists the weights whose layers do little work per weight byte as graph inputs as well
(overridable initializers, a standard ONNX feature): ONNX Runtime neither folds nor prepacks
them, so it holds them once, mapped from the weight file, and each step derives what a kernel
needs. Two choices keep that cheap (sd15-random, ``benchmarks/memory/README.md``):

* only weights applied to at most :data:`WEIGHT_MAX_ROWS` rows (output pixels or tokens) are
  held as stored: these are most of the bytes (the low-resolution levels), while a kernel
  that re-derives its weight each step costs most at high resolution, where weights are small;
* the backward of a convolution whose weight is held as stored reads that weight as it is, as
  a ``ConvTranspose``, instead of a flipped, transposed copy made every step (ONNX Runtime's
  ``Slice`` with negative steps alone took 1.4 s of an 11 s profiled step).
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np

WEIGHT_MIN_ELEMENTS = 4096
"""``low`` holds float initializers at least this large as they are stored; smaller ones
(biases, norms, shape constants) stay folded and prepacked."""

WEIGHT_MAX_ROWS = 256
"""… and only those applied to at most this many rows (a convolution's output pixels, a
matrix product's output rows; batch included): SD-1.x at 512 px, the 16×16 and 8×8 levels,
2.7 of its 3.2 GiB of weights. sd15-random, measured with ONNX Runtime's memory pattern on:
7.3 GiB peak at 1.057× ``fast``'s step time, where holding every weight as stored peaked at
6.3 GiB at 1.20×; with the pattern off, as the runtime runs now, 6.2 GiB at 1.063×
(``benchmarks/memory``)."""

_MATRIX_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_LAYOUT_OPS = ("Cast", "Transpose", "Reshape", "Slice")  # a weight read in another layout
_FLOATS = (1, 10)  # onnx.TensorProto.FLOAT, FLOAT16
_INT64_MIN = int(np.iinfo(np.int64).min)


def _rows(node, shapes: dict[str, list[int]]) -> int | None:
    """Rows a weight is applied to in ``node``: output pixels (Conv) or rows (Gemm, MatMul)."""
    out = shapes.get(node.output[0])
    if not out or not all(d > 0 for d in out):
        return None
    if node.op_type in ("Conv", "ConvTranspose"):
        return int(np.prod(out)) // out[1]
    return int(np.prod(out[:-1]))


def weight_rows(model) -> dict[str, int | None]:
    """For each float initializer of ``model`` (an ``onnx.ModelProto``; external data need not
    be loaded), the most rows any matrix op applies it to, directly or through a cast,
    transpose, reshape or slice of it; None where no matrix op reads it."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*inferred.graph.value_info, *inferred.graph.output)}
    consumers = collections.defaultdict(list)
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            consumers[name].append((node, index))
    rows: dict[str, int | None] = {}
    for weight in model.graph.initializer:
        if weight.data_type not in _FLOATS:
            continue
        found, reach = [], [weight.name]
        while reach:
            for node, index in consumers[reach.pop()]:
                if node.op_type in _LAYOUT_OPS and index == 0:
                    reach.append(node.output[0])
                elif node.op_type in _MATRIX_OPS and index == 1:
                    found.append(_rows(node, shapes))
        known = [r for r in found if r is not None]
        rows[weight.name] = max(known) if known else None
    return rows


def held_as_stored(model, min_elements: int = WEIGHT_MIN_ELEMENTS,
                   max_rows: int | None = WEIGHT_MAX_ROWS) -> set[str]:
    """Names of the float initializers ``low`` holds as stored: at least ``min_elements``
    elements, and applied to at most ``max_rows`` rows (None: any; a weight no matrix op
    reads counts as held)."""
    rows = weight_rows(model) if max_rows is not None else {}
    return {w.name for w in model.graph.initializer
            if w.data_type in _FLOATS and int(np.prod(w.dims, dtype=np.int64)) >= min_elements
            and (max_rows is None or (rows[w.name] or 0) <= max_rows)}


def _constant_values(model) -> dict[str, list]:
    """Small integer constants (initializers and Constant nodes) by name, as lists."""
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t).tolist() for t in model.graph.initializer
              if t.data_type == 7 and int(np.prod(t.dims, dtype=np.int64)) <= 8}  # INT64
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensor = node.attribute[0].t
            if tensor.data_type == 7 and int(np.prod(tensor.dims, dtype=np.int64)) <= 8:
                values[node.output[0]] = numpy_helper.to_array(tensor).tolist()
    return values


def _flipped_weight(node, producer: dict, constants: dict):
    """``(transpose, slice)`` where ``node`` is ``Conv(g, Transpose(Slice(W)))`` with the
    slice flipping both spatial axes, the transpose swapping the channel axes, stride 1 and
    one group: a convolution's input gradient as the exporter writes it; else None."""
    from onnx import helper

    if node.op_type != "Conv" or len(node.input) != 2:
        return None
    swap = producer.get(node.input[1])
    flip = producer.get(swap.input[0]) if swap is not None else None
    if (flip is None or swap.op_type != "Transpose" or flip.op_type != "Slice"
            or [list(a.ints) for a in swap.attribute if a.name == "perm"] != [[1, 0, 2, 3]]
            or len(flip.input) != 5):
        return None
    starts, ends, axes, steps = (constants.get(name) for name in flip.input[1:])
    if not (starts == [-1, -1] and ends == [_INT64_MIN, _INT64_MIN] and axes == [2, 3]
            and steps == [-1, -1]):
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if (attrs.get("group", 1) != 1 or list(attrs.get("strides", [1, 1])) != [1, 1]
            or attrs.get("auto_pad", b"NOTSET") != b"NOTSET"
            or len(attrs.get("kernel_shape", [])) != 2):
        return None
    return swap, flip


def conv_gradients_as_transposed(model, weights: set[str]) -> int:
    """Rewrite, in place, each ``Conv(g, Transpose(Slice(W)))`` that the exporter wrote for a
    convolution's input gradient (``W`` flipped in both spatial axes, its channel axes
    swapped; stride 1, one group) into ``ConvTranspose(g, W)``, the same function reading
    ``W`` as stored, where ``W`` (or the tensor it is cast from) is in ``weights``. Returns
    how many were rewritten; the slices and transposes left unread are removed."""
    from onnx import helper

    graph = model.graph
    constants = _constant_values(model)
    producer = {out: node for node in graph.node for out in node.output}

    def source(name: str) -> str:
        node = producer.get(name)
        return node.input[0] if node is not None and node.op_type == "Cast" else name

    nodes, replaced, rewritten = [], set(), 0
    for node in graph.node:
        match = _flipped_weight(node, producer, constants)
        if match is None or source(match[1].input[0]) not in weights:
            nodes.append(node)
            continue
        swap, flip = match
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        kernel = list(attrs["kernel_shape"])
        dilations = list(attrs.get("dilations", [1, 1]))
        # the flipped convolution pads by reach - p where the forward padded by p
        pads = [dilations[i % 2] * (kernel[i % 2] - 1) - p
                for i, p in enumerate(attrs.get("pads", [0, 0, 0, 0]))]
        if min(pads) < 0:
            nodes.append(node)
            continue
        nodes.append(helper.make_node(
            "ConvTranspose", [node.input[0], flip.input[0]], list(node.output),
            name=f"{node.name}_transposed", kernel_shape=kernel, dilations=dilations,
            strides=[1, 1], pads=pads, group=1))
        replaced.update((swap.output[0], flip.output[0]))
        rewritten += 1
    # drop the transposes, then the slices, that nothing reads any more
    for _ in range(2):
        read = {name for n in nodes for name in n.input} | {o.name for o in graph.output}
        nodes = [n for n in nodes if n.output[0] not in replaced or n.output[0] in read]
    del graph.node[:]
    graph.node.extend(nodes)
    return rewritten


def low_memory_model(path: Path, min_elements: int = WEIGHT_MIN_ELEMENTS,
                     max_rows: int | None = WEIGHT_MAX_ROWS) -> bytes:
    """The ONNX model at ``path`` as ``low`` loads it, serialized without its external data:
    the weights :func:`held_as_stored` also listed as graph inputs (nothing feeds them, so
    each keeps its stored value), and their convolutions' input gradients rewritten by
    :func:`conv_gradients_as_transposed`."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    held = held_as_stored(model, min_elements, max_rows)
    listed = {i.name for i in model.graph.input}
    for weight in model.graph.initializer:
        if weight.name in held and weight.name not in listed:
            model.graph.input.append(onnx.helper.make_tensor_value_info(
                weight.name, weight.data_type, list(weight.dims)))
    conv_gradients_as_transposed(model, held)
    return model.SerializeToString()
