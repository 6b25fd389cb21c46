"""Bench results: the JSON schema, the ratios derived from the timings, and their rendering
(terminal table, Markdown, PNG bar chart).

JSON schema ``silo-rt-bench/1`` (all times in ms unless the key says ``_s``)::

    schema        "silo-rt-bench/1"
    created       UTC timestamp
    machine       {platform, python, processor, cpus, cpu_model?, cpu_id?, cpu_flags?}
                  cpu_flags: the vector extensions of /proc/cpuinfo that decide kernel
                  choice (avx2, avx512f, avx512_bf16, amx_bf16, ...), those present
    versions      {package: version}
    config        the BenchConfig fields + image_size, operator_label, prior_random_weights
    export_s      seconds spent exporting the bench bundle (null when cached or given)
    measurements  [{backend, measure, median_ms, p90_ms, min_ms, reps, samples_ms?,
                    speedup_vs_torch?, paired_speedup_vs_torch?,
                    achieved_fraction? (step only)}]
                  measure ∈ unet_h | vae_encoder | vae_decoder | step
                  samples_ms: the CPU backends' step times in round order (interleaved)
    restorations  [{backend, steps, total_s, per_step_ms, reps?, p90_s?, samples_s?,
                    speedup_vs_torch?, paired_speedup_vs_torch?, rel_diff_vs_torch?}]
                  total_s is the median of ``reps`` runs, interleaved across backends;
                  speedup_vs_torch = torch's median / this median;
                  paired_speedup_vs_torch = median over rounds of torch_i / this_i (the
                  two ran back to back in round i), steadier on a drifting machine;
                  rel_diff_vs_torch = ‖x − x_torch‖/‖x_torch‖ of the restored images (same
                  seed), the parity the speed-up was measured at
    baselines     [{method, median_ms, p90_ms, min_ms, reps, silo_time_ratio?}]
                  one decoder-in-the-loop step (torch); silo_time_ratio = SILO step / it
    peak_rss_mib  {backend: peak resident memory of the process after that backend ran}
                  (cumulative: a later backend's figure includes what earlier ones left
                  resident, the PyTorch prior above all; a backend's own peak in a fresh
                  process is what :mod:`.scaling` measures)
    phase_rss_mib {backend: {rss_before, peak}} (optional, Linux): RSS when the backend's
                  setup started and the peak during its setup and graph timings (the step
                  and restoration rounds run later, all backends together)
    floor         {step_flops, matmul_gflops, floor_step_ms,
                   gpu_matmul_gflops_<p>?, gpu_floor_step_ms_<p>? (p = fp32, TF32 off, or
                   fp16: each precision a GPU backend ran in)}
                  achieved_fraction = floor_step_ms / median_ms (for GPU backends the GPU
                  floor of the precision the backend ran: fp16 for trt-fp16, else fp32)
    failed        {backend: one-line error} for backends that raised (optional; absent in
                  results written before it existed). A failing backend never stops the
                  run: the others are still timed and reported; see :func:`all_failed`.
    compiled      {backend: {compile_s, fullgraph, rel_err_vs_torch}} for the torch.compile
                  backends (optional): seconds of the first (compiling) call, kept apart from
                  the step times; whether the step compiled as one graph; ‖z_c − z_e‖/‖z_e‖
                  of z_prev against the eager step on the same inputs
"""

from __future__ import annotations

import statistics
from pathlib import Path

from ..backends import GPU_BACKENDS, runner_backend

SCHEMA = "silo-rt-bench/1"
REQUIRED_KEYS = {"schema", "created", "machine", "versions", "config", "export_s",
                 "measurements", "restorations", "baselines", "peak_rss_mib", "floor"}
MEASUREMENT_KEYS = {"backend", "measure", "median_ms", "p90_ms", "min_ms", "reps"}


