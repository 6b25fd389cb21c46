"""Bundle integrity and bad input: nothing outside a bundle is trusted, every manifest field
is checked before use, and failures are one SiloError line (causes 1, 2, 4, 5 and 8 of the
bad-input review; the CLI's side is in test_cli.py)."""

import json
import os
import shutil
import stat

import numpy as np
import pytest
from PIL import Image

from silo_rt.bundle_format import read_manifest, write_manifest
from silo_rt.demo import demo_bundle
from silo_rt.errors import SiloError
from silo_rt.runtime import BundleRunner


@pytest.fixture
def bundle(tmp_path):
    """A private copy of the embedded sr4 demo bundle."""
    target = tmp_path / "bundle"
    shutil.copytree(demo_bundle("sr4"), target)
    return target


def _edit(bundle, change):
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_embedded_bundles_still_load():
    for task in ("sr4", "ip"):
        assert read_manifest(demo_bundle(task))["task"] == task


def _outside_graph(bundle, manifest):
    outside = bundle.parent / "outside"
    outside.mkdir()
    shutil.copy(bundle / "step.onnx", outside / "step.onnx")
    manifest["graphs"]["step"]["file"] = "../outside/step.onnx"


def _unlisted_graph(bundle, manifest):
    shutil.copy(bundle / "step.onnx", bundle / "other.onnx")
    manifest["graphs"]["step"]["file"] = "other.onnx"


def _unlisted_context(bundle, manifest):
    manifest["context"]["file"] = "/etc/passwd"


def _listed_outside(bundle, manifest):
    digest = manifest["files"].pop("context.npy")
    manifest["files"]["../context.npy"] = digest
    shutil.copy(bundle / "context.npy", bundle.parent / "context.npy")
    manifest["context"]["file"] = "../context.npy"


@pytest.mark.parametrize("case, message", [
    (_outside_graph, "graphs.step.file '../outside/step.onnx' is not a plain relative path"),
    (_unlisted_graph, "graphs.step.file 'other.onnx' is not listed in files"),
    (_unlisted_context, "context.file '/etc/passwd' is not a plain relative path"),
    (_listed_outside, "'../context.npy' is not a plain relative path"),
])
def test_cause1_paths_outside_the_bundle_or_unlisted_are_refused(bundle, case, message):
    _edit(bundle, lambda m: case(bundle, m))
    with pytest.raises(SiloError, match=message.replace(".", r"\.")):
        BundleRunner(bundle)


def test_cause1_symlinked_files_are_refused(bundle, tmp_path):
    outside = tmp_path / "elsewhere.onnx"
    shutil.copy(bundle / "step.onnx", outside)
    (bundle / "step.onnx").unlink()
    (bundle / "step.onnx").symlink_to(outside)  # same bytes, so the sha256 still matches
    with pytest.raises(SiloError, match="symlink"):
        BundleRunner(bundle)


def test_cause1_unlisted_extra_files_are_ignored(bundle):
    (bundle / "extra.onnx").write_bytes(b"not loaded")
    assert BundleRunner(bundle).task == "sr4"


@pytest.mark.parametrize("change, field", [
    (lambda m: m.update(eta="0.5"), "eta must be a number"),
    (lambda m: m.update(eta=float("nan")), "not valid JSON"),
    (lambda m: m.pop("context"), "context is missing"),
    (lambda m: m.update(files=list(m["files"])), "files must be an object"),
    (lambda m: m.update(latent_shape=[1, 4, 10**9, 10**9]), "latent_shape must be a list"),
    (lambda m: m.update(batch=10**6), "batch must be between 1 and 64"),
    (lambda m: m.update(image_size=10**6), "image_size must be between 8 and 4096"),
    (lambda m: m["context"].update(shape=[1, 10**5, 10**5]), "context.shape"),
    (lambda m: m["graphs"]["step"]["inputs"].update(z_t=[10**7]), "graphs.step.inputs.z_t"),
    (lambda m: m["schedule"].update(timesteps=list(range(5000))), "schedule.timesteps"),
    (lambda m: m["schedule"].update(coefficients=[[1.0]]), "schedule.coefficients"),
    (lambda m: m.update(sigma_y=-1), "sigma_y must be a finite number in"),
    (lambda m: m["files"].update({"step.onnx": "abc"}), "files entry 'step.onnx'"),
    (lambda m: m.update(format_version="1"), "format_version must be an integer"),
])
def test_cause2_every_manifest_field_is_type_and_range_checked(bundle, change, field):
    _edit(bundle, change)
    with pytest.raises(SiloError, match=field.replace(".", r"\.")) as info:
        BundleRunner(bundle)
    assert "\n" not in str(info.value)


