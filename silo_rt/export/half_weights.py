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

import copy
from pathlib import Path

import numpy as np
import torch

MIN_ELEMENTS = 16  # tiny constants stay float32: nothing to save, one node fewer


@torch.no_grad()
def round_module_to_fp16(module: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``module`` with float32 tensors rounded to float16 precision."""
    rounded = copy.deepcopy(module)
    for tensor in list(rounded.parameters()) + list(rounded.buffers()):
        if tensor.dtype == torch.float32:
            tensor.copy_(tensor.half().float())
    return rounded


def store_exact_fp16_initializers(path: Path,
                                  external: bool = False) -> tuple[int, int, list[Path]]:
    """Rewrite the ONNX file at ``path`` in place.

    ``external``: the graph keeps its weights in external data files beside it (graphs over
    1.5 GB); they are read, and the rewritten weights are saved again as one external file
    ``<name>.data`` (the old data files are removed).

    Returns ``(float32 initializers converted, bytes saved, the files that now make up the
    graph: path first)``.
    """
    import onnx
    from onnx import helper, numpy_helper

    path = Path(path)
    old_data = _external_files(path) if external else []
    model = onnx.load(str(path), load_external_data=True)
    graph = model.graph
    kept, casts, converted, saved = [], [], 0, 0
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            kept.append(init)
            continue
        values = numpy_helper.to_array(init)
        with np.errstate(over="ignore"):  # beyond float16's range: not exact, kept float32
            half = values.astype(np.float16)
        if values.size < MIN_ELEMENTS or not np.array_equal(half.astype(np.float32), values):
            kept.append(init)
            continue
        stored = f"{init.name}__fp16"
        kept.append(numpy_helper.from_array(half, stored))
        casts.append(helper.make_node("Cast", [stored], [init.name], to=onnx.TensorProto.FLOAT,
                                      name=f"{init.name}__cast"))
        converted += 1
        saved += values.nbytes - half.nbytes
    if not converted:
        return 0, 0, [path, *old_data]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    if not external:
        onnx.save(model, str(path))
        return converted, saved, [path]
    for data in old_data:
        data.unlink()
    location = f"{path.name}.data"
    # small tensors (shape constants) stay in the graph, where shape inference reads them
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=1024)
    return converted, saved, [path, path.parent / location]


def _external_files(path: Path) -> list[Path]:
    """The external data files the graph at ``path`` refers to (relative to its folder)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    names = {ExternalDataInfo(t).location for t in model.graph.initializer
             if uses_external_data(t)}
    return sorted(path.parent / name for name in names)