def validate(result: dict) -> None:
    """Raise ``ValueError`` if ``result`` does not follow the schema above."""
    missing = REQUIRED_KEYS - set(result)
    if missing or result.get("schema") != SCHEMA:
        raise ValueError(f"not a {SCHEMA} result; missing {sorted(missing)}")
    for m in result["measurements"]:
        if not set(m) >= MEASUREMENT_KEYS:
            raise ValueError(f"measurement lacks {sorted(MEASUREMENT_KEYS - set(m))}")
    for r in result["restorations"]:
        if not {"backend", "steps", "total_s", "per_step_ms"} <= set(r):
            raise ValueError("restoration entry incomplete")
    if not {"step_flops", "matmul_gflops", "floor_step_ms"} <= set(result["floor"]):
        raise ValueError("floor entry incomplete")
    failed = result.get("failed", {})
    if not isinstance(failed, dict) or not all(isinstance(v, str) for v in failed.values()):
        raise ValueError("failed must map backend names to error lines")


def gpu_precision(backend: str) -> str:
    """The arithmetic a GPU backend's step runs in: ``fp16`` for ``trt-fp16``, else ``fp32``
    (TF32 off: the PyTorch-CUDA backends under :func:`~silo_rt.torch_cuda.exact_fp32`,
    TensorRT fp32 with ``BuilderFlag.TF32`` cleared). Its floor is that precision's
    measured matmul rate, not the fp16 tensor-core rate for all."""
    return "fp16" if runner_backend(backend)[1] == "fp16" else "fp32"


def derive_ratios(result: dict) -> None:
    """Add the ratios quoted in reports to ``result`` in place: ``achieved_fraction`` of each
    step, ``speedup_vs_torch`` (and ``paired_speedup_vs_torch``) of each measurement and
    restoration, ``silo_time_ratio`` of each baseline (schema above)."""
    by = {(m["backend"], m["measure"]): m for m in result["measurements"]}
    floor = result["floor"]
    for m in result["measurements"]:
        if m["measure"] == "step":
            gpu_floor = f"gpu_floor_step_ms_{gpu_precision(m['backend'])}"
            on_gpu = m["backend"] in GPU_BACKENDS and gpu_floor in floor
            m["achieved_fraction"] = (floor[gpu_floor if on_gpu else "floor_step_ms"]
                                      / m["median_ms"])
        ref = by.get(("torch", m["measure"]))
        if ref is not None:
            m["speedup_vs_torch"] = ref["median_ms"] / m["median_ms"]
            paired = paired_speedup(ref.get("samples_ms"), m.get("samples_ms"))
            if paired is not None:
                m["paired_speedup_vs_torch"] = paired
    rest = {r["backend"]: r for r in result["restorations"]}
    for r in result["restorations"]:
        if "torch" in rest:
            r["speedup_vs_torch"] = rest["torch"]["total_s"] / r["total_s"]
            paired = paired_speedup(rest["torch"].get("samples_s"), r.get("samples_s"))
            if paired is not None:
                r["paired_speedup_vs_torch"] = paired
    silo = by.get(("torch", "step"))
    for b in result["baselines"]:
        if silo is not None:
            b["silo_time_ratio"] = silo["median_ms"] / b["median_ms"]


def paired_speedup(reference, samples) -> float | None:
    """Median over rounds of ``reference_i / samples_i`` (interleaved samples only).

    Each round timed both backends back to back, so a slow spell of the machine scales
    both sides of a pair; the median of the pair ratios is steadier than the ratio of the
    two medians when the machine's speed drifts during the run.
    """
    if not reference or not samples or len(reference) != len(samples):
        return None
    return statistics.median(a / b for a, b in zip(reference, samples))


def all_failed(result: dict) -> bool:
    """True when every requested backend failed (the CLI's cue for a non-zero exit)."""
    failed = result.get("failed") or {}
    return bool(failed) and set(result["config"]["backends"]) <= set(failed)


def _speedup(entry: dict) -> str:
    text = f"{entry['speedup_vs_torch']:.2f}x vs torch"
    if "paired_speedup_vs_torch" in entry:
        text += f" (paired {entry['paired_speedup_vs_torch']:.2f}x)"
    return text


