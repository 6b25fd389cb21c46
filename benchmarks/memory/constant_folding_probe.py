"""Memory and time of a bundle's ONNX Runtime step with and without constant folding:

    python benchmarks/memory/constant_folding_probe.py BUNDLE ConstantFolding|- STEPS

The step graph reads every weight in two layouts (the forward's and the VJP's: transposed
MatMul weights, flipped convolution weights); ONNX Runtime's constant folding stores both.
``ConstantFolding`` disables that optimiser (the second layout is then computed every run),
``-`` keeps the runtime's options as they are. The session gets the runtime's own options
(``OrtGraphs``); prints one JSON line: peak RSS by stage (session, first step, the rest),
the resident anonymous/file-backed MiB at the end, the median step seconds.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from middle_step import middle_step

from silo_rt.bench.memory import Stages


def main() -> None:
    bundle, disabled, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    disabled = [] if disabled == "-" else disabled.split(",")
    stages = Stages()
    stages.mark("interpreter")
    import onnxruntime as ort

    from silo_rt.bundle_format import load_manifest
    from silo_rt.runtime.ort_backend import OrtGraphs

    manifest = load_manifest(bundle, verify=False)
    graphs = OrtGraphs(bundle, manifest, providers=["CPUExecutionProvider"], threads=2)
    # the runtime's session options, with the optimisers named on the command line disabled
    graphs._sessions["step"] = ort.InferenceSession(
        str(manifest.graph_file(bundle, "step")), graphs._options,
        providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
    stages.mark("load step")
    call = middle_step(graphs, bundle, manifest)
    call()
    stages.mark("step 1")
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    stages.mark(f"steps 2-{steps + 1}")
    kinds = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                kinds[key] = round(int(value.split()[0]) / 1024, 1)
    print(json.dumps({"disabled_optimizers": disabled, "step_seconds": seconds,
                      "median_step_s": round(float(np.median(seconds)), 3),
                      "peak_mib": stages.peak, "stages_mib": stages.rows,
                      "rss_at_end_mib": kinds}))


if __name__ == "__main__":
    main()
