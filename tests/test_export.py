"""Export and the ONNX Runtime runtime: per-graph parity, end-to-end parity, refusals.

Bundles are exported once per module (tiny prior, few steps, with the fp16 step too): a CNN
operator for sr8, and a readout operator for ip with CFG and a prompt.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import END_TO_END_RELATIVE

from silo_rt.bundle_format import load_manifest
from silo_rt.degradations import get_degradation
from silo_rt.errors import SiloError
from silo_rt.export import ExportOptions, export_bundle
from silo_rt.export.atomic import export_lock, replace_dir
from silo_rt.export.attention import DEFAULT_CHUNK
from silo_rt.export.graphs import UNetOperatorGraph
from silo_rt.latents import LatentDecoder, MeasurementEncoder
from silo_rt.operators import OperatorConfig, build_operator, save_operator
from silo_rt.runtime import BundleRunner, read_manifest, step_io
from silo_rt.sampler import SamplingOptions, restore
from silo_rt.schedule import from_scheduler
from silo_rt.step import GuidedStep

CASES = {"cnn-sr8": ("cnn", "sr8", SamplingOptions("sr8", steps=12)),
         "readout-ip": ("readout", "ip", SamplingOptions("ip", steps=12, prompt="a photo",
                                                         cfg_scale=2.5))}


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.fixture(scope="module", params=list(CASES))
def exported(request, tiny_prior, tmp_path_factory):
    arch, task, options = CASES[request.param]
    torch.manual_seed(1)
    config = OperatorConfig.for_prior(tiny_prior, arch, task)
    operator = build_operator(config).eval().requires_grad_(False)
    folder = tmp_path_factory.mktemp(request.param)
    save_operator(folder / "op.safetensors", operator, config)
    out = folder / "bundle"
    stages = []
    export_bundle(tiny_prior, operator, config, ExportOptions(options, 64, precision="fp16"),
                  out, on_stage=lambda name, s: stages.append(name))
    assert stages == ["vae_encoder", "vae_decoder", "unet_h", "step", "step_fp16"]
    assert load_manifest(out).export_passes == {
        "graph vae_encoder": "applied", "graph vae_decoder": "applied",
        "graph unet_h": "applied",
        "graph step": f"applied: attention recomputed in the backward, {DEFAULT_CHUNK} query "
                      "rows a chunk",
        "graph step_fp16": f"applied: attention recomputed in the backward, {DEFAULT_CHUNK} "
                           "query rows a chunk",
        "fp16 weights": "skipped: weights fp32", "onnx check": "applied",
        "tensorrt check": "skipped: not asked (--check trt)"}
    from silo_rt.export.passes import refused_by_tensorrt

    assert refused_by_tensorrt(load_manifest(out).export_passes) == []
    assert refused_by_tensorrt({"tensorrt check": "applied: refused step, unet_h"}) == [
        "step", "unet_h"]
    return {"arch": arch, "task": task, "options": options, "operator": operator,
            "config": config, "bundle": out, "folder": folder}


def _inputs(session, seed):
    g = np.random.default_rng(seed)
    feeds = {}
    for i in session.get_inputs():
        shape = i.shape
        if i.name == "timestep":
            feeds[i.name] = np.array([g.integers(1, 1000)], np.float32)
        elif i.name == "coefficients":
            feeds[i.name] = np.array([1.3, -0.8, 0.2, 0.8, 0.1], np.float32)
        elif i.name in ("eta", "sigma_y", "cfg_scale"):
            feeds[i.name] = np.array([g.uniform(0.01, 2.0)], np.float32)
        else:
            feeds[i.name] = g.standard_normal(shape).astype(np.float32)
    return feeds


def test_graphs_are_standard_onnx(exported):
    import onnx

    manifest = read_manifest(exported["bundle"])
    for graph in manifest["graphs"].values():
        model = onnx.load(str(exported["bundle"] / graph["file"]))
        onnx.checker.check_model(model, full_check=True)
        assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
        assert model.opset_import[0].version == 18


def test_exported_graphs_follow_the_io_contract(exported):
    """Every graph's inputs and outputs, as the ONNX files hold them, are step_io's: names in
    order, ranks, dtypes and (with the manifest's dimensions) shapes; the manifest records
    the same shapes. Both cases: without CFG (no cfg_scale, context batch B; SR measurement
    smaller than the image) and with it (cfg_scale, context batch 2B)."""
    import onnx

    manifest = load_manifest(exported["bundle"])
    cfg = exported["options"].cfg_scale > 1.0
    dims = step_io.manifest_dims(manifest)
    assert dims["Bc"] == (2 if cfg else 1) * dims["B"]
    assert set(manifest.graphs) == set(step_io.GRAPHS)  # this export writes every graph
    for name, spec in manifest.graphs.items():
        io = step_io.GRAPHS[name]
        model = onnx.load(str(exported["bundle"] / spec.file), load_external_data=False)
        for found, expected in ((model.graph.input, io.input_specs(cfg)),
                                (model.graph.output, io.outputs)):
            assert [v.name for v in found] == [s.name for s in expected], name
            for value, contract in zip(found, expected):
                tensor = value.type.tensor_type
                assert onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type) == \
                    np.dtype(contract.dtype), (name, value.name)
                shape = tuple(d.dim_value for d in tensor.shape.dim)
                assert len(shape) == contract.rank and shape == contract.resolve(dims), \
                    (name, value.name, shape)
        recorded = {**spec.inputs, **spec.outputs}
        assert recorded == {s.name: list(s.resolve(dims))
                            for s in (*io.input_specs(cfg), *io.outputs)}, name


def test_tensorrt_parses_and_builds_every_graph(exported):
    """NVIDIA's parser and AOT builder (TensorRT-RTX, no GPU) accept the whole bundle,
    the fp16 step with its float32 tail included."""
    pytest.importorskip("tensorrt_rtx")
    from silo_rt.runtime.tensorrt.check import check_bundle_with_tensorrt

    verdicts = check_bundle_with_tensorrt(exported["bundle"],
                                          load_manifest(exported["bundle"]).graph_files)
    assert {v.graph for v in verdicts} == {"vae_encoder", "vae_decoder", "unet_h", "step",
                                           "step_fp16"}
    assert all(v.ok for v in verdicts), [(v.graph, v.message) for v in verdicts if not v.ok]


def test_fp16_engines_keep_the_step_tail_in_fp32(exported):
    """The FP32 tail of a real step graph: the gradient clamp, no Conv or MatMul."""
    import onnx

    from silo_rt.runtime.tensorrt.fp32_tail import fp32_tail

    model = onnx.load(str(exported["bundle"] / "step.onnx"))
    tail = fp32_tail(model)
    kinds = {n.op_type for n in model.graph.node if n.name in tail}
    assert "Clip" in kinds
    assert not kinds & {"Conv", "ConvTranspose", "MatMul", "Gemm"}
    assert len(tail) < len(model.graph.node) / 4


def test_forward_graphs_match_pytorch(exported, tiny_prior):
    runner = BundleRunner(exported["bundle"])
    step = GuidedStep(tiny_prior, exported["operator"],
                      exported["options"].cfg_scale)
    modules = {"vae_encoder": MeasurementEncoder(tiny_prior, exported["task"], 64),
               "vae_decoder": LatentDecoder(tiny_prior), "unet_h": UNetOperatorGraph(step)}
    for name, module in modules.items():
        feeds = _inputs(runner.graphs.session(name), seed=11)
        if name == "vae_encoder":
            feeds["measurement"] = np.clip(feeds["measurement"], -1, 1)
        ours = runner.graphs.run(name, **feeds)
        io = step_io.GRAPHS[name]
        with torch.no_grad():
            ref = module(*[torch.from_numpy(feeds[n]) for n in io.input_names()])
        ref = ref if isinstance(ref, tuple) else (ref,)
        for out_name, a, b in zip(io.output_names, ours, ref):
            assert rel(a, b) <= 1e-4, f"{name}.{out_name}: {rel(a, b):.2e}"


def test_step_graph_matches_pytorch_and_its_gradient_matches_autograd(exported, tiny_prior):
    runner = BundleRunner(exported["bundle"])
    session = runner.graphs.session("step")
    feeds = _inputs(session, seed=5)
    names = [i.name for i in session.get_inputs()]
    step = GuidedStep(tiny_prior, exported["operator"],
                      exported["options"].cfg_scale)
    args = [torch.from_numpy(feeds[n]) for n in names]
    z_prev, loss = step(*args)
    ours = runner.graphs.run("step", **feeds)
    assert rel(ours[0], z_prev) <= 1e-4 and rel(ours[1], loss) <= 1e-4

    # The gradient alone: with η = 1 and η = 0 the outputs differ by −clamp(∂L/∂z_t, −1, 1).
    with_eta = dict(feeds, eta=np.ones(1, np.float32))
    without = dict(feeds, eta=np.zeros(1, np.float32))
    grad_ort = -(runner.graphs.run("step", **with_eta)[0] - runner.graphs.run("step",
                                                                               **without)[0])
    z = args[0].clone().requires_grad_()
    kw = dict(zip(names, args))
    extra = (kw["cfg_scale"],) if "cfg_scale" in kw else ()
    ref_loss, _ = step.measurement_loss(z, kw["timestep"], kw["coefficients"], kw["w"],
                                        kw["context"], kw["sigma_y"], *extra)
    (grad,) = torch.autograd.grad(ref_loss, z)
    assert grad.abs().max() < 1  # unclamped, so the comparison sees the whole gradient
    assert rel(grad_ort, grad.clamp(-1, 1)) <= 1e-4


def test_manifest_records_the_restoration(exported, tiny_prior):
    m = read_manifest(exported["bundle"])
    options = exported["options"]
    schedule = from_scheduler(tiny_prior.scheduler, options.steps)
    assert m["task"] == exported["task"] and m["arch"] == exported["arch"]
    np.testing.assert_allclose(m["schedule"]["coefficients"], schedule.coefficients)
    assert m["schedule"]["timesteps"] == schedule.timesteps.tolist()
    assert m["eta"] == options.resolved_eta and m["cfg_scale"] == options.cfg_scale
    assert m["prior"]["fingerprint"] == tiny_prior.fingerprint()
    assert m["prior"]["random_weights"] is True
    context = np.load(exported["bundle"] / "context.npy")
    np.testing.assert_allclose(context, tiny_prior.encode_prompt(options.prompt,
                                                                 options.cfg_scale).numpy())
    assert set(m["files"]) == {p.name for p in exported["bundle"].iterdir()} - {"manifest.json"}
    side = 64 // {"sr8": 8, "ip": 1}[exported["task"]]
    assert m["measurement_shape"] == [1, 3, side, side] and m["latent_shape"] == [1, 4, 8, 8]


def test_end_to_end_parity_with_the_reference(exported, tiny_prior):
    options = exported["options"]
    side = read_manifest(exported["bundle"])["measurement_shape"][-1]
    y = np.random.default_rng(2).uniform(-1, 1, (1, 3, side, side)).astype(np.float32)
    ours = BundleRunner(exported["bundle"]).restore(y, seed=9)
    options = SamplingOptions(**{**options.__dict__, "seed": 9})
    ref = restore(tiny_prior, exported["operator"], torch.from_numpy(y),
                  options).numpy()
    error = rel(ours, ref)
    print(f"end-to-end relative difference {exported['arch']}/{exported['task']}: {error:.2e}")
    assert error < END_TO_END_RELATIVE


def test_keep_measured_imposes_the_measurement(exported):
    runner = BundleRunner(exported["bundle"], threads=2)
    side = read_manifest(exported["bundle"])["measurement_shape"][-1]
    y = np.random.default_rng(4).uniform(-0.5, 0.5, (1, 3, side, side)).astype(np.float32)
    plain = runner.restore(y, seed=1)
    kept = runner.restore(y, seed=1, keep_measured=True)
    if exported["task"] != "ip":  # sr: the torch degradation of the result gives back y
        def misfit(x):
            return np.linalg.norm(get_degradation(exported["task"])(torch.from_numpy(x))
                                  .numpy() - y)

        # exact but for clipping to [-1, 1] (the random tiny model saturates some pixels)
        assert kept.min() >= -1 and kept.max() <= 1
        assert misfit(kept) < 0.05 * misfit(plain)
        return
    box = slice(side // 4, side // 4 + side // 2)
    np.testing.assert_array_equal(kept[..., box, box], plain[..., box, box])
    outside = np.ones(y.shape, bool)
    outside[..., box, box] = False
    np.testing.assert_array_equal(kept[outside], y[outside])
    assert not np.allclose(plain[outside], y[outside])


def _copy(bundle, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(bundle, target)
    return target


def test_tampered_missing_and_newer_bundles_are_refused(exported, tmp_path):
    bundle = _copy(exported["bundle"], tmp_path)
    step = bundle / "step.onnx"
    data = bytearray(step.read_bytes())
    data[len(data) // 2] ^= 0xFF
    step.write_bytes(bytes(data))
    with pytest.raises(SiloError, match="does not match its sha256"):
        BundleRunner(bundle)
    step.unlink()
    with pytest.raises(SiloError, match="missing step.onnx"):
        BundleRunner(bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["format_version"] = 99
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SiloError, match="format version 99"):
        BundleRunner(bundle)
    with pytest.raises(SiloError, match="not a silo-rt bundle"):
        BundleRunner(tmp_path)


def _cli(*argv):
    return subprocess.run([sys.executable, "-m", "silo_rt", *map(str, argv)],
                          capture_output=True, text=True)


def test_cli_refuses_wrong_task_and_size_without_output(exported, tmp_path):
    from PIL import Image

    out = tmp_path / "x.png"
    side = read_manifest(exported["bundle"])["measurement_shape"][-1]
    wrong_size = tmp_path / "wrong.png"
    Image.new("RGB", (side * 2, side * 2)).save(wrong_size)
    result = _cli("restore", wrong_size, "--bundle", exported["bundle"], "--steps", "2",
                  "--out", out)
    if exported["task"] == "ip":  # the only task not restored by tiles at another size
        assert result.returncode == 2 and "cannot be restored by tiles" in result.stderr
        assert not out.exists()
    else:
        assert result.returncode == 0 and "tiles:" in result.stderr, result.stderr
        scale = 8 if exported["task"] == "sr8" else 1
        assert Image.open(out).size == (side * 2 * scale, side * 2 * scale)
        out.unlink()
    right = tmp_path / "right.png"
    Image.new("RGB", (side, side)).save(right)
    other = "gb" if exported["task"] != "gb" else "ip"
    result = _cli("restore", right, "--bundle", exported["bundle"], "--task", other,
                  "--out", out)
    assert result.returncode == 2 and f"not '{other}'" in result.stderr and not out.exists()


BLOCKER = textwrap.dedent("""
    import sys
    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in {'torch', 'diffusers', 'transformers', 'kornia'}:
                raise ImportError('blocked in the runtime test: ' + name)
    sys.meta_path.insert(0, Blocker())
    from silo_rt.cli import main
    main(sys.argv[1:])
""")


def test_runtime_restores_without_torch(exported, tmp_path):
    from PIL import Image

    side = read_manifest(exported["bundle"])["measurement_shape"][-1]
    y = tmp_path / "y.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side, 3), np.uint8)).save(y)
    out = tmp_path / "x.png"
    result = subprocess.run([sys.executable, "-c", BLOCKER, "restore", str(y), "--bundle",
                             str(exported["bundle"]), "--seed", "4", "--out", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "backend: auto: ort (SILO_RT_AUTO_CPU=ort)" in result.stderr  # conftest pins it
    assert Image.open(out).size == (64, 64)


def test_export_lock_refuses_a_concurrent_export(tmp_path):
    out = tmp_path / "bundle"
    with export_lock(out), pytest.raises(SiloError, match="another export"), export_lock(out):
        pass
    # A lock left by a dead process is taken over.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    out.with_name("bundle.lock").write_text(dead)
    with export_lock(out):
        assert out.with_name("bundle.lock").read_text() == str(os.getpid())
    assert not out.with_name("bundle.lock").exists()


def test_replacing_a_bundle_swaps_it_whole(tmp_path):
    target, new = tmp_path / "bundle", tmp_path / ".bundle.new"
    for folder, text in ((target, "old"), (new, "new")):
        folder.mkdir()
        (folder / "manifest.json").write_text(text)
    how = replace_dir(new, target)
    assert (target / "manifest.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # the old one is gone
    if sys.platform.startswith("linux"):
        assert how == "exchange"  # one atomic swap: no moment without a bundle


def test_failed_export_leaves_nothing(tiny_prior, tmp_path, monkeypatch):
    import silo_rt.export.passes as passes_module

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(passes_module, "export_step", explode)
    config = OperatorConfig.for_prior(tiny_prior, "cnn", "gb")
    operator = build_operator(config).eval().requires_grad_(False)
    options = ExportOptions(SamplingOptions("gb", steps=3), 64, include_unet_h=False)
    with pytest.raises(KeyboardInterrupt):
        export_bundle(tiny_prior, operator, config, options, tmp_path / "b")
    assert list(tmp_path.iterdir()) == []
