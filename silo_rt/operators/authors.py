"""The SILO authors' released operator checkpoints: recognising them and renaming their tensors.

The paper's repository (``ronraphaeli/SILO``, commit 5b33650) releases one ``.pt`` per task
(``trained_ckpt/CNN/sr_8_cnn_ffhq_operator.pt``, ``trained_ckpt/RG/ip_rg_coco_operator.pt``,
...). Both kinds load with ``torch.load(weights_only=True)``:

* **CNN** (``silo_utils.DegradationModel(4, layer_norm=True, sigma_condition=True)``): a plain
  state dict whose modules are flat ``nn.Sequential`` indices (``encoder.0`` conv,
  ``encoder.1`` LayerNorm, ``encoder.2`` ReLU, ...);
* **Readout-Guidance** (``dhf/aggregation_network.AggregationNetwork`` with
  ``bottleneck_sequential=False``, ``use_output_head=True``, ``output_head_act=False``,
  ``sigma_condition=True``): a dict whose ``aggregation_network`` entry is the head's state
  dict (besides ``step``, ``config`` and the optimiser state, which are ignored).

The tables below are the whole correspondence, module by module (their prefix, ours, the
parameters under it); :func:`name_map` expands them to tensor names. Architecturally the
networks are the same (:mod:`.cnn`, :mod:`.readout`); only names differ.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch

from ..errors import SiloError

SOURCE = "ronraphaeli/SILO@5b33650"
WB = ("weight", "bias")
W = ("weight",)

CNN_MODULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    # silo_utils.DegradationModel          silo_rt CnnOperator
    ("sigma_condition_precondition.0", "sigma_map.0", WB),   # Linear(E → 32)
    ("sigma_condition_precondition.2", "sigma_map.2", WB),   # Linear(32 → s·s)
    ("encoder.0", "encoder.0.0", WB), ("encoder.1", "encoder.0.1", WB),     # conv, LayerNorm
    ("encoder.3", "encoder.1.0", WB), ("encoder.4", "encoder.1.1", WB),
    ("encoder.6", "encoder.2.0", WB), ("encoder.7", "encoder.2.1", WB),
    ("encoder.9", "encoder.3.0", WB), ("encoder.10", "encoder.3.1", WB),
    ("decoder.0", "decoder.0.0", WB), ("decoder.1", "decoder.0.1", WB),     # conv-T, LayerNorm
    ("decoder.3", "decoder.1.0", WB), ("decoder.4", "decoder.1.1", WB),
    ("decoder.6", "decoder.2.0", WB), ("decoder.7", "decoder.2.1", WB),
    ("adjust_encoding.0", "skip.0", WB), ("adjust_encoding.1", "skip.1", WB),
    ("processing.0", "process.0.0", WB), ("processing.1", "process.0.1", WB),
    ("processing.3", "process.1", WB),
)

READOUT_LAYER_MODULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    # dhf AggregationNetwork, per feature layer {l}   silo_rt ReadoutOperator
    ("bottleneck_layers.{l}.conv1", "blocks.{l}.reduce.0", W),       # 1×1, no bias
    ("bottleneck_layers.{l}.conv1.norm", "blocks.{l}.reduce.1", WB),  # GroupNorm(32)
    ("bottleneck_layers.{l}.emb_layers", "blocks.{l}.time.0", WB),    # Linear(E → width)
    ("bottleneck_layers.{l}.conv2", "blocks.{l}.mix.0", W),           # 3×3
    ("bottleneck_layers.{l}.conv2.norm", "blocks.{l}.mix.1", WB),
    ("bottleneck_layers.{l}.conv3", "blocks.{l}.expand.0", W),        # 1×1 → hidden
    ("bottleneck_layers.{l}.conv3.norm", "blocks.{l}.expand.1", WB),
    ("bottleneck_layers.{l}.shortcut", "blocks.{l}.shortcut.0", W),   # 1×1 → hidden
    ("bottleneck_layers.{l}.shortcut.norm", "blocks.{l}.shortcut.1", WB),
)

READOUT_MODULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("mixing_weights", "layer_weights", ("",)),                 # one logit per layer
    ("sigma_emb_linear", "sigma_map", WB),                      # Linear(E → s·s)
    ("sigma_emb_norm", "sigma_norm", WB),                       # LayerNorm([1, s, s])
    ("output_head.0", "head.0", WB), ("output_head.2", "head.2", WB),
    ("output_head.4", "head.4", WB),
)

# Their file names: <task>_<kind>_<dataset>_operator.pt (trained_ckpt/ of the release).
_FILE_NAME = re.compile(r"^(gb|sr_4|sr_8|ip|jpeg|rand_ip)_(cnn|rg)_(ffhq|coco)", re.IGNORECASE)
_TASKS = {"gb": "gb", "sr_4": "sr4", "sr_8": "sr8", "ip": "ip", "jpeg": "jpeg"}

PROMPTS = {"ffhq": "A high quality photo of a face", "coco": "A high quality photo"}
"""The prompt of the authors' sampling script per training set (their default: FFHQ's)."""

SAMPLING_STEPS = 999
"""The authors' default number of DDPM steps (their η, clamp and σ_y are our task defaults)."""


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if name else prefix


