"""The median over several `silo-rt bench --json` runs of the same configuration: step and
restoration times per backend and their paired speed-ups over PyTorch eager.

    python benchmarks/median_of_runs.py run1.json run2.json run3.json > medians.md
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def main(paths: list[str]) -> None:
    runs = [json.loads(Path(p).read_text()) for p in paths]
    configs = {json.dumps({k: v for k, v in r["config"].items() if k not in ("log", "cache")},
                          sort_keys=True, default=str) for r in runs}
    if len(configs) != 1:
        raise SystemExit("the runs have different configurations")
    cpus = {r["machine"].get("cpu_id") for r in runs}
    print(f"Median of {len(runs)} runs ({', '.join(Path(p).name for p in paths)}); "
          f"CPU {', '.join(sorted(str(c) for c in cpus))}.\n")
    print("| backend | step ms (runs) | step vs eager, paired | restoration s (runs) | "
          "restoration vs eager, paired |")
    print("|---|---|---|---|---|")
    backends = [m["backend"] for m in runs[0]["measurements"] if m["measure"] == "step"]
    for backend in backends:
        steps = [next(m for m in r["measurements"] if m["backend"] == backend
                      and m["measure"] == "step") for r in runs]
        rests = [next((x for x in r["restorations"] if x["backend"] == backend), None)
                 for r in runs]
        step_ms = [s["median_ms"] for s in steps]
        step_x = [s.get("paired_speedup_vs_torch", 1.0) for s in steps]
        line = (f"| {backend} | {statistics.median(step_ms):.1f} "
                f"({', '.join(f'{v:.0f}' for v in step_ms)}) | "
                f"{statistics.median(step_x):.2f}x ({', '.join(f'{v:.2f}' for v in step_x)}) |")
        if all(rests):
            total = [x["total_s"] for x in rests]
            rx = [x.get("paired_speedup_vs_torch", 1.0) for x in rests]
            line += (f" {statistics.median(total):.2f} ({', '.join(f'{v:.2f}' for v in total)})"
                     f" | {statistics.median(rx):.2f}x ({', '.join(f'{v:.2f}' for v in rx)}) |")
        else:
            line += " | |"
        print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