def test_cause2_the_writer_checks_like_the_reader(bundle, tmp_path):
    manifest = read_manifest(bundle)
    write_manifest(tmp_path, manifest)  # a valid manifest round-trips
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    with pytest.raises(SiloError, match="eta"):
        write_manifest(tmp_path, {**manifest, "eta": -1.0})


def test_cause2_operator_metadata_with_absurd_sizes_is_refused():
    from silo_rt.operators import OperatorConfig

    with pytest.raises(SiloError, match="image_size must be an integer in 8…4096"):
        OperatorConfig("cnn", "sr4", 10**7, 4, 16, 128)
    with pytest.raises(SiloError, match="sigma_y_range"):
        OperatorConfig("cnn", "sr4", 64, 4, 16, 128, sigma_y_range=(0.0, float("nan")))
    with pytest.raises(SiloError, match="latent_size"):
        OperatorConfig("cnn", "sr4", 64, 4, "16", 128)


def test_cause4_runtime_refuses_nan_eta_and_negative_sigma(bundle):
    runner = BundleRunner(bundle)
    y = np.zeros(runner.manifest.measurement_shape, np.float32)
    with pytest.raises(SiloError, match="eta must be a finite number"):
        runner.restore(y, eta=float("nan"), steps=2)
    with pytest.raises(SiloError, match="sigma_y must be in"):
        runner.restore(y, sigma_y=-1.0, steps=2)


def test_cause4_sampling_options_refuse_nan():
    from silo_rt.sampler import SamplingOptions

    for options in (SamplingOptions("sr4", eta=float("nan")),
                    SamplingOptions("sr4", steps=5000),
                    SamplingOptions("sr4", cfg_scale=float("inf"))):
        with pytest.raises(SiloError):
            options.validate()


def test_cause5_16_bit_images_are_scaled_not_clipped(tmp_path):
    from silo_rt.images import read_image

    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((8, 8), 32768, np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    x = read_image(path)
    assert x.shape == (1, 3, 8, 8)
    np.testing.assert_allclose(x, 0.0, atol=1e-3)  # 50 % grey, not white


def test_cause5_decompression_bombs_are_refused_from_the_header(tmp_path):
    from silo_rt.images import read_image

    path = bomb_png(tmp_path / "bomb.png")
    with pytest.raises(SiloError, match="bomb.png is too large"):
        read_image(path)


def bomb_png(path, side=100_000):
    """A PNG whose header claims ``side`` x ``side`` pixels (its data is a few bytes)."""
    import struct
    import zlib

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))
    return path


def test_cause8_export_removes_folders_of_dead_exporters(tmp_path):
    from silo_rt.export.atomic import export_lock

    out = tmp_path / "b"
    dead = tmp_path / ".b.k3x9q_7z.partial"  # what mkdtemp named a killed export's folder
    dead.mkdir()
    (dead / "step.onnx").write_bytes(b"half")
    sibling = tmp_path / ".b.c.k3x9q_7z.partial"  # another bundle's (b.c): not ours
    sibling.mkdir()
    with export_lock(out):
        assert not dead.exists() and sibling.exists()


def test_cause8_exported_bundles_get_the_usual_modes(tiny_prior, tmp_path, monkeypatch):
    import silo_rt.export.bundle as bundle_module
    from silo_rt.export import ExportOptions, export_bundle
    from silo_rt.operators import OperatorConfig, build_operator
    from silo_rt.sampler import SamplingOptions

    def write(prior, operator, op_config, options, folder, *rest):
        (folder / "graph.onnx").write_bytes(b"graph")
        return {}

    monkeypatch.setattr(bundle_module, "_write_bundle", write)
    config = OperatorConfig.for_prior(tiny_prior, "cnn", "gb")
    operator = build_operator(config).eval().requires_grad_(False)
    options = ExportOptions(SamplingOptions("gb", steps=3), 64, include_unet_h=False)
    old = os.umask(0o022)
    try:
        export_bundle(tiny_prior, operator, config, options, tmp_path / "b")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "b" / "graph.onnx").stat().st_mode) == 0o644


def test_cause8_too_many_steps_are_refused_before_tracing(tiny_prior, tmp_path, monkeypatch):
    import silo_rt.export.bundle as bundle_module
    from silo_rt.export import ExportOptions, export_bundle
    from silo_rt.operators import OperatorConfig, build_operator
    from silo_rt.sampler import SamplingOptions

    monkeypatch.setattr(bundle_module, "_write_bundle", pytest.fail)
    config = OperatorConfig.for_prior(tiny_prior, "cnn", "gb")
    operator = build_operator(config).eval().requires_grad_(False)
    with pytest.raises(SiloError, match="steps must be between 1 and 1000"):
        export_bundle(tiny_prior, operator, config,
                      ExportOptions(SamplingOptions("gb", steps=5000), 64), tmp_path / "b")
    assert list(tmp_path.iterdir()) == []
