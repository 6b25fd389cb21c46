"""Algorithm 1 from a bundle, with no PyTorch: encode once, T fused steps, decode once."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SiloError
from ..noise import NoiseSource
from .manifest import read_manifest
from .ort_backend import OrtGraphs, StepCallback


class BundleRunner:
    """A loaded, verified bundle ready to restore measurements.

    Args:
        bundle: the bundle folder written by ``silo-rt export``.
        providers, threads: passed to :class:`~.ort_backend.OrtGraphs`.
        verify: check every file's sha256 against the manifest first.
    """

    def __init__(self, bundle: str | Path, providers: list[str] | None = None,
                 threads: int | None = None, verify: bool = True):
        self.path = Path(bundle)
        self.manifest = read_manifest(self.path, verify=verify)
        self.graphs = OrtGraphs(self.path, self.manifest, providers, threads)
        context_file = self.path / self.manifest["context"]["file"]
        self.context = np.load(context_file, allow_pickle=False).astype(np.float32)

    @property
    def task(self) -> str:
        return self.manifest["task"]

    @property
    def steps(self) -> int:
        return len(self.manifest["schedule"]["timesteps"])

    def check_measurement(self, y: np.ndarray) -> None:
        """Raise :class:`SiloError` if ``y`` does not have the bundle's measurement shape."""
        expected = tuple(self.manifest["measurement_shape"])
        if tuple(y.shape) != expected:
            m = self.manifest
            raise SiloError(
                f"bundle {self.path.name} is for {m['task']} measurements of "
                f"{expected[-1]}x{expected[-2]} ({m['image_size']}px images, batch "
                f"{expected[0]}); got {y.shape[-1]}x{y.shape[-2]} (batch {y.shape[0]})")

    def restore(self, y: np.ndarray, seed: int = 0, eta: float | None = None,
                sigma_y: float | None = None, callback: StepCallback | None = None
                ) -> np.ndarray:
        """Restore ``y`` ``(B, 3, h, w)`` float32 in [-1, 1]; returns ``(B, 3, H, W)``.

        ``eta``/``sigma_y`` default to the values the bundle was exported with.
        """
        self.check_measurement(y)
        m = self.manifest
        noise = NoiseSource(seed)
        latent_shape = tuple(m["latent_shape"])
        w = self.graphs.run("vae_encoder", measurement=y,
                            noise=noise.encoder_noise(latent_shape))[0]
        z = noise.initial_latent(latent_shape) * np.float32(m["init_noise_sigma"])
        schedule = m["schedule"]
        timesteps = np.asarray(schedule["timesteps"], np.int64)
        coefficients = np.asarray(schedule["coefficients"], np.float32)
        step_noise = noise.step_noise(len(timesteps), latent_shape)
        cfg = m["cfg_scale"] if m["cfg_scale"] > 1.0 else None
        z0 = self.graphs.run_steps(z, w, self.context, timesteps, coefficients, step_noise,
                                   m["eta"] if eta is None else eta,
                                   m["sigma_y"] if sigma_y is None else sigma_y, cfg, callback)
        return self.graphs.run("vae_decoder", z0=z0)[0]
