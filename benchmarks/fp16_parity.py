"""The fp16 step graph (``export --precision fp16``) against the fp32 one, through ONNX Runtime
on the CPU: per-step relative error of z_prev at ten timesteps (same random z, w, noise) and
the end-to-end difference of a whole restoration (same seed), with the PyTorch reference.

    python benchmarks/fp16_parity.py MODEL ARCH TASK STEPS     (e.g. tiny readout sr4 12)

Prints one JSON line; the bundle is cached under /tmp/fp16-parity/. Random-weight priors:
the numbers measure fp16 rounding, not restoration quality.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from silo_rt.export import ExportOptions, export_bundle
from silo_rt.operators import OperatorConfig, build_operator
from silo_rt.prior import load_prior
from silo_rt.runtime import BundleRunner
from silo_rt.sampler import SamplingOptions, restore


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))

model, arch, task, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
prior = load_prior(model)
size = prior.default_image_size
torch.manual_seed(0)
config = OperatorConfig.for_prior(prior, arch, task)
operator = build_operator(config).eval().requires_grad_(False)
options = SamplingOptions(task, steps=steps, seed=2)
side = size // (4 if task == "sr4" else 8 if task == "sr8" else 1)
y = np.random.default_rng(0).uniform(-1, 1, (1, 3, side, side)).astype(np.float32)
out = Path(f"/tmp/fp16-parity/{model}-{arch}-{task}")
out.parent.mkdir(exist_ok=True)
if not (out / "manifest.json").exists():
    t = time.time()
    export_bundle(prior, operator, config,
                  ExportOptions(options, size, include_unet_h=False, precision="fp16"), out)
    print("export s", round(time.time() - t))
reference = restore(prior, operator, torch.from_numpy(y), options).numpy()
r32 = BundleRunner(out, backend="ort", threads=2, precision="fp32")
r16 = BundleRunner(out, backend="ort", threads=2, precision="fp16")
x32 = r32.restore(y, seed=2)
x16 = r16.restore(y, seed=2)
# per-step: one step from the same z at every 10th timestep
ts, cs = r32.schedule()
rng = np.random.default_rng(1)
shape = tuple(r32.manifest.latent_shape)
per_step = []
for i in range(0, len(ts), max(1, len(ts) // 10)):
    z = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal(shape).astype(np.float32)
    n = rng.standard_normal((1,) + shape).astype(np.float32)
    a = r32.graphs.run_steps(z, w, r32.context, ts[i:i+1], cs[i:i+1], n, 0.5, 0.02, None)
    b = r16.graphs.run_steps(z, w, r16.context, ts[i:i+1], cs[i:i+1], n, 0.5, 0.02, None)
    per_step.append(rel(b, a))
res = {"model": model, "arch": arch, "task": task, "steps": steps,
       "ort_fp32_vs_reference": rel(x32, reference), "ort_fp16_vs_reference": rel(x16, reference),
       "fp16_vs_fp32_end_to_end": rel(x16, x32),
       "psnr_fp16_vs_fp32_db": float(10 * np.log10(4 / np.mean((x16 - x32) ** 2))),
       "per_step_rel_err_max": max(per_step), "per_step_rel_err_median": float(np.median(per_step))}
print(json.dumps(res))