def _rows(result: dict) -> list[list[str]]:
    rows = []
    for m in result["measurements"]:
        extra = []
        if "speedup_vs_torch" in m and m["backend"] != "torch":
            extra.append(_speedup(m))
        if "achieved_fraction" in m:
            extra.append(f"{100 * m['achieved_fraction']:.1f}% of matmul floor")
        rows.append([m["backend"], m["measure"], f"{m['median_ms']:.2f}", f"{m['p90_ms']:.2f}",
                     ", ".join(extra)])
    for r in result["restorations"]:
        extra = (_speedup(r) if r["backend"] != "torch" and "speedup_vs_torch" in r else "")
        if "rel_diff_vs_torch" in r:
            extra += f", image rel. diff {r['rel_diff_vs_torch']:.1e}"
        rows.append([r["backend"], f"restore {r['steps']} steps",
                     f"{r['total_s'] * 1e3:.0f}", f"{r['per_step_ms']:.2f}/step", extra])
    for backend, error in (result.get("failed") or {}).items():
        rows.append([backend, "failed", "-", "-", error.replace("|", "/")])
    for b in result["baselines"]:
        extra = (f"SILO step = {b['silo_time_ratio']:.2f}x its time"
                 if "silo_time_ratio" in b else "")
        rows.append(["torch", f"{b['method']} step", f"{b['median_ms']:.2f}",
                     f"{b['p90_ms']:.2f}", extra])
    return rows


HEADER = ["backend", "measure", "median ms", "p90 ms", "notes"]


def _title(result: dict) -> str:
    c = result["config"]
    label = " (random weights)" if c.get("prior_random_weights") else ""
    return (f"silo-rt bench: {c['model']}{label}, {c['arch']}/{c['task']}, "
            f"{c['image_size']}px, {c['threads']} threads")


def _footer(result: dict) -> list[str]:
    f = result["floor"]
    lines = [f"one step = {f['step_flops'] / 1e9:.2f} GFLOP; matmul rate "
             f"{f['matmul_gflops']:.1f} GFLOP/s; arithmetic floor {f['floor_step_ms']:.2f} ms/step"]
    for backend, c in (result.get("compiled") or {}).items():
        lines.append(f"{backend}: compiled in {c['compile_s']:.1f} s ("
                     f"{'one graph' if c['fullgraph'] else 'with graph breaks'}), z_prev rel. "
                     f"err vs eager {c['rel_err_vs_torch']:.1e}")
    lines.append("peak RSS: " + ", ".join(f"{k} {v:.0f} MiB"
                                          for k, v in result["peak_rss_mib"].items()))
    return lines


def render_table(result: dict) -> str:
    rows = [HEADER, *_rows(result)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = [_title(result), ""]
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines + [""] + _footer(result))


def render_markdown(result: dict) -> str:
    lines = [f"### {_title(result)}", "", "| " + " | ".join(HEADER) + " |",
             "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(result)]
    lines += [""] + [f"- {line}" for line in _footer(result)]
    m = result["machine"]
    flags = f" ({' '.join(m['cpu_flags'])})" if m.get("cpu_flags") else ""
    lines.append(f"- machine: {m.get('cpu_model', m['processor'])}{flags}, {m['cpus']} CPUs; "
                 + ", ".join(f"{k} {v}" for k, v in result["versions"].items()))
    return "\n".join(lines) + "\n"


def write_plot(result: dict, path: Path) -> None:
    """A PNG bar chart of per-step latency: SILO per backend, and the baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..images import atomic_write

    labels, values = [], []
    for m in result["measurements"]:
        if m["measure"] == "step":
            labels.append(f"SILO {m['backend']}")
            values.append(m["median_ms"])
    for b in result["baselines"]:
        labels.append(f"{b['method'].upper()} torch")
        values.append(b["median_ms"])
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(labels), 3.6))
    bars = ax.bar(labels, values, color=["#3b7dd8" if v.startswith("SILO") else "#b0b0b0"
                                         for v in labels])
    ax.bar_label(bars, fmt="%.1f")
    ax.set_ylabel("ms per step (median)")
    ax.set_title(_title(result), fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
