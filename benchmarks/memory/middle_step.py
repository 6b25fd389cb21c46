"""One step of a bundle's schedule, prepared for timing: the middle timestep, on fixed random
latents (seed 0) and the bundle's own context. Shared by the scripts in this folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def middle_step(graphs, bundle: Path, manifest):
    """``graphs.single_step(...)`` (a zero-argument callable) at the middle of the schedule."""
    rng = np.random.default_rng(0)
    shape = tuple(manifest.latent_shape)
    middle = len(manifest.schedule.timesteps) // 2
    context = np.load(Path(bundle) / manifest.context.file).astype(np.float32)
    return graphs.single_step(
        rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(shape, dtype=np.float32),
        context, np.array([manifest.schedule.timesteps[middle]], np.float32),
        np.asarray(manifest.schedule.coefficients[middle], np.float32),
        rng.standard_normal(shape, dtype=np.float32), manifest.eta, manifest.sigma_y)
