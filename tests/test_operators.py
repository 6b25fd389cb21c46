"""Operator architectures, checkpoints and refusal of mismatched or unsafe files."""

import json
import os
import pickle

import pytest
import torch

from silo_rt.errors import SiloError
from silo_rt.operators import OperatorConfig, build_operator, load_operator, save_operator
from silo_rt.operators.features import UpBlockFeatureTap, up_block_feature_channels


def _count(module):
    return sum(p.numel() for p in module.parameters())


def test_sd15_sized_operators_match_the_authors_sizes():
    """At SD-1.5 sizes the CNN has ~3.5M parameters (~0.2M in convs), the readout ~13.7M."""
    sd15_features = [1280] * 6 + [640] * 3 + [320] * 3
    cnn = build_operator(OperatorConfig("cnn", "sr8", 512, 4, 64, 1280))
    convs = sum(_count(m) for m in cnn.modules()
                if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)))
    assert 3.3e6 < _count(cnn) < 3.7e6 and 0.15e6 < convs < 0.25e6
    readout = build_operator(OperatorConfig("readout", "sr8", 512, 4, 64, 1280,
                                            feature_channels=sd15_features, hidden=384))
    assert 13.0e6 < _count(readout) < 14.5e6


def test_feature_tap_reads_conv2_outputs(tiny_prior):
    unet = tiny_prior.unet
    z = torch.randn(tiny_prior.latent_shape(64))
    with UpBlockFeatureTap(unet) as tap:
        unet(z, torch.tensor([10]), encoder_hidden_states=tiny_prior.encode_prompt(""))
    assert [f.shape[1] for f in tap.features] == up_block_feature_channels(unet)
    assert not unet.up_blocks[0].resnets[0].conv2._forward_hooks  # removed on exit


@pytest.mark.parametrize("arch", ["cnn", "readout"])
def test_checkpoint_round_trip(tiny_prior, tmp_path, arch):
    config = OperatorConfig.for_prior(tiny_prior, arch, "ip")
    op = build_operator(config)
    path = save_operator(tmp_path / "op.safetensors", op, config)
    loaded, cfg = load_operator(path, tiny_prior, "ip")
    assert cfg == config
    for (k, a), (_, b) in zip(op.state_dict().items(), loaded.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)
    assert not any(p.requires_grad for p in loaded.parameters())


def test_plain_state_dict_needs_arch_and_loads(tiny_prior, tmp_path):
    config = OperatorConfig.for_prior(tiny_prior, "cnn", "gb")
    path = tmp_path / "op.pt"
    torch.save(build_operator(config).state_dict(), path)
    with pytest.raises(SiloError, match="--arch"):
        load_operator(path, tiny_prior, "gb")
    op, cfg = load_operator(path, tiny_prior, "gb", arch="cnn")
    assert cfg.arch == "cnn" and cfg.prior_fingerprint == tiny_prior.fingerprint()
    with pytest.raises(SiloError, match="does not match"):
        load_operator(path, tiny_prior, "gb", arch="readout")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/silo_rt_pwned",))


def test_malicious_pickle_is_refused(tiny_prior, tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"weight": _Exploit()}, f)
    with pytest.raises(SiloError, match="refusing"):
        load_operator(path, tiny_prior, "gb", arch="cnn")
    assert not os.path.exists("/tmp/silo_rt_pwned")


def test_mismatched_task_size_and_prior_are_refused(tiny_prior, tmp_path):
    config = OperatorConfig.for_prior(tiny_prior, "cnn", "sr4")
    path = save_operator(tmp_path / "op.safetensors", build_operator(config), config)
    with pytest.raises(SiloError, match="task 'sr4', not 'sr8'"):
        load_operator(path, tiny_prior, "sr8")
    with pytest.raises(SiloError, match="128px"):
        load_operator(path, tiny_prior, "sr4", image_size=128)
    config.prior_fingerprint = "0123456789abcdef"
    other = save_operator(tmp_path / "other.safetensors", build_operator(config), config)
    with pytest.raises(SiloError, match="trained for prior"):
        load_operator(other, tiny_prior, "sr4")


def test_garbage_checkpoints_are_refused(tiny_prior, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(SiloError, match="cannot read"):
        load_operator(bad, tiny_prior, "sr4")
    with pytest.raises(SiloError, match="not found"):
        load_operator(tmp_path / "missing.safetensors", tiny_prior, "sr4")
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(1)}, str(tmp_path / "plain.safetensors"),
              metadata={"other": json.dumps({})})
    with pytest.raises(SiloError, match="no silo-rt operator config"):
        load_operator(tmp_path / "plain.safetensors", tiny_prior, "sr4")
