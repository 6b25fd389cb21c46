"""Step time of bundle B against bundle A (same model, e.g. ``--attention recompute`` vs
``keep``), interleaved in one process so that a machine whose speed drifts disturbs both:

    python benchmarks/memory/step_time_ratio.py A B [--backend ort|openvino] [--rounds 15]
        [--memory fast low]   # ORT: how each holds its weights (A B may be one bundle)
        [--pattern on off]    # ORT: each with or without a memory pattern (the runtime: off)

Each round runs one step of A, then one of B (the order alternates every round), on the same
fixed inputs (the middle of A's schedule). Prints one JSON line: each bundle's median step
seconds, and the median of the per-round ratios B/A ("paired"). Both bundles' step graphs
are loaded at once: for models that do not fit twice, compare the per-step seconds of
``benchmarks/sd15_memory.py restore`` instead.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from middle_step import middle_step


def _graphs(bundle: Path, backend: str, memory: str = "fast", pattern: str = "off"):
    from silo_rt.bundle_format import load_manifest

    manifest = load_manifest(bundle, verify=False)
    if backend == "openvino":
        from silo_rt.runtime.openvino_backend import OpenVinoGraphs

        return OpenVinoGraphs(bundle, manifest, threads=2), manifest
    from silo_rt.runtime.ort_backend import OrtGraphs

    graphs = OrtGraphs(bundle, manifest, providers=["CPUExecutionProvider"], threads=2,
                       memory=memory)
    graphs._options.enable_mem_pattern = pattern == "on"
    return graphs, manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--backend", choices=("ort", "openvino"), default="ort")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--memory", nargs=2, default=["fast", "fast"],
                        help="ORT's memory mode for A and B")
    parser.add_argument("--pattern", nargs=2, default=["off", "off"], choices=("on", "off"),
                        help="ORT's memory pattern for A and B")
    args = parser.parse_args()
    calls = []
    for bundle, memory, pattern in zip((args.a, args.b), args.memory, args.pattern):
        graphs, m = _graphs(bundle, args.backend, memory, pattern)
        call = middle_step(graphs, bundle, m)
        call()  # first run: allocation, arena shrink
        calls.append(call)
    seconds = [[], []]
    for i in range(args.rounds):
        for which in ((0, 1) if i % 2 == 0 else (1, 0)):
            start = time.perf_counter()
            calls[which]()
            seconds[which].append(time.perf_counter() - start)
    ratios = [b / a for a, b in zip(*seconds)]
    print(json.dumps({"a": str(args.a), "b": str(args.b), "backend": args.backend,
                      "memory": args.memory, "pattern": args.pattern,
                      "rounds": args.rounds,
                      "median_step_s": [round(float(np.median(s)), 4) for s in seconds],
                      "paired_ratio_b_over_a": round(float(np.median(ratios)), 4),
                      "ratio_of_medians": round(float(np.median(seconds[1])
                                                      / np.median(seconds[0])), 4)}))


if __name__ == "__main__":
    main()
