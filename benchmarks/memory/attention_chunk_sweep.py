"""Time and memory of one attention's forward + backward as the step graph computes it, by
chunk size (#26: choosing ``--attention-chunk``).

    python benchmarks/memory/attention_chunk_sweep.py OUT.json [--tokens 4096] [--heads 8]
        [--dim 40] [--chunks keep 4096 2048 1024 512 256] [--repeats 5] [--threads 2]

The graph is the vector-Jacobian product of ``softmax(q kᵀ) v`` for ``q, k, v (heads, tokens,
dim)``, exported the way the step exports it: ``keep`` is autograd's backward (the
probabilities kept from the forward), a number is :class:`RecomputedAttention` with that many
query rows a chunk. The defaults are Stable Diffusion 1.x's largest attention at 512 px
(64×64 latent: 4096 tokens, 8 heads of 40). Each variant runs in its own process under ONNX
Runtime with the runtime's session options: peak RSS above the loaded session (VmHWM reset
after loading) and the median seconds of ``--repeats`` runs after a first one. Writes the
record to OUT.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def _graph(path: Path, variant: str, tokens: int, heads: int, dim: int) -> None:
    import torch

    from silo_rt.export.attention import RecomputedAttention
    from silo_rt.export.onnx_writer import export_step

    def attention(q, k, v):
        if variant == "keep":
            return torch.bmm(torch.bmm(q, k.transpose(1, 2)).softmax(-1), v)
        return RecomputedAttention.apply(q, k, v, int(variant), False)

    class Vjp(torch.nn.Module):
        """``(dq, dk, dv)`` of the attention at ``(q, k, v)`` for the output gradient."""

        def forward(self, q, k, v, grad_out):
            return torch.func.vjp(attention, q, k, v)[1](grad_out)

    inputs = tuple(torch.randn(heads, tokens, dim) for _ in range(4))
    export_step(Vjp(), inputs, ["q", "k", "v", "grad_out"], ["dq", "dk", "dv"], path,
                attention="keep" if variant == "keep" else "recompute")


def _measure(variant: str, tokens: int, heads: int, dim: int, repeats: int,
             threads: int) -> dict:
    import time

    import numpy as np
    import onnxruntime as ort

    from silo_rt.bench.memory import Stages
    from silo_rt.runtime.ort_backend import use_env_arena  # the runtime's own arena

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "attention.onnx"
        _graph(path, variant, tokens, heads, dim)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        use_env_arena(ort, options)
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        nodes = sum(1 for _ in __import__("onnx").load(str(path)).graph.node)
    rng = np.random.default_rng(0)
    feeds = {name: rng.standard_normal((heads, tokens, dim), dtype=np.float32)
             for name in ("q", "k", "v", "grad_out")}
    stages = Stages()
    stages.mark("loaded")
    first = ort.RunOptions()  # as the runtime's first run: the arena shrinks afterwards
    first.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    session.run(None, feeds, first)
    stages.mark("first run")
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feeds)
        seconds.append(time.perf_counter() - start)
    stages.mark("timed runs")
    loaded = stages.rows[0][1]
    return {"variant": variant, "onnx_nodes": nodes,
            "median_s": round(float(np.median(seconds)), 4),
            "seconds": [round(s, 4) for s in seconds],
            "peak_above_loaded_mib": round(max(r[2] for r in stages.rows[1:]) - loaded, 1),
            "stages_mib": stages.rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=40)
    parser.add_argument("--chunks", nargs="+", default=["keep", "4096", "2048", "1024", "512",
                                                        "256"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child process: one variant
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_measure(args.one, args.tokens, args.heads, args.dim, args.repeats,
                                  args.threads)))
        return
    from silo_rt.records import record_header, save_record

    record = {**record_header("benchmarks/memory/attention_chunk_sweep.py", sys.argv[1:]),
              "shape": [args.heads, args.tokens, args.dim], "variants": []}
    for variant in args.chunks:
        child = [sys.executable, __file__, str(args.out), "--one", variant,
                 "--tokens", str(args.tokens), "--heads", str(args.heads), "--dim",
                 str(args.dim), "--repeats", str(args.repeats), "--threads", str(args.threads)]
        line = subprocess.run(child, check=True, capture_output=True, text=True).stdout
        record["variants"].append(json.loads(line.strip().splitlines()[-1]))
        print(json.dumps(record["variants"][-1]), flush=True)
    save_record(args.out, record)


if __name__ == "__main__":
    main()
