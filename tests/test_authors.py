"""The SILO authors' released operator files (ronraphaeli/SILO@5b33650): recognised, renamed,
loaded, and computing what their architecture computes.

The tables below record, as data, the tensor names and shapes of the authors'
``silo_utils.DegradationModel(4, layer_norm=True, sigma_condition=True)`` (CNN) and
``dhf.aggregation_network.AggregationNetwork(..., use_output_head=True, output_head_act=False,
bottleneck_sequential=False, sigma_condition=True)`` (Readout-Guidance) state dicts, sized by

* ``C`` latent channels, ``E`` embedding width (their code hard-codes 1280), ``s`` latent side
  (hard-coded 64), ``feats`` the UNet up-block feature channels, ``P`` the projection dim (384).

The forward passes in this file are written from the architecture description, on the
authors' tensor names, independently of silo-rt's modules.
"""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
import torch.nn.functional as F

from silo_rt.errors import SiloError
from silo_rt.operators import OperatorConfig, build_operator, load_operator, save_operator
from silo_rt.operators.authors import describe_file, name_map, recognise
from silo_rt.operators.cnn import CnnOperator
from silo_rt.operators.features import up_block_feature_channels
from silo_rt.operators.readout import ReadoutOperator

SD15_FEATURES = [1280] * 6 + [640] * 3 + [320] * 3


def _ln(ch):
    """A LayerNorm([ch, s, s]) weight/bias shape."""
    return lambda C, E, s, feats, P: (ch, s, s)


# --- silo_utils.DegradationModel(latent_dim=C, sigma_condition=True, layer_norm=True) -------
# encoder widths C+1 → 17 → 33 → 65 → 128 (3×3, padding 1, LayerNorm, ReLU); decoder
# ConvTranspose2d 128 → 64 → 32 → 16 (weights stored (in, out, k, k)); adjust_encoding 1×1
# conv (128+1 → 16) + LayerNorm + ReLU; processing 3×3 conv 16 → 16 + LayerNorm + ReLU, 3×3
# conv 16 → C; sigma_condition_precondition Linear(E → 32), LeakyReLU, Linear(32 → s·s).
CNN_SHAPES = {
    "sigma_condition_precondition.0.weight": lambda C, E, s, feats, P: (32, E),
    "sigma_condition_precondition.0.bias": lambda C, E, s, feats, P: (32,),
    "sigma_condition_precondition.2.weight": lambda C, E, s, feats, P: (s * s, 32),
    "sigma_condition_precondition.2.bias": lambda C, E, s, feats, P: (s * s,),
    "encoder.0.weight": lambda C, E, s, feats, P: (17, C + 1, 3, 3),
    "encoder.0.bias": lambda C, E, s, feats, P: (17,),
    "encoder.1.weight": _ln(17), "encoder.1.bias": _ln(17),
    "encoder.3.weight": lambda C, E, s, feats, P: (33, 17, 3, 3),
    "encoder.3.bias": lambda C, E, s, feats, P: (33,),
    "encoder.4.weight": _ln(33), "encoder.4.bias": _ln(33),
    "encoder.6.weight": lambda C, E, s, feats, P: (65, 33, 3, 3),
    "encoder.6.bias": lambda C, E, s, feats, P: (65,),
    "encoder.7.weight": _ln(65), "encoder.7.bias": _ln(65),
    "encoder.9.weight": lambda C, E, s, feats, P: (128, 65, 3, 3),
    "encoder.9.bias": lambda C, E, s, feats, P: (128,),
    "encoder.10.weight": _ln(128), "encoder.10.bias": _ln(128),
    "decoder.0.weight": lambda C, E, s, feats, P: (128, 64, 3, 3),
    "decoder.0.bias": lambda C, E, s, feats, P: (64,),
    "decoder.1.weight": _ln(64), "decoder.1.bias": _ln(64),
    "decoder.3.weight": lambda C, E, s, feats, P: (64, 32, 3, 3),
    "decoder.3.bias": lambda C, E, s, feats, P: (32,),
    "decoder.4.weight": _ln(32), "decoder.4.bias": _ln(32),
    "decoder.6.weight": lambda C, E, s, feats, P: (32, 16, 3, 3),
    "decoder.6.bias": lambda C, E, s, feats, P: (16,),
    "decoder.7.weight": _ln(16), "decoder.7.bias": _ln(16),
    "adjust_encoding.0.weight": lambda C, E, s, feats, P: (16, 129, 1, 1),
    "adjust_encoding.0.bias": lambda C, E, s, feats, P: (16,),
    "adjust_encoding.1.weight": _ln(16), "adjust_encoding.1.bias": _ln(16),
    "processing.0.weight": lambda C, E, s, feats, P: (16, 16, 3, 3),
    "processing.0.bias": lambda C, E, s, feats, P: (16,),
    "processing.1.weight": _ln(16), "processing.1.bias": _ln(16),
    "processing.3.weight": lambda C, E, s, feats, P: (C, 16, 3, 3),
    "processing.3.bias": lambda C, E, s, feats, P: (C,),
}
CNN_NORMS = ("encoder.1.", "encoder.4.", "encoder.7.", "encoder.10.", "decoder.1.",
             "decoder.4.", "decoder.7.", "adjust_encoding.1.", "processing.1.")

