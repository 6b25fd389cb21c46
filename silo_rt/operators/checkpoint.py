"""Operator checkpoints: safetensors weights with the JSON config in the file's metadata.

A ``.safetensors`` checkpoint is self-describing (arch, task, image size, σ_y range, the prior
it was trained for). A plain PyTorch state-dict ``.pt`` is accepted too; it is read with
``torch.load(weights_only=True)`` (never executing code from the file) and its config must be
supplied by the caller (``--arch`` on the command line; the rest comes from the prior).
"""

from __future__ import annotations

import json
import pickle
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..errors import SiloError
from ..tasks import get_task

METADATA_KEY = "silo_rt_operator"
ARCHS = ("cnn", "readout")


@dataclass
class OperatorConfig:
    """Everything needed to rebuild an operator and to check it suits a restoration.

    Attributes:
        arch: ``cnn`` or ``readout``.
        task: degradation it imitates (``gb``, ``sr4``, ...).
        image_size: pixel side it was trained at (the operator is tied to the latent side).
        latent_channels, latent_size, embedding_dim: sizes taken from the prior.
        feature_channels: up-block feature channels (readout only).
        hidden: readout per-layer width.
        sigma_y_range: (min, max) σ_y seen in training, [-1, 1] image range.
        prior: name of the prior it was trained with; prior_fingerprint: its
            :meth:`~silo_rt.prior.LatentPrior.fingerprint`.
        trained_steps: optimiser steps done.
    """

    arch: str
    task: str
    image_size: int
    latent_channels: int
    latent_size: int
    embedding_dim: int
    feature_channels: list[int] = field(default_factory=list)
    hidden: int = 384
    sigma_y_range: tuple[float, float] = (0.0, 0.1)
    prior: str = ""
    prior_fingerprint: str = ""
    trained_steps: int = 0

    @classmethod
    def for_prior(cls, prior, arch: str, task: str, image_size: int | None = None,
                  sigma_y_range: tuple[float, float] | None = None) -> OperatorConfig:
        """A config sized from ``prior`` (works for ``tiny`` and SD-1.5 alike)."""
        from .features import up_block_feature_channels

        if arch not in ARCHS:
            raise SiloError(f"unknown operator architecture {arch!r}; choose cnn or readout")
        get_task(task)
        image_size = image_size or prior.default_image_size
        first = prior.unet.config.block_out_channels[0]
        return cls(
            arch=arch, task=task, image_size=image_size,
            latent_channels=prior.latent_channels, latent_size=image_size // prior.vae_scale,
            embedding_dim=prior.embedding_dim,
            feature_channels=up_block_feature_channels(prior.unet) if arch == "readout" else [],
            hidden=384 if first >= 320 else 2 * first,
            # The authors' ranges: U(0, 0.04) for the CNN, U(0, 0.1) for readout.
            sigma_y_range=tuple(sigma_y_range or ((0.0, 0.04) if arch == "cnn" else (0.0, 0.1))),
            prior=prior.name, prior_fingerprint=prior.fingerprint())

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> OperatorConfig:
        data = json.loads(text)
        data["sigma_y_range"] = tuple(data["sigma_y_range"])
        return cls(**data)

    def check_compatible(self, prior=None, task: str | None = None,
                         image_size: int | None = None, source: str = "operator") -> None:
        """Raise :class:`SiloError` if this operator does not suit the given restoration."""
        if task is not None and task != self.task:
            raise SiloError(f"{source} was trained for task {self.task!r}, not {task!r}")
        if image_size is not None and image_size != self.image_size:
            raise SiloError(f"{source} was trained for {self.image_size}px images, "
                            f"not {image_size}px")
        if prior is not None and self.prior_fingerprint and \
                prior.fingerprint() != self.prior_fingerprint:
            raise SiloError(f"{source} was trained for prior {self.prior!r} "
                            f"({self.prior_fingerprint}), not {prior.name!r} "
                            f"({prior.fingerprint()})")


def build_operator(config: OperatorConfig) -> torch.nn.Module:
    """A freshly initialised operator for ``config``."""
    from .cnn import CnnOperator
    from .readout import ReadoutOperator

    if config.arch == "cnn":
        return CnnOperator(config.latent_channels, config.latent_size, config.embedding_dim)
    if config.arch == "readout":
        return ReadoutOperator(config.feature_channels, config.latent_channels,
                               config.latent_size, config.embedding_dim, config.hidden)
    raise SiloError(f"unknown operator architecture {config.arch!r}; choose cnn or readout")


def save_operator(path: str | Path, operator: torch.nn.Module, config: OperatorConfig) -> Path:
    """Write weights + config to a ``.safetensors`` file (atomically)."""
    from safetensors.torch import save_file

    from ..images import atomic_write

    state = {k: v.detach().contiguous().cpu() for k, v in operator.state_dict().items()}
    return atomic_write(path, lambda tmp: save_file(state, tmp,
                                                     metadata={METADATA_KEY: config.to_json()}))


def _read_safetensors(path: Path) -> tuple[dict, OperatorConfig]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise SiloError(f"cannot read operator checkpoint {path}: {exc}") from None
    if METADATA_KEY not in meta:
        raise SiloError(f"{path} has no silo-rt operator config in its metadata")
    try:
        config = OperatorConfig.from_json(meta[METADATA_KEY])
    except (ValueError, TypeError, KeyError) as exc:
        raise SiloError(f"{path}: malformed operator config: {exc}") from None
    return state, config


def _read_state_dict_pt(path: Path) -> dict:
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of files it then refuses: one line only
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise SiloError(f"refusing to load {path}: it is not a plain tensor state dict "
                        "(it would execute code when unpickled)") from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise SiloError(f"cannot read operator checkpoint {path}: {exc}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SiloError(f"{path} is not a state dict of tensors")
    return state


def load_operator(path: str | Path, prior=None, task: str | None = None,
                  arch: str | None = None, image_size: int | None = None
                  ) -> tuple[torch.nn.Module, OperatorConfig]:
    """Load an operator checkpoint and check it suits ``prior``/``task``/``image_size``.

    ``.safetensors`` files carry their config. A ``.pt`` state dict needs ``arch`` and
    ``prior`` (and ``task``) from the caller. Returns the frozen operator in eval mode.
    """
    path = Path(path)
    if not path.is_file():
        raise SiloError(f"operator checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        state, config = _read_safetensors(path)
    else:
        state = _read_state_dict_pt(path)
        if arch is None or prior is None or task is None:
            raise SiloError(f"{path} is a plain state dict: give --arch (cnn or readout) and "
                            "--task so its config can be built")
        config = OperatorConfig.for_prior(prior, arch, task, image_size)
    config.check_compatible(prior, task, image_size, source=f"operator {path.name}")
    operator = build_operator(config)
    try:
        operator.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise SiloError(f"{path} does not match a {config.arch} operator: {first}") from None
    return operator.eval().requires_grad_(False), config