def name_map(kind: str, layers: int = 0) -> dict[str, str]:
    """``{their tensor name: ours}`` for ``kind`` ``cnn`` or ``readout`` (``layers`` feature
    layers). A bijection by construction; the tests check it is one."""
    if kind == "cnn":
        table = CNN_MODULES
    else:
        table = tuple((theirs.format(l=i), ours.format(l=i), params)
                      for i in range(layers) for theirs, ours, params in READOUT_LAYER_MODULES)
        table += READOUT_MODULES
    return {_join(theirs, p): _join(ours, p) for theirs, ours, params in table for p in params}


@dataclass
class AuthorsCheckpoint:
    """An authors' operator file, renamed to silo-rt's names.

    Attributes:
        arch: ``cnn`` or ``readout``.
        state: the tensors under silo-rt's names.
        latent_channels, latent_size, embedding_dim: sizes read off the tensors.
        feature_channels, hidden: readout only (UNet up-block channels, head width).
        trained_steps: the optimiser step the file records (readout files), else 0.
        file_names: ``{our name: the file's name}`` of every tensor (for messages).
    """

    arch: str
    state: dict[str, torch.Tensor]
    latent_channels: int
    latent_size: int
    embedding_dim: int
    feature_channels: list[int]
    hidden: int
    trained_steps: int = 0
    file_names: dict[str, str] = field(default_factory=dict)


def _side(pixels: int, name: str) -> int:
    side = math.isqrt(pixels)
    if side * side != pixels:
        raise SiloError(f"{name} maps to {pixels} values, not a square latent map")
    return side


def _rename(state: dict, mapping: dict[str, str], what: str) -> dict[str, torch.Tensor]:
    """``state`` under our names; refuses a file whose names are not exactly ``mapping``'s."""
    missing = sorted(set(mapping) - set(state))
    extra = sorted(set(state) - set(mapping))
    if missing or extra:
        detail = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        raise SiloError(f"not an authors' {what} checkpoint as released ({detail}; "
                        f"{len(missing)} missing, {len(extra)} unexpected tensors)")
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            kind = f"a {tensor.dtype} tensor" if isinstance(tensor, torch.Tensor) else \
                f"a {type(tensor).__name__}"
            raise SiloError(f"not an authors' {what} checkpoint as released: {name} is {kind}, "
                            "not a floating-point tensor")
    return {mapping[name]: tensor for name, tensor in state.items()}


def _size(state: dict, file_names: dict[str, str], name: str, rank: int, axis: int) -> int:
    """Dimension ``axis`` of tensor ``name``, after checking it has ``rank`` dimensions (sizes
    are read off the tensors before the operator that would check them is built)."""
    tensor = state[name]
    if tensor.dim() != rank:
        raise SiloError(f"{file_names.get(name, name)} has shape {tuple(tensor.shape)}; the "
                        f"authors' layout has a {rank}-D tensor there")
    return int(tensor.shape[axis])


