"""Half-precision weight storage: bundles half the size, computed in float32.

``--weights fp16`` at export (used by the embedded demo, which must fit in a few MB):

1. :func:`round_module_to_fp16` rounds every float32 parameter and buffer of a *copy* of the
   prior and operator to the nearest float16 value (kept as float32), before tracing;
2. :func:`store_exact_fp16_initializers` then rewrites each written graph: every float32
   initializer whose values are all exactly representable in float16 is stored as float16
   and followed by a ``Cast`` to float32. The rewrite is lossless (the graph computes
   bit-for-bit what it did), and ONNX Runtime folds the casts when a session is created,
   so the runtime cost is zero.

Parity with the PyTorch reference holds against the same prior with rounded weights.
"""

from __future__ import annotations

import contextlib
from copy import deepcopy
from pathlib import Path

import numpy as np
import torch

MIN_ELEMENTS = 16  # tiny constants stay float32: nothing to save, one node fewer


@torch.no_grad()
def round_module_to_fp16(module: torch.nn.Module, copy: bool = True) -> torch.nn.Module:
    """``module`` with float32 tensors rounded to float16 precision: a deep copy, or (``copy``
    False) the module itself, rounded in place."""
    rounded = deepcopy(module) if copy else module
    for tensor in list(rounded.parameters()) + list(rounded.buffers()):
        if tensor.dtype == torch.float32:
            tensor.copy_(tensor.half().float())
    return rounded


def store_exact_fp16_initializers(path: Path,
                                  external: bool = False) -> tuple[int, int, list[Path]]:
    """Rewrite the ONNX file at ``path`` in place.

    ``external``: the graph keeps its weights in external data files beside it (graphs over
    1.5 GB); they are read and rewritten one tensor at a time into one external file
    ``<name>.data`` (the old data files are removed), never through the graph's protobuf
    (whose arena would keep every tensor read until the end: SD-1.5's step, 3.4 GB).
    Tensors under :data:`INLINE_BYTES` stay in the graph file, where shape inference reads
    them.

    Returns ``(float32 initializers converted, bytes saved, the files that now make up the
    graph: path first)``.
    """
    import onnx
    from onnx import helper
    from onnx.external_data_helper import uses_external_data

    path = Path(path)
    old_data = _external_files(path) if external else []
    model = onnx.load(str(path), load_external_data=not external)
    location = f"{path.name}.data"
    partial = path.parent / f".{location}.partial"
    kept, casts, converted, saved = [], [], 0, 0
    with open(partial, "wb") if external else contextlib.nullcontext() as sink:
        for init in model.graph.initializer:
            values = _values(init, path.parent)
            half = _exact_fp16(init, values)
            if half is None and not uses_external_data(init):
                kept.append(init)  # unchanged, inline
                continue
            name = init.name if half is None else f"{init.name}__fp16"
            if half is not None:
                casts.append(helper.make_node("Cast", [name], [init.name],
                                              to=onnx.TensorProto.FLOAT,
                                              name=f"{init.name}__cast"))
                converted += 1
                saved += values.nbytes - half.nbytes
            kept.append(_stored(name, values if half is None else half, sink, location))
    if not converted:
        partial.unlink(missing_ok=True)
        return 0, 0, [path, *old_data]
    graph = model.graph
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.save(model, str(path))
    if not external:
        return converted, saved, [path]
    for data in old_data:
        data.unlink()
    partial.replace(path.parent / location)
    return converted, saved, [path, path.parent / location]


INLINE_BYTES = 1024
"""Tensors smaller than this stay inside the graph file (ONNX's own default threshold)."""
ALIGNMENT = 4096
"""External tensors start at multiples of this (a page), so runtimes can map them."""


def _values(init, folder: Path) -> np.ndarray:
    """``init``'s values; external data is read from its file straight into numpy."""
    from onnx import helper, numpy_helper
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    if not uses_external_data(init):
        return numpy_helper.to_array(init)
    info = ExternalDataInfo(init)
    with open(folder / info.location, "rb") as data:
        data.seek(info.offset or 0)
        raw = data.read(info.length) if info.length else data.read()
    dtype = helper.tensor_dtype_to_np_dtype(init.data_type)
    return np.frombuffer(raw, dtype=dtype).reshape(tuple(init.dims))


def _exact_fp16(init, values: np.ndarray) -> np.ndarray | None:
    """``values`` in float16 when ``init`` is a float32 tensor of at least
    :data:`MIN_ELEMENTS` whose values are all exact in float16, else None."""
    import onnx

    if init.data_type != onnx.TensorProto.FLOAT or values.size < MIN_ELEMENTS:
        return None
    with np.errstate(over="ignore"):  # beyond float16's range: not exact, kept float32
        half = values.astype(np.float16)
    return half if np.array_equal(half.astype(np.float32), values) else None


def _stored(name: str, values: np.ndarray, sink, location: str):
    """A tensor ``name`` of ``values``: inline when small or ``sink`` is None, else appended
    to the open file ``sink`` (page-aligned) and pointing at it."""
    import onnx
    from onnx import helper, numpy_helper

    if sink is None or values.nbytes < INLINE_BYTES:
        return numpy_helper.from_array(values, name)
    # built by hand: onnx's set_external_data wants the bytes in raw_data (the protobuf) first
    offset = -sink.tell() % ALIGNMENT + sink.tell()
    sink.write(b"\0" * (offset - sink.tell()))
    sink.write(np.ascontiguousarray(values).tobytes())
    tensor = onnx.TensorProto(name=name, dims=values.shape,
                              data_type=helper.np_dtype_to_tensor_dtype(values.dtype),
                              data_location=onnx.TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", offset),
                       ("length", values.nbytes)):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, str(value)
    return tensor


def _external_files(path: Path) -> list[Path]:
    """The external data files the graph at ``path`` refers to (relative to its folder)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    names = {ExternalDataInfo(t).location for t in model.graph.initializer
             if uses_external_data(t)}
    return sorted(path.parent / name for name in names)
