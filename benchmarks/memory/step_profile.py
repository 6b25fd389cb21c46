"""Where one step's time goes under ONNX Runtime: its profiler over the third run of the step
graph (the first two allocate and plan), summed by operator type and, for convolutions, by
direction, kernel and input shape:

    python benchmarks/memory/step_profile.py BUNDLE [--memory fast|low]

Prints one JSON object. Run under ``with_low_threshold.py`` to profile another ``low`` rule.
Profiled kernels run slower than unprofiled ones; compare two profiles with each other only.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
from pathlib import Path

from middle_step import middle_step


def _conv_groups(model_path: Path, per_node: dict[str, tuple[str, float]]) -> list:
    """Seconds of the convolutions (and the transposed convolutions ``low`` writes for their
    input gradients), grouped by direction (``backward``: reads a derived or rewritten
    weight), kernel and input channels × height × width."""
    import onnx

    model = onnx.shape_inference.infer_shapes(
        onnx.load(str(model_path), load_external_data=False))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*model.graph.value_info, *model.graph.input)}
    producer = {out: n for n in model.graph.node for out in n.output}
    groups = collections.defaultdict(lambda: [0, 0.0])
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        base = node.name.removeprefix("node_")
        # ONNX Runtime renames: NCHWc convolutions get "_nchwc"; low's rewrite "_transposed"
        found = [per_node[k] for k in (node.name, f"{base}_nchwc", f"{node.name}_transposed")
                 if k in per_node]
        if not found:
            continue
        op, seconds = found[0]
        weight = producer.get(node.input[1])
        direction = ("backward" if node.op_type == "ConvTranspose"
                     or (weight is not None and weight.op_type == "Transpose") else "forward")
        kernel = next(list(a.ints) for a in node.attribute if a.name == "kernel_shape")
        key = (direction, f"{kernel[0]}x{kernel[1]}",
               "x".join(map(str, shapes.get(node.input[0], [])[1:])), op)
        groups[key][0] += 1
        groups[key][1] += seconds
    return sorted(([*key, count, round(seconds, 4)] for key, (count, seconds) in groups.items()),
                  key=lambda row: -row[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--memory", default="fast", choices=("fast", "low"))
    args = parser.parse_args()

    from silo_rt.bundle_format import load_manifest
    from silo_rt.runtime.ort_backend import OrtGraphs

    manifest = load_manifest(args.bundle, verify=False)
    graphs = OrtGraphs(args.bundle, manifest, providers=["CPUExecutionProvider"], threads=2,
                       memory=args.memory)
    folder = tempfile.mkdtemp()
    graphs._options.enable_profiling = True
    graphs._options.profile_file_prefix = os.path.join(folder, "step")
    step = middle_step(graphs, args.bundle, manifest)
    for _ in range(3):
        step()
    events = json.loads(Path(graphs.session(graphs.step_graph).end_profiling()).read_text())
    last = [e for e in events if e.get("name") == "model_run"][-1]
    per_type = collections.defaultdict(lambda: [0, 0.0])
    per_node = {}
    for e in events:
        if (e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
                and last["ts"] <= e["ts"] <= last["ts"] + last["dur"]):
            op = e["args"].get("op_name")
            per_type[op][0] += 1
            per_type[op][1] += e["dur"] / 1e6
            per_node[e["name"].removesuffix("_kernel_time")] = (op, e["dur"] / 1e6)
    print(json.dumps({
        "bundle": args.bundle.name, "memory": args.memory, "label": graphs.label,
        "profiled_run_s": round(last["dur"] / 1e6, 3),
        "by_operator": sorted(([op, n, round(s, 4)] for op, (n, s) in per_type.items()),
                              key=lambda row: -row[-1])[:25],
        "convolutions": _conv_groups(manifest.graph_file(args.bundle, graphs.step_graph),
                                     per_node)}))


if __name__ == "__main__":
    main()