# --- dhf AggregationNetwork, per feature layer l (BottleneckBlock, in = F_l + 1 for the σ map,
# bottleneck P//4, out P; their Conv2d subclass: no bias, a GroupNorm as ``.norm``; the
# shortcut exists since in != out; emb_layers = Linear(emb_channels=1280 default → P//4)) ----
RG_LAYER_SHAPES = {
    "bottleneck_layers.{l}.shortcut.weight": lambda F_l, E, P: (P, F_l + 1, 1, 1),
    "bottleneck_layers.{l}.shortcut.norm.weight": lambda F_l, E, P: (P,),
    "bottleneck_layers.{l}.shortcut.norm.bias": lambda F_l, E, P: (P,),
    "bottleneck_layers.{l}.conv1.weight": lambda F_l, E, P: (P // 4, F_l + 1, 1, 1),
    "bottleneck_layers.{l}.conv1.norm.weight": lambda F_l, E, P: (P // 4,),
    "bottleneck_layers.{l}.conv1.norm.bias": lambda F_l, E, P: (P // 4,),
    "bottleneck_layers.{l}.conv2.weight": lambda F_l, E, P: (P // 4, P // 4, 3, 3),
    "bottleneck_layers.{l}.conv2.norm.weight": lambda F_l, E, P: (P // 4,),
    "bottleneck_layers.{l}.conv2.norm.bias": lambda F_l, E, P: (P // 4,),
    "bottleneck_layers.{l}.conv3.weight": lambda F_l, E, P: (P, P // 4, 1, 1),
    "bottleneck_layers.{l}.conv3.norm.weight": lambda F_l, E, P: (P,),
    "bottleneck_layers.{l}.conv3.norm.bias": lambda F_l, E, P: (P,),
    "bottleneck_layers.{l}.emb_layers.weight": lambda F_l, E, P: (P // 4, E),
    "bottleneck_layers.{l}.emb_layers.bias": lambda F_l, E, P: (P // 4,),
}
# network-level: one mixing logit per layer (one save_timestep), Linear(E → s·s) and
# LayerNorm([1, s, s]) for the σ map, output head 3×3 (P+1 → 128), SiLU, 3×3 (128 → 32), SiLU,
# 1×1 (32 → C), no Tanh.
RG_SHAPES = {
    "mixing_weights": lambda C, E, s, feats, P: (len(feats),),
    "sigma_emb_linear.weight": lambda C, E, s, feats, P: (s * s, E),
    "sigma_emb_linear.bias": lambda C, E, s, feats, P: (s * s,),
    "sigma_emb_norm.weight": lambda C, E, s, feats, P: (1, s, s),
    "sigma_emb_norm.bias": lambda C, E, s, feats, P: (1, s, s),
    "output_head.0.weight": lambda C, E, s, feats, P: (128, P + 1, 3, 3),
    "output_head.0.bias": lambda C, E, s, feats, P: (128,),
    "output_head.2.weight": lambda C, E, s, feats, P: (32, 128, 3, 3),
    "output_head.2.bias": lambda C, E, s, feats, P: (32,),
    "output_head.4.weight": lambda C, E, s, feats, P: (C, 32, 1, 1),
    "output_head.4.bias": lambda C, E, s, feats, P: (C,),
}


def authors_shapes(kind: str, C: int, E: int, s: int, feats=(), P: int = 384) -> dict:
    """``{their tensor name: shape}`` of a ``cnn`` or ``rg`` state dict."""
    if kind == "cnn":
        return {name: shape(C, E, s, feats, P) for name, shape in CNN_SHAPES.items()}
    shapes = {name.format(l=i): shape(F_l, E, P)
              for i, F_l in enumerate(feats) for name, shape in RG_LAYER_SHAPES.items()}
    shapes.update({name: shape(C, E, s, feats, P) for name, shape in RG_SHAPES.items()})
    return shapes


def _is_norm(name: str) -> bool:
    return name.startswith(CNN_NORMS) or ".norm." in name or name.startswith("sigma_emb_norm")


def authors_state(kind: str, C: int, E: int, s: int, feats=(), P: int = 384,
                  seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors in the authors' layout: norm weights ≈ 1, the rest of unit-ish gain."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in authors_shapes(kind, C, E, s, feats, P).items():
        t = torch.randn(shape, generator=g)
        if _is_norm(name):
            t = 1 + 0.1 * t if name.endswith("weight") else 0.1 * t
        elif name.endswith("bias") or name == "mixing_weights":
            t = 0.1 * t
        else:  # conv / linear weights: 1/sqrt(fan-in)
            fan_in = math.prod(shape[1:]) if not name.startswith("decoder") else \
                shape[0] * math.prod(shape[2:])
            t = t / math.sqrt(fan_in)
        state[name] = t
    return state


def rg_file(state: dict) -> dict:
    """What their training script saves for a readout head."""
    return {"step": 1234, "config": {"lr": 2e-4}, "aggregation_network": state,
            "optimizer_state_dict": {"state": {}, "param_groups": []}}


def save_authors(tmp_path, name: str, kind: str, state: dict):
    path = tmp_path / name
    torch.save(state if kind == "cnn" else rg_file(state), path)
    return path


def tiny_sizes(prior) -> dict:
    return dict(C=prior.latent_channels, E=prior.embedding_dim, s=64 // prior.vae_scale,
                feats=up_block_feature_channels(prior.unet), P=64)


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message.strip(), message
    return message


# --- independent forward passes on the authors' names -----------------------------------------

def _groups(channels: int) -> int:
    # the authors' GroupNorm(32, C); the tiny priors' narrow widths take gcd(32, C) groups
    return math.gcd(32, channels)


def cnn_forward(w: dict, z: torch.Tensor, sigma_emb: torch.Tensor) -> torch.Tensor:
    b, _, s, _ = z.shape

    def block(x, conv, norm, transpose=False, padding=1):
        op = F.conv_transpose2d if transpose else F.conv2d
        x = op(x, w[f"{conv}.weight"], w[f"{conv}.bias"], padding=padding)
        return F.relu(F.layer_norm(x, x.shape[1:], w[f"{norm}.weight"], w[f"{norm}.bias"]))

    p = "sigma_condition_precondition"
    smap = F.linear(F.leaky_relu(F.linear(sigma_emb, w[f"{p}.0.weight"], w[f"{p}.0.bias"]),
                                 0.01), w[f"{p}.2.weight"], w[f"{p}.2.bias"])
    smap = smap.reshape(-1, 1, s, s).expand(b, 1, s, s)
    h = torch.cat([z, smap], dim=1)
    for conv, norm in ((0, 1), (3, 4), (6, 7), (9, 10)):
        h = block(h, f"encoder.{conv}", f"encoder.{norm}")
    encoded = h
    for conv, norm in ((0, 1), (3, 4), (6, 7)):
        h = block(h, f"decoder.{conv}", f"decoder.{norm}", transpose=True)
    adjusted = block(torch.cat([encoded, smap], dim=1), "adjust_encoding.0",
                     "adjust_encoding.1", padding=0)
    h = block(h + adjusted, "processing.0", "processing.1")
    return F.conv2d(h, w["processing.3.weight"], w["processing.3.bias"], padding=1)


def rg_forward(w: dict, sigma_emb: torch.Tensor, features: list, s: int,
               emb: torch.Tensor | None = None) -> torch.Tensor:
    b = features[0].shape[0]

    def conv_norm(x, name, padding=0):
        x = F.conv2d(x, w[f"{name}.weight"], padding=padding)
        return F.group_norm(x, _groups(x.shape[1]), w[f"{name}.norm.weight"],
                            w[f"{name}.norm.bias"])

    smap = F.linear(sigma_emb, w["sigma_emb_linear.weight"], w["sigma_emb_linear.bias"])
    smap = F.layer_norm(smap.reshape(-1, 1, s, s), (1, s, s), w["sigma_emb_norm.weight"],
                        w["sigma_emb_norm.bias"]).expand(b, 1, s, s)
    mixing = torch.softmax(w["mixing_weights"], dim=0)
    out = 0
    for i, feat in enumerate(features):
        x = F.interpolate(feat, size=(s, s), mode="bilinear", align_corners=False)
        x = torch.cat([x, smap], dim=1)
        p = f"bottleneck_layers.{i}"
        h = F.relu(conv_norm(x, f"{p}.conv1"))
        if emb is not None:
            h = h + F.relu(F.linear(emb, w[f"{p}.emb_layers.weight"],
                                    w[f"{p}.emb_layers.bias"]))[:, :, None, None]
        h = F.relu(conv_norm(h, f"{p}.conv2", padding=1))
        h = conv_norm(h, f"{p}.conv3")
        out = out + mixing[i] * F.relu(h + conv_norm(x, f"{p}.shortcut"))
    h = torch.cat([out, smap], dim=1)
    h = F.silu(F.conv2d(h, w["output_head.0.weight"], w["output_head.0.bias"], padding=1))
    h = F.silu(F.conv2d(h, w["output_head.2.weight"], w["output_head.2.bias"], padding=1))
    return F.conv2d(h, w["output_head.4.weight"], w["output_head.4.bias"])


def assert_relclose(actual, expected, tol=1e-5):
    rel = float((actual - expected).norm() / expected.norm())
    assert rel < tol, rel


# --- (a) the name map ---------------------------------------------------------------------------

def test_cnn_name_map_is_a_bijection_onto_our_names():
    mapping = name_map("cnn")
    assert set(mapping) == set(CNN_SHAPES)
    assert len(set(mapping.values())) == len(mapping)
    assert set(mapping.values()) == set(CnnOperator(4, 64, 1280).state_dict())


def test_readout_name_map_is_a_bijection_onto_our_names():
    mapping = name_map("readout", 12)
    assert set(mapping) == set(authors_shapes("rg", 4, 1280, 64, SD15_FEATURES))
    assert len(set(mapping.values())) == len(mapping)
    ours = ReadoutOperator(SD15_FEATURES, 4, 64, 1280, 384).state_dict()
    assert set(mapping.values()) == set(ours)


# --- (b) SD-1.5 sizes ---------------------------------------------------------------------------

def test_sd15_cnn_layout_is_recognised_and_loads_strictly():
    state = authors_state("cnn", 4, 1280, 64)
    found = recognise(state)
    assert found is not None and found.arch == "cnn"
    assert (found.latent_channels, found.latent_size, found.embedding_dim) == (4, 64, 1280)
    assert found.feature_channels == [] and found.trained_steps == 0
    ours = CnnOperator(found.latent_channels, found.latent_size, found.embedding_dim)
    ours.load_state_dict(found.state, strict=True)
    mapping = name_map("cnn")
    for theirs, tensor in state.items():
        assert ours.state_dict()[mapping[theirs]].equal(tensor)


def test_sd15_readout_layout_is_recognised_and_loads_strictly():
    state = authors_state("rg", 4, 1280, 64, SD15_FEATURES, 384)
    assert sum(t.numel() for t in state.values()) > 13e6
    found = recognise(rg_file(state))
    assert found is not None and found.arch == "readout"
    assert (found.latent_channels, found.latent_size, found.embedding_dim) == (4, 64, 1280)
    assert found.feature_channels == SD15_FEATURES and found.hidden == 384
    assert found.trained_steps == 1234
    ours = ReadoutOperator(found.feature_channels, 4, 64, 1280, found.hidden, "none")
    ours.load_state_dict(found.state, strict=True)
    # 32 GroupNorm groups at SD-1.5 widths (96 and 384), as their num_norm_groups=32
    assert {m.num_groups for m in ours.modules() if isinstance(m, torch.nn.GroupNorm)} == {32}


def test_other_dicts_are_not_the_authors():
    assert recognise({"encoder.0.0.weight": torch.zeros(1)}) is None
    assert recognise([torch.zeros(1)]) is None
    assert recognise(CnnOperator(4, 8, 16).state_dict()) is None


@pytest.mark.parametrize("name,expected", [
    ("sr_8_cnn_ffhq_operator.pt", ("sr8", "ffhq")), ("sr_4_cnn_coco_operator.pt", ("sr4", "coco")),
    ("ip_rg_coco_operator.pt", ("ip", "coco")), ("gb_rg_ffhq_operator.pt", ("gb", "ffhq")),
    ("jpeg_rg_ffhq_operator.pt", ("jpeg", "ffhq")), ("operator.pt", (None, "ffhq"))])
def test_file_names_say_task_and_dataset(name, expected):
    assert describe_file(name) == expected


# --- (c) loading with the tiny prior --------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_files(tiny_prior, tmp_path_factory):
    folder = tmp_path_factory.mktemp("authors")
    z = tiny_sizes(tiny_prior)
    cnn = authors_state("cnn", z["C"], z["E"], z["s"], seed=1)
    rg = authors_state("rg", z["C"], z["E"], z["s"], z["feats"], z["P"], seed=2)
    return {"cnn": cnn, "rg": rg,
            "cnn_path": save_authors(folder, "sr_8_cnn_ffhq_operator.pt", "cnn", cnn),
            "rg_path": save_authors(folder, "ip_rg_coco_operator.pt", "rg", rg)}


def test_authors_cnn_file_loads_with_its_config(tiny_prior, tiny_files):
    op, config = load_operator(tiny_files["cnn_path"], tiny_prior)
    assert isinstance(op, CnnOperator) and not any(p.requires_grad for p in op.parameters())
    assert config.arch == "cnn" and config.task == "sr8" and config.source == "authors"
    assert config.resizer == "dps" and config.time_input == "unet"
    assert config.image_size == 64 and config.latent_size == 8
    assert config.sigma_y_range == (0.0, 0.04)
    assert "face" in config.recommended["prompt"] and config.recommended["steps"] == 999
    # --arch and --task may be given when they agree
    _, same = load_operator(tiny_files["cnn_path"], tiny_prior, "sr8", arch="cnn")
    assert same == config


def test_authors_rg_file_loads_with_its_config(tiny_prior, tiny_files):
    op, config = load_operator(tiny_files["rg_path"], tiny_prior)
    z = tiny_sizes(tiny_prior)
    assert isinstance(op, ReadoutOperator) and not op.uses_timestep
    assert config.arch == "readout" and config.task == "ip" and config.source == "authors"
    assert config.resizer == "dps" and config.time_input == "none"
    assert config.feature_channels == z["feats"] and config.hidden == z["P"]
    assert config.trained_steps == 1234 and config.sigma_y_range == (0.0, 0.1)
    assert config.recommended["prompt"] == "A high quality photo"  # coco: no "of a face"
    # P//4 = 16 is narrower than 32 groups: gcd(32, 16) = 16
    groups = {m.num_channels: m.num_groups for m in op.modules()
              if isinstance(m, torch.nn.GroupNorm)}
    assert groups == {16: 16, 64: 32}
    assert load_operator(tiny_files["rg_path"], tiny_prior, arch="readout")[1] == config


def test_the_config_survives_a_safetensors_round_trip(tiny_prior, tiny_files, tmp_path):
    op, config = load_operator(tiny_files["rg_path"], tiny_prior)
    path = save_operator(tmp_path / "converted.safetensors", op, config)
    again, cfg = load_operator(path, tiny_prior)
    assert cfg == config and cfg.time_input == "none" and cfg.source == "authors"


# --- (d) forward parity ---------------------------------------------------------------------------

def test_authors_cnn_computes_their_forward(tiny_prior, tiny_files):
    op, _ = load_operator(tiny_files["cnn_path"], tiny_prior)
    g = torch.Generator().manual_seed(3)
    z0 = torch.randn(2, 4, 8, 8, generator=g)
    sigma_emb = torch.randn(2, tiny_prior.embedding_dim, generator=g)
    with torch.no_grad():
        ours = op(z0, sigma_emb, None, None)
        expected = cnn_forward(tiny_files["cnn"], z0, sigma_emb)
    assert ours.shape == (2, 4, 8, 8)
    assert_relclose(ours, expected)
    # one σ_y embedding for the whole batch is broadcast
    with torch.no_grad():
        assert_relclose(op(z0, sigma_emb[:1], None, None),
                        cnn_forward(tiny_files["cnn"], z0, sigma_emb[:1]))


def _features(prior, batch: int, g):
    sides = [4, 8, 16, 2, 8, 4, 16, 8]  # smaller, equal and larger than the latent side
    return [torch.randn(batch, c, sides[i % len(sides)], sides[i % len(sides)], generator=g)
            for i, c in enumerate(up_block_feature_channels(prior.unet))]


def test_authors_rg_computes_their_forward_without_time(tiny_prior, tiny_files):
    op, _ = load_operator(tiny_files["rg_path"], tiny_prior)
    g = torch.Generator().manual_seed(4)
    features = _features(tiny_prior, 2, g)
    sigma_emb = torch.randn(2, tiny_prior.embedding_dim, generator=g)
    temb = torch.randn(2, tiny_prior.embedding_dim, generator=g)
    z0 = torch.randn(2, 4, 8, 8, generator=g)
    with torch.no_grad():
        ours = op(z0, sigma_emb, temb, features)  # temb is ignored: their emb=None
        expected = rg_forward(tiny_files["rg"], sigma_emb, features, 8)
        with_time = rg_forward(tiny_files["rg"], sigma_emb, features, 8, emb=temb)
    assert ours.shape == (2, 4, 8, 8)
    assert_relclose(ours, expected)
    assert float((with_time - expected).norm() / expected.norm()) > 1e-3


def test_time_input_override_feeds_the_timestep(tiny_prior, tiny_files):
    op, config = load_operator(tiny_files["rg_path"], tiny_prior, time_input="unet")
    assert config.time_input == "unet" and op.uses_timestep
    none_op, _ = load_operator(tiny_files["rg_path"], tiny_prior)
    g = torch.Generator().manual_seed(5)
    features = _features(tiny_prior, 2, g)
    sigma_emb, temb = (torch.randn(2, tiny_prior.embedding_dim, generator=g) for _ in range(2))
    with torch.no_grad():
        ours = op(None, sigma_emb, temb, features)
        without = none_op(None, sigma_emb, temb, features)
        expected = rg_forward(tiny_files["rg"], sigma_emb, features, 8, emb=temb)
    assert_relclose(ours, expected)
    assert float((ours - without).norm() / without.norm()) > 1e-3
    with pytest.raises(SiloError, match="readout operators only") as exc:
        load_operator(tiny_files["cnn_path"], tiny_prior, time_input="none")
    one_line(exc)


# --- (e) refusals --------------------------------------------------------------------------------

def _renamed(state, old, new):
    return {(new if k == old else k): v for k, v in state.items()}


@pytest.mark.parametrize("kind,old,new,expect", [
    ("cnn", "encoder.3.weight", "encoder.3.weights", "missing encoder.3.weight"),
    ("cnn", "processing.3.bias", None, "missing processing.3.bias"),
    ("rg", "output_head.2.bias", "output_head.2.b", "missing output_head.2.bias"),
    ("rg", None, "bottleneck_layers.0.sigma_emb_layers.weight",
     "unexpected bottleneck_layers.0.sigma_emb_layers.weight"),
])
def test_a_renamed_missing_or_extra_tensor_is_refused(tiny_prior, tiny_files, tmp_path, kind,
                                                      old, new, expect):
    state = dict(tiny_files[kind])
    if old is None:
        state[new] = torch.zeros(3)
    elif new is None:
        del state[old]
    else:
        state = _renamed(state, old, new)
    path = save_authors(tmp_path, f"sr_4_{kind}_ffhq_operator.pt", kind, state)
    with pytest.raises(SiloError, match="not an authors'") as exc:
        load_operator(path, tiny_prior)
    assert expect in one_line(exc)


@pytest.mark.parametrize("kind,name", [("cnn", "encoder.3.weight"),
                                       ("rg", "bottleneck_layers.2.conv2.weight")])
def test_a_wrongly_shaped_tensor_is_refused_by_name(tiny_prior, tiny_files, tmp_path, kind,
                                                    name):
    state = dict(tiny_files[kind])
    state[name] = state[name][..., :1, :1].contiguous()
    path = save_authors(tmp_path, f"gb_{kind}_ffhq_operator.pt", kind, state)
    with pytest.raises(SiloError, match="does not match") as exc:
        load_operator(path, tiny_prior)
    message = one_line(exc)
    ours = name_map("cnn" if kind == "cnn" else "readout", 4)[name]
    # the message names the tensor (silo-rt's name for it, or the file's)
    assert ours in message or name in message, message
    assert str(tuple(state[name].shape)) in message


def test_arch_contradicting_the_file_is_refused(tiny_prior, tiny_files):
    with pytest.raises(SiloError, match="authors' cnn operator, not readout") as exc:
        load_operator(tiny_files["cnn_path"], tiny_prior, arch="readout")
    one_line(exc)
    with pytest.raises(SiloError, match="authors' readout operator, not cnn"):
        load_operator(tiny_files["rg_path"], tiny_prior, arch="cnn")


def test_a_task_contradicting_the_file_name_is_refused(tiny_prior, tiny_files):
    """sr_8_cnn_ffhq_operator.pt was trained for sr8: ``restore --task sr4`` (which always
    passes its task) must not silently run it as an sr4 operator, as a .safetensors
    operator's recorded task is enforced ("trained for task 'sr8', not 'sr4'")."""
    with pytest.raises(SiloError) as exc:
        load_operator(tiny_files["cnn_path"], tiny_prior, "sr4")
    message = one_line(exc)
    assert "sr8" in message and "sr4" in message


def test_a_file_whose_name_does_not_say_its_task_needs_one(tiny_prior, tiny_files, tmp_path):
    path = save_authors(tmp_path, "operator.pt", "cnn", tiny_files["cnn"])
    with pytest.raises(SiloError, match="give --task") as exc:
        load_operator(path, tiny_prior)
    one_line(exc)
    _, config = load_operator(path, tiny_prior, "gb")
    assert config.task == "gb" and config.source == "authors"
    assert "face" in config.recommended["prompt"]  # FFHQ's prompt, their default


def test_rg_features_must_match_the_priors_unet(tiny_prior, tmp_path):
    z = tiny_sizes(tiny_prior)
    feats = list(z["feats"])
    feats[-1] += 8
    state = authors_state("rg", z["C"], z["E"], z["s"], feats, z["P"])
    path = save_authors(tmp_path, "gb_rg_ffhq_operator.pt", "rg", state)
    with pytest.raises(SiloError, match="up-block features") as exc:
        load_operator(path, tiny_prior)
    one_line(exc)
    fewer = authors_state("rg", z["C"], z["E"], z["s"], z["feats"][:-1], z["P"])
    path = save_authors(tmp_path, "jpeg_rg_ffhq_operator.pt", "rg", fewer)
    with pytest.raises(SiloError, match="up-block features"):
        load_operator(path, tiny_prior)


def test_sd15_files_are_refused_with_the_tiny_prior(tiny_prior, tmp_path):
    path = save_authors(tmp_path, "sr_4_cnn_ffhq_operator.pt", "cnn",
                        authors_state("cnn", 4, 1280, 64))
    with pytest.raises(SiloError, match="1280-d embeddings") as exc:
        load_operator(path, tiny_prior)
    one_line(exc)


def test_an_image_size_other_than_the_files_is_refused(tiny_prior, tiny_files):
    with pytest.raises(SiloError, match="64px images, not 128px") as exc:
        load_operator(tiny_files["cnn_path"], tiny_prior, image_size=128)
    one_line(exc)


def test_the_random_box_inpainting_operator_is_refused(tiny_prior, tiny_files, tmp_path):
    path = save_authors(tmp_path, "rand_ip_rg_ffhq_operator.pt", "rg", tiny_files["rg"])
    with pytest.raises(SiloError, match="random-box inpainting") as exc:
        load_operator(path, tiny_prior)
    one_line(exc)


def test_the_latent_degradation_network_is_refused(tiny_prior, tmp_path):
    state = {"initial_conv.weight": torch.zeros(64, 6, 3, 3),
             "initial_conv.bias": torch.zeros(64),
             "final_conv.weight": torch.zeros(4, 64, 3, 3), "final_conv.bias": torch.zeros(4),
             "bottleneck.noise_proj.weight": torch.zeros(64, 128),
             "skip_scale": torch.ones(1)}
    path = tmp_path / "sr_4_ldn_ffhq_operator.pt"
    torch.save(state, path)
    with pytest.raises(SiloError, match="LatentDegradationNetwork") as exc:
        load_operator(path, tiny_prior, "sr4", arch="cnn")
    one_line(exc)


def test_the_batchnorm_cnn_variant_is_refused(tiny_prior, tiny_files, tmp_path):
    state = dict(tiny_files["cnn"])
    state["encoder.1.running_mean"] = torch.zeros(17)
    path = save_authors(tmp_path, "sr_4_cnn_ffhq_operator.pt", "cnn", state)
    with pytest.raises(SiloError, match="BatchNorm") as exc:
        load_operator(path, tiny_prior)
    one_line(exc)


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {_MARKER}",))


_MARKER = "/tmp/silo_rt_authors_test_pwned"


def test_a_pickle_that_would_run_code_is_refused(tiny_prior, tiny_files, tmp_path):
    if os.path.exists(_MARKER):
        os.remove(_MARKER)
    path = tmp_path / "sr_8_cnn_ffhq_operator.pt"
    torch.save({**tiny_files["cnn"], "x": _RunsCode()}, path)
    with pytest.raises(SiloError, match="refusing") as exc:
        load_operator(path, tiny_prior)
    one_line(exc)
    assert not os.path.exists(_MARKER)
    nested = tmp_path / "ip_rg_ffhq_operator.pt"
    torch.save({**rg_file(tiny_files["rg"]), "config": {"hook": _RunsCode()}}, nested)
    with pytest.raises(SiloError, match="refusing"):
        load_operator(nested, tiny_prior)
    assert not os.path.exists(_MARKER)


def _downgrade_to_version_1(path, out):
    """Rewrite a silo-rt checkpoint as version 1 wrote it (no version or new fields)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["silo_rt_operator"])
        state = {k: f.get_tensor(k) for k in f.keys()}
    for key in ("version", "resizer", "time_input", "source", "recommended"):
        meta.pop(key)
    save_file(state, str(out), metadata={"silo_rt_operator": json.dumps(meta)})
    return out


def test_a_version_1_readout_operator_is_refused_naming_the_fix(tiny_prior, tmp_path):
    config = OperatorConfig.for_prior(tiny_prior, "readout", "ip")
    path = save_operator(tmp_path / "v2.safetensors", build_operator(config), config)
    old = _downgrade_to_version_1(path, tmp_path / "v1.safetensors")
    with pytest.raises(SiloError, match="retrain") as exc:
        load_operator(old, tiny_prior, "ip")
    assert "silo-rt train --arch readout" in one_line(exc)


def test_a_version_1_cnn_operator_loads_with_the_torch_resizer(tiny_prior, tmp_path):
    config = OperatorConfig.for_prior(tiny_prior, "cnn", "sr4")
    op = build_operator(config)
    path = save_operator(tmp_path / "v2.safetensors", op, config)
    old = _downgrade_to_version_1(path, tmp_path / "v1.safetensors")
    loaded, cfg = load_operator(old, tiny_prior, "sr4")
    assert cfg.resizer == "torch-bicubic" and cfg.version == 1
    assert cfg.time_input == "unet" and cfg.source == "silo-rt"
    for name, tensor in op.state_dict().items():
        assert loaded.state_dict()[name].equal(tensor)
    assert config.resizer == "dps" and config.version == 2  # new configs: DPS, version 2


def test_a_newer_config_version_is_refused(tiny_prior, tmp_path):
    from safetensors.torch import save_file

    config = OperatorConfig.for_prior(tiny_prior, "cnn", "sr4")
    meta = json.loads(config.to_json())
    meta["version"] = 99
    path = tmp_path / "future.safetensors"
    save_file({k: v.contiguous() for k, v in build_operator(config).state_dict().items()},
              str(path), metadata={"silo_rt_operator": json.dumps(meta)})
    with pytest.raises(SiloError, match="upgrade silo-rt") as exc:
        load_operator(path, tiny_prior, "sr4")
    one_line(exc)


def test_the_cli_reports_a_refused_authors_file_in_one_line(tiny_files, tmp_path, capsys):
    from silo_rt.cli import main

    path = save_authors(tmp_path, "rand_ip_rg_ffhq_operator.pt", "rg", tiny_files["rg"])
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--operator", str(path), "--model", "tiny", "--steps", "3",
              "--no-unet-h", "--out", str(tmp_path / "bundle")])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "random-box inpainting" in err[-1]
    assert not (tmp_path / "bundle").exists()


# --- #27: wrong ranks and types, non-finite weights: one line, named, never a traceback -------

@pytest.mark.parametrize("replacement", ["1-D", "string", "integer tensor", "NaN", "inf"])
def test_every_tensor_with_a_wrong_rank_type_or_value_is_refused_in_one_line(
        tiny_prior, tiny_files, tmp_path, replacement):
    """Each tensor of both layouts in turn: a 1-D tensor where it has another shape, a string,
    an integer tensor, or a NaN/inf inside: one SiloError line naming that tensor (sizes were
    read off unchecked tensors before: IndexError/AttributeError; non-finite weights loaded)."""
    checked = 0
    for kind in ("cnn", "rg"):
        state = tiny_files[kind]
        for name, tensor in state.items():
            bad = dict(state)
            if replacement == "1-D":
                if tensor.dim() == 1 and tensor.shape[0] == 1:
                    continue
                bad[name] = torch.zeros(1)
            elif replacement == "string":
                bad[name] = "weights"
            elif replacement == "integer tensor":
                bad[name] = torch.zeros(tensor.shape, dtype=torch.int64)
            else:
                bad[name] = tensor.clone()
                bad[name].view(-1)[-1] = float(replacement.lower())
            path = save_authors(tmp_path, f"sr_4_{kind}_ffhq_operator.pt", kind, bad)
            with pytest.raises(SiloError) as exc:
                load_operator(path, tiny_prior)
            message = one_line(exc)
            ours = name_map("cnn" if kind == "cnn" else "readout", 4).get(name, name)
            assert name in message or ours in message, message
            checked += 1
    assert checked > 100  # every tensor of both layouts


def test_non_finite_weights_in_a_silo_rt_checkpoint_are_refused(tiny_prior, tmp_path):
    config = OperatorConfig.for_prior(tiny_prior, "cnn", "sr4")
    operator = build_operator(config)
    with torch.no_grad():
        operator.process[1].bias[0] = float("nan")
    path = save_operator(tmp_path / "op.safetensors", operator, config)
    with pytest.raises(SiloError, match="process.1.bias holds 1 non-finite") as exc:
        load_operator(path, tiny_prior)
    one_line(exc)
