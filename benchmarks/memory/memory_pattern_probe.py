"""Peak RSS of four single-step restorations' worth of ``run_steps`` calls on one bundle, with
and without ONNX Runtime's memory pattern (the tiled path calls ``run_steps`` once per tile
and step like this):

    python benchmarks/memory/memory_pattern_probe.py BUNDLE --memory fast|low --pattern on|off

Prints one JSON line: the peak (VmHWM, MiB) and each call's seconds (the first call includes
loading the step). Fresh process per point: the peak spreads from run to run, run it twice.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _peak_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--memory", default="fast", choices=("fast", "low"))
    parser.add_argument("--pattern", default="off", choices=("on", "off"))
    parser.add_argument("--calls", type=int, default=4)
    args = parser.parse_args()

    from silo_rt.bundle_format import load_manifest
    from silo_rt.runtime.ort_backend import OrtGraphs

    manifest = load_manifest(args.bundle, verify=False)
    graphs = OrtGraphs(args.bundle, manifest, providers=["CPUExecutionProvider"], threads=2,
                       memory=args.memory)
    graphs._options.enable_mem_pattern = args.pattern == "on"
    rng = np.random.default_rng(0)
    shape = tuple(manifest.latent_shape)
    z = rng.standard_normal(shape, dtype=np.float32)
    w = rng.standard_normal(shape, dtype=np.float32)
    context = np.load(args.bundle / manifest.context.file).astype(np.float32)
    seconds = []
    for call in range(args.calls):
        one = slice(call, call + 1)
        start = time.perf_counter()
        z = graphs.run_steps(z, w, context, np.asarray(manifest.schedule.timesteps[one]),
                             np.asarray(manifest.schedule.coefficients[one], np.float32),
                             rng.standard_normal((1, *shape), dtype=np.float32),
                             manifest.eta, manifest.sigma_y)
        seconds.append(round(time.perf_counter() - start, 2))
    print(json.dumps({"bundle": args.bundle.name, "memory": args.memory,
                      "pattern": args.pattern, "peak_mib": round(_peak_mib()),
                      "call_seconds": seconds}))


if __name__ == "__main__":
    main()
