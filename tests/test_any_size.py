"""Any size and aspect: the measurement models at non-square sizes against their definitions,
and ``degrade`` / ``restore`` on photographs no bundle was exported for."""

import numpy as np
import pytest
import torch
from cli_run import run
from PIL import Image

from silo_rt.degradations import get_degradation


def _rand(height, width, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).uniform(-1, 1, (1, 3, height, width))
                            .astype(np.float32))


@pytest.mark.parametrize("task", ["sr4", "sr8"])
def test_sr_of_a_non_square_image_is_the_two_square_resizers_one_per_axis(task):
    """For ``x = u vᵀ`` a separable resize gives ``(R_H u)(R_W v)ᵀ``; ``R_H u`` is read off the
    square H×H definition applied to ``u 1ᵀ`` (rows of R sum to one), ``R_W v`` likewise."""
    sr = get_degradation(task)
    height, width = 48, 80
    u, v = torch.rand(height, dtype=torch.float64), torch.rand(width, dtype=torch.float64)
    x = torch.outer(u, v)[None, None]
    got = sr(x)[0, 0]
    rows = sr(torch.outer(u, torch.ones(height, dtype=torch.float64))[None, None])[0, 0, :, 0]
    cols = sr(torch.outer(torch.ones(width, dtype=torch.float64), v)[None, None])[0, 0, 0]
    assert got.shape == (height // sr.scale, width // sr.scale)
    torch.testing.assert_close(got, torch.outer(rows, cols), rtol=1e-10, atol=1e-12)


def test_blur_of_a_non_square_image_is_scipys_gaussian_filter_with_mirror_edges():
    from scipy.ndimage import gaussian_filter

    x = _rand(40, 72).double()
    got = get_degradation("gb")(x).numpy()
    # radius 30 = truncate 10 sigma; torch's "reflect" is scipy's "mirror" (edge not repeated)
    expected = np.stack([gaussian_filter(x[0, c].numpy(), sigma=3.0, mode="mirror",
                                         truncate=10.0) for c in range(3)])[None]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_jpeg_of_an_odd_size_is_the_codec_on_edge_replicated_blocks():
    """JPEG pads an image to whole 16×16 blocks by repeating its edge; so does ours."""
    x = _rand(40, 50)
    got = get_degradation("jpeg")(x)
    padded = torch.nn.functional.pad(x, (0, 14, 0, 8), mode="replicate")
    expected = get_degradation("jpeg")(padded)[..., :40, :50]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(got, x, atol=0.05)  # the codec did something


def _photo(path, width, height, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 127 + 80 * np.sin(xx / 9.0)[..., None] * np.cos(yy / 7.0)[..., None]
    pixels = np.clip(base + rng.normal(0, 10, (height, width, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_a_40x30_sr4_measurement_restores_to_160x120_with_the_demo(tmp_path, capsys):
    """The issue's acceptance: degrade a 161×122 photograph (cropped to 160×120), restore the
    40×30 measurement with the embedded sr4 demo bundle (64 px tiles)."""
    photo = _photo(tmp_path / "photo.png", 161, 122)
    code, _, err = run(["degrade", photo, "--task", "sr4", "--out", tmp_path / "y.png"],
                       capsys)
    assert code == 0, err
    assert "cropped 161x122 to 160x120" in err
    assert Image.open(tmp_path / "y.png").size == (40, 30)
    code, _, err = run(["restore", tmp_path / "y.png", "--steps", "4", "--backend", "ort",
                        "--out", tmp_path / "x.png"], capsys)
    assert code == 0, err
    assert "9 tile(s) of 64x64 px" in err  # 3 x 3 with the default overlap (4)
    assert Image.open(tmp_path / "x.png").size == (160, 120)


def test_degrade_resizes_by_the_longer_side_or_exactly(tmp_path, capsys):
    photo = _photo(tmp_path / "photo.png", 200, 100)
    for size, expected in (("80", (20, 10)), ("96x64", (24, 16))):
        out = tmp_path / f"y{size}.png"
        code, _, err = run(["degrade", photo, "--task", "sr4", "--size", size, "--out", out],
                           capsys)
        assert code == 0, err
        assert Image.open(out).size == expected


@pytest.mark.parametrize(("args", "message"), [
    (["--task", "ip"], "task ip needs a square image"),
    (["--task", "gb", "--size", "40x20"], "task gb needs both image sides larger than 30"),
    (["--task", "sr4", "--size", "0x20"], "is not N or WxH"),
])
def test_degrade_refuses_what_it_cannot_measure_in_one_line(tmp_path, capsys, args, message):
    photo = _photo(tmp_path / "photo.png", 100, 70)
    out = tmp_path / "y.png"
    code, _, err = run(["degrade", photo, *args, "--out", out], capsys)
    assert code != 0 and message in err
    assert "Traceback" not in err and not out.exists()


def test_restoring_ip_at_another_size_says_why_in_one_line(tmp_path, capsys):
    y = tmp_path / "y.png"
    Image.fromarray(np.full((48, 80, 3), 128, np.uint8)).save(y)
    code, _, err = run(["restore", y, "--task", "ip", "--steps", "2", "--backend", "ort",
                        "--out", tmp_path / "x.png"], capsys)
    assert code != 0 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot be restored by tiles" in errors[0]
    assert not (tmp_path / "x.png").exists()


def test_a_folder_of_mixed_sizes_restores_each_at_its_size(tmp_path, capsys):
    import json

    from silo_rt.datasets import image_seed

    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for name, (h, w) in {"a.png": (16, 16), "b.png": (12, 20)}.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)
    code, _, err = run(["restore", folder, "--steps", "2", "--backend", "ort",
                        "--out", tmp_path / "out"], capsys)
    assert code == 0, err
    assert Image.open(tmp_path / "out" / "a.png").size == (64, 64)
    assert Image.open(tmp_path / "out" / "b.png").size == (80, 48)
    log = [json.loads(line) for line in
           (tmp_path / "out" / "restore-log.jsonl").read_text().splitlines()]
    assert {r["image"]: r["seed"] for r in log} == {"a.png": image_seed(0, "a.png"),
                                                    "b.png": image_seed(0, "b.png")}
