"""The embedded demo: a small latent diffusion prior trained on scikit-image's photographs,
SILO operators for ``sr4`` and ``ip``, exported to bundles shipped inside the package.

64×64 images only, trained for under two hours on two CPU cores: it shows the method working
on a fresh machine with no download, it is not a substitute for SD-1.5 (see MODEL_CARD.md).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import SiloError

DEMO_ROOT = Path(__file__).parent
BUNDLES = DEMO_ROOT / "bundles"
MODEL_CARD = DEMO_ROOT / "MODEL_CARD.md"
DEMO_TASKS = ("sr4", "ip")
DEFAULT_TASK = "sr4"
SD15_HINT = ("for real photographs use SD-1.5: --model path/to/stable-diffusion-v1-5 "
             "--operator OP.safetensors, or --bundle (see README)")


def demo_bundle(task: str | None) -> Path:
    """The embedded bundle for ``task`` (default ``sr4``)."""
    task = task or DEFAULT_TASK
    if task not in DEMO_TASKS:
        raise SiloError(f"the embedded demo has no {task!r} model (it has "
                        f"{', '.join(DEMO_TASKS)}); give --bundle or --model/--operator")
    path = BUNDLES / task
    if not (path / "manifest.json").is_file():
        raise SiloError(f"the embedded demo bundle is missing from this install: {path}")
    return path