def _cnn(state: dict) -> AuthorsCheckpoint:
    if any(name.endswith("running_mean") for name in state):
        raise SiloError("this is the authors' BatchNorm CNN variant (layer_norm=False); their "
                        "sampling and released files use the LayerNorm one, which silo-rt loads")
    mapping = name_map("cnn")
    renamed = _rename(state, mapping, "CNN")
    names = {ours: theirs for theirs, ours in mapping.items()}
    return AuthorsCheckpoint(
        "cnn", renamed, latent_channels=_size(renamed, names, "process.1.weight", 4, 0),
        latent_size=_side(_size(renamed, names, "sigma_map.2.weight", 2, 0),
                          "sigma_condition_precondition"),
        embedding_dim=_size(renamed, names, "sigma_map.0.weight", 2, 1), feature_channels=[],
        hidden=0, file_names=names)


def _readout(entry: dict, trained_steps) -> AuthorsCheckpoint:
    layers = 0
    while f"bottleneck_layers.{layers}.conv1.weight" in entry:
        layers += 1
    if layers == 0:
        raise SiloError("the aggregation_network entry has no bottleneck layers")
    mapping = name_map("readout", layers)
    renamed = _rename(entry, mapping, "Readout-Guidance")
    names = {ours: theirs for theirs, ours in mapping.items()}
    return AuthorsCheckpoint(
        "readout", renamed, latent_channels=_size(renamed, names, "head.4.weight", 4, 0),
        latent_size=_side(_size(renamed, names, "sigma_map.weight", 2, 0), "sigma_emb_linear"),
        embedding_dim=_size(renamed, names, "sigma_map.weight", 2, 1),
        # each layer's features arrive with the σ_y map as one extra channel
        feature_channels=[_size(renamed, names, f"blocks.{i}.reduce.0.weight", 4, 1) - 1
                          for i in range(layers)],
        hidden=_size(renamed, names, "blocks.0.expand.0.weight", 4, 0),
        trained_steps=trained_steps if isinstance(trained_steps, int)
        and not isinstance(trained_steps, bool) and trained_steps >= 0 else 0,
        file_names=names)


def recognise(raw) -> AuthorsCheckpoint | None:
    """The authors' checkpoint in ``raw`` (what ``torch.load`` returned), or None when ``raw``
    is not in their layout. Raises :class:`SiloError` for their layouts silo-rt cannot run."""
    if isinstance(raw, dict) and isinstance(raw.get("aggregation_network"), dict):
        return _readout(raw["aggregation_network"], raw.get("step"))
    if not isinstance(raw, dict):
        return None
    if "sigma_condition_precondition.0.weight" in raw or "adjust_encoding.0.weight" in raw:
        return _cnn(raw)
    if "initial_conv.weight" in raw and "skip_scale" in raw:
        raise SiloError("this is the authors' LatentDegradationNetwork operator "
                        "(--model preserve_LatentDegradationNetwork in their scripts), an "
                        "architecture silo-rt does not implement; use their CNN or RG files")
    return None


def describe_file(file_name: str) -> tuple[str | None, str]:
    """``(task, dataset)`` from a released file's name (``sr_8_cnn_ffhq_operator.pt`` →
    ``("sr8", "ffhq")``); ``(None, "ffhq")`` when the name does not say."""
    match = _FILE_NAME.match(file_name)
    if match is None:
        return None, "ffhq"
    task, dataset = match.group(1).lower(), match.group(3).lower()
    if task == "rand_ip":
        raise SiloError(f"{file_name} is the authors' random-box inpainting operator; silo-rt's "
                        "ip task is the centred box (their center_inpainting), use ip_rg_*.pt")
    return _TASKS[task], dataset


def recommended_sampling(dataset: str) -> dict:
    """The authors' sampling settings for an operator trained on ``dataset``: their prompt
    and step count (η, the ±4 clamp and σ_y = 0.02 in [-1, 1] are our task defaults too)."""
    return {"prompt": PROMPTS.get(dataset, PROMPTS["ffhq"]), "steps": SAMPLING_STEPS}
