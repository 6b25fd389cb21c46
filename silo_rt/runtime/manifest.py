"""The bundle format: a folder of ONNX graphs plus ``manifest.json`` (numpy-free reading).

``manifest.json`` (format version 1)::

    format            "silo-rt-bundle"
    format_version    1
    task, arch        degradation and operator kind
    batch             batch size the graphs were traced for
    image_size        pixel side H = W of the restoration
    measurement_shape [B, 3, h, w]  (h = H / scale for SR)
    latent_shape      [B, C, s, s]
    precision         "fp32"
    eta, sigma_y, clamp_latent, cfg_scale, prompt
    init_noise_sigma  z_T multiplier (1.0 for DDPM)
    context           {"file": "context.npy", "shape": [...]}: the prompt's text embedding
    schedule          {"timesteps", "coefficient_names", "coefficients"}
    graphs            {name: {"file", "inputs": {name: shape}, "outputs": {name: shape}}}
    prior, operator   identities (name, fingerprint; the operator's config)
    versions          packages that exported it
    files             {relative path: sha256} for every file in the bundle but the manifest
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import SiloError

FORMAT = "silo-rt-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED_GRAPHS = ("vae_encoder", "vae_decoder", "step")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(bundle: Path, verify: bool = True) -> dict:
    """Load and check a bundle's manifest; with ``verify`` also every file's sha256.

    Raises :class:`SiloError` naming the problem: not a bundle, a newer format, a missing or
    altered file.
    """
    bundle = Path(bundle)
    path = bundle / MANIFEST
    if not path.is_file():
        raise SiloError(f"{bundle} is not a silo-rt bundle (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SiloError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SiloError(f"{path} is not a silo-rt bundle manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise SiloError(f"bundle {bundle} has format version {version}; this silo-rt reads "
                        f"up to {FORMAT_VERSION}: upgrade silo-rt")
    missing = [g for g in REQUIRED_GRAPHS if g not in manifest.get("graphs", {})]
    if missing:
        raise SiloError(f"bundle {bundle} lacks graphs: {', '.join(missing)}")
    for name, digest in manifest.get("files", {}).items():
        file = bundle / name
        if not file.is_file():
            raise SiloError(f"bundle {bundle} is missing {name}")
        if verify and sha256_file(file) != digest:
            raise SiloError(f"bundle file {file} does not match its sha256 in the manifest "
                            "(altered or corrupted)")
    return manifest
