"""Operator checkpoints: safetensors weights with the JSON config in the file's metadata.

A ``.safetensors`` checkpoint is self-describing (arch, task, image size, σ_y range, SR
resizer, time input, the prior it was trained for). ``.pt`` files are read with
``torch.load(weights_only=True)`` (never executing code from the file) and are either

* the SILO authors' released operators (:mod:`.authors`): recognised by their layout, renamed,
  their config read off the tensors and the file name, recorded as ``source="authors"``;
* a plain state dict in silo-rt's own naming, whose config the caller supplies (``--arch``
  and ``--task``; the sizes come from the prior).
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..degradations import get_degradation
from ..errors import SiloError, first_line
from ..resize import DEFAULT_RESIZER, check_resizer, recorded_resizer
from .readout import TIME_INPUTS

METADATA_KEY = "silo_rt_operator"
ARCHS = ("cnn", "readout")
CONFIG_VERSION = 2
"""2: readout GroupNorms with 32 groups (1 used min(32, C/4)); ``resizer``, ``time_input``,
``source`` and ``recommended`` recorded (1: PyTorch's bicubic SR, UNet time input)."""
SOURCES = ("silo-rt", "authors")


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
        resizer: SR measurement model it was trained against (:data:`~silo_rt.resize.RESIZERS`;
            the bundle's ``--keep-measured`` and ``degrade`` use the same).
        time_input: what a readout head's time projection receives
            (:data:`~.readout.TIME_INPUTS`).
        source: ``silo-rt`` (trained here) or ``authors`` (a released SILO file).
        recommended: sampling settings its makers used (``prompt``, ``steps``), the defaults
            of ``export``/``restore`` with this operator.
        version: config schema version (:data:`CONFIG_VERSION`).
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
    resizer: str = DEFAULT_RESIZER
    time_input: str = "unet"
    source: str = "silo-rt"
    recommended: dict = field(default_factory=dict)
    version: int = CONFIG_VERSION

    def __post_init__(self):
        """Refuse a config (e.g. read from a file) with wrong types or absurd sizes, in one
        :class:`SiloError` line naming the field, before anything is built from it."""
        import math

        check_resizer(self.resizer)
        if self.time_input not in TIME_INPUTS:
            raise SiloError(f"time input must be one of {', '.join(TIME_INPUTS)}, "
                            f"got {self.time_input!r}")
        if self.source not in SOURCES:
            raise SiloError(f"unknown operator source {self.source!r}")
        if self.arch not in ARCHS:
            raise SiloError(f"operator config: arch must be cnn or readout, got {self.arch!r}")
        if not isinstance(self.task, str):
            raise SiloError(f"operator config: task must be a string, got {self.task!r}")
        get_degradation(self.task)

        def bounded(name, value, lo, hi):
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise SiloError(f"operator config: {name} must be an integer in {lo}…{hi}, "
                                f"got {value!r}")

        bounded("image_size", self.image_size, 8, 4096)
        bounded("latent_channels", self.latent_channels, 1, 1024)
        bounded("latent_size", self.latent_size, 1, 1024)
        bounded("embedding_dim", self.embedding_dim, 1, 65536)
        bounded("hidden", self.hidden, 1, 65536)
        bounded("trained_steps", self.trained_steps, 0, 10**12)
        bounded("version", self.version, 1, 10**6)
        if not isinstance(self.feature_channels, list) or len(self.feature_channels) > 64:
            raise SiloError("operator config: feature_channels must be a list of at most 64 "
                            f"channel counts, got {self.feature_channels!r}"[:200])
        for channels in self.feature_channels:
            bounded("feature_channels", channels, 1, 65536)
        lo_hi = tuple(self.sigma_y_range) if isinstance(self.sigma_y_range, list | tuple) else ()
        if len(lo_hi) != 2 or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                      and math.isfinite(v) for v in lo_hi) \
                or not 0.0 <= lo_hi[0] <= lo_hi[1] < 1.0:
            raise SiloError("operator config: sigma_y_range must be [min, max] with "
                            f"0 <= min <= max < 1, got {self.sigma_y_range!r}")
        for name in ("prior", "prior_fingerprint"):
            if not isinstance(getattr(self, name), str):
                raise SiloError(f"operator config: {name} must be a string")
        if not isinstance(self.recommended, dict):
            raise SiloError("operator config: recommended must be an object")
        if "steps" in self.recommended:
            bounded("recommended.steps", self.recommended["steps"], 1, 1000)
        if not isinstance(self.recommended.get("prompt", ""), str):
            raise SiloError("operator config: recommended.prompt must be a string")

    @classmethod
    def for_prior(cls, prior, arch: str, task: str, image_size: int | None = None,
                  sigma_y_range: tuple[float, float] | None = None) -> OperatorConfig:
        """A config sized from ``prior`` (works for ``tiny`` and SD-1.5 alike)."""
        from .features import up_block_feature_channels

        if arch not in ARCHS:
            raise SiloError(f"unknown operator architecture {arch!r}; choose cnn or readout")
        get_degradation(task)
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
        """Parse a config; version-1 configs get that version's resizer and time input, and a
        version-1 readout operator is refused (its GroupNorm grouping no longer exists)."""
        data = json.loads(text)
        data["sigma_y_range"] = tuple(data["sigma_y_range"])
        version = data.setdefault("version", 1)
        if version == 1:
            if data.get("arch") == "readout":
                raise SiloError("this readout operator was saved by silo-rt < 0.2, whose head "
                                "used min(32, C/4) GroupNorm groups; the authors' head (and "
                                "silo-rt now) uses 32, so its weights cannot be reused: "
                                "retrain it with `silo-rt train --arch readout`")
            data["resizer"] = recorded_resizer(data)
        elif version > CONFIG_VERSION:
            raise SiloError(f"operator config version {version} is newer than this silo-rt "
                            f"reads ({CONFIG_VERSION}); upgrade silo-rt")
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
                               config.latent_size, config.embedding_dim, config.hidden,
                               config.time_input)
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


def _read_pt(path: Path):
    """What ``torch.load(weights_only=True)`` returns for ``path`` (tensors, dicts, numbers)."""
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of files it then refuses: one line only
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise SiloError(f"refusing to load {path}: it is not a plain tensor state dict "
                        "(it would execute code when unpickled)") from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise SiloError(f"cannot read operator checkpoint {path}: {exc}") from None


def _plain_state_dict(raw, path: Path) -> dict:
    if isinstance(raw, dict) and "state_dict" in raw and isinstance(raw["state_dict"], dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise SiloError(f"{path} is not a state dict of tensors")
    return raw


def _authors_config(found, path: Path, prior, task: str | None, arch: str | None,
                    image_size: int | None) -> OperatorConfig:
    """The config of an authors' file: sizes from its tensors, task and prompt from its name."""
    from . import authors

    if arch is not None and arch != found.arch:
        raise SiloError(f"{path.name} is the authors' {found.arch} operator, not {arch}")
    named_task, dataset = authors.describe_file(path.name)
    if task is not None and named_task is not None and task != named_task:
        raise SiloError(f"{path.name} is the authors' {named_task} operator (its name says so), "
                        f"not {task}")
    task = task or named_task
    if task is None:
        raise SiloError(f"{path.name} is an authors' {found.arch} operator; its name does not "
                        "say its task: give --task")
    get_degradation(task)
    if prior is None:
        raise SiloError("loading an authors' operator needs the prior it runs with (--model)")
    if found.embedding_dim != prior.embedding_dim or \
            found.latent_channels != prior.latent_channels:
        raise SiloError(f"{path.name} was trained for a prior with {found.latent_channels}-"
                        f"channel latents and {found.embedding_dim}-d embeddings; "
                        f"{prior.name} has {prior.latent_channels} and {prior.embedding_dim}")
    if found.arch == "readout":
        from .features import up_block_feature_channels

        channels = up_block_feature_channels(prior.unet)
        if found.feature_channels != channels:
            raise SiloError(f"{path.name} reads UNet up-block features of {found.feature_channels}"
                            f" channels; {prior.name}'s UNet has {channels}")
    native = found.latent_size * prior.vae_scale
    if image_size is not None and image_size != native:
        raise SiloError(f"{path.name} works on {found.latent_size}x{found.latent_size} latents, "
                        f"i.e. {native}px images, not {image_size}px")
    return OperatorConfig(
        arch=found.arch, task=task, image_size=native, latent_channels=found.latent_channels,
        latent_size=found.latent_size, embedding_dim=found.embedding_dim,
        feature_channels=found.feature_channels, hidden=found.hidden or 384,
        # the authors' training ranges (official-code-facts: U(0, 0.04) CNN, U(0, 0.1) RG)
        sigma_y_range=(0.0, 0.04) if found.arch == "cnn" else (0.0, 0.1),
        prior=prior.name, trained_steps=found.trained_steps, resizer="dps",
        # their sampling calls the readout head with emb=None on SD-1.5
        time_input="none" if found.arch == "readout" else "unet",
        source="authors", recommended=authors.recommended_sampling(dataset))


def _check_shapes(operator: torch.nn.Module, state: dict, path: Path, arch: str,
                  file_names: dict[str, str]) -> None:
    """Every tensor's shape against ``operator``'s; ``file_names`` maps our names to the
    file's (authors' files), so the message names the tensor as the file does."""
    expected = operator.state_dict()
    for name, tensor in state.items():
        want = expected.get(name)
        if want is not None and tuple(tensor.shape) != tuple(want.shape):
            raise SiloError(f"{path.name} does not match a {arch} operator: "
                            f"{file_names.get(name, name)} has shape {tuple(tensor.shape)}, "
                            f"expected {tuple(want.shape)}")


def _check_finite(state: dict, path: Path, file_names: dict[str, str]) -> None:
    """Refuse weights with NaN or infinity (they restore a black image), naming the tensor."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise SiloError(f"{path.name}: tensor {file_names.get(name, name)} holds {bad} "
                            "non-finite value(s) (NaN or infinity); refusing these weights")


def load_operator(path: str | Path, prior=None, task: str | None = None,
                  arch: str | None = None, image_size: int | None = None,
                  time_input: str | None = None) -> tuple[torch.nn.Module, OperatorConfig]:
    """Load an operator checkpoint and check it suits ``prior``/``task``/``image_size``.

    ``.safetensors`` files carry their config; the authors' ``.pt`` files are recognised
    (their task comes from the file name unless ``task`` is given); any other ``.pt`` state
    dict needs ``arch``, ``prior`` and ``task`` from the caller. ``time_input`` overrides the
    recorded time input of a readout head. Returns the frozen operator in eval mode.
    """
    from .authors import recognise

    path = Path(path)
    if not path.is_file():
        raise SiloError(f"operator checkpoint not found: {path}")
    file_names = {}
    if path.suffix == ".safetensors":
        state, config = _read_safetensors(path)
    else:
        raw = _read_pt(path)
        found = recognise(raw)
        if found is not None:
            state, file_names = found.state, found.file_names
            config = _authors_config(found, path, prior, task, arch, image_size)
        else:
            state = _plain_state_dict(raw, path)
            if arch is None or prior is None or task is None:
                raise SiloError(f"{path} is a plain state dict: give --arch (cnn or readout) "
                                "and --task so its config can be built")
            config = OperatorConfig.for_prior(prior, arch, task, image_size)
    if time_input is not None and time_input != config.time_input:
        if config.arch != "readout":
            raise SiloError("--time-input applies to readout operators only")
        config = dataclasses.replace(config, time_input=time_input)
    config.check_compatible(prior, task, image_size, source=f"operator {path.name}")
    _check_finite(state, path, file_names)
    operator = build_operator(config)
    _check_shapes(operator, state, path, config.arch, file_names)
    try:
        operator.load_state_dict(state)
    except RuntimeError as exc:
        raise SiloError(f"{path} does not match a {config.arch} operator: "
                        f"{first_line(exc)}") from None
    return operator.eval().requires_grad_(False), config
