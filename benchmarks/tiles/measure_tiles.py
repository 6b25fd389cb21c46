"""Tiled restoration on the embedded demo (sr4, 64 px tiles): quality, seams, time, memory.

    silo-rt demo-data --out data
    python benchmarks/tiles/measure_tiles.py quality --data data --out benchmarks/tiles
    python benchmarks/tiles/measure_tiles.py timing  --out benchmarks/tiles
    python benchmarks/tiles/measure_tiles.py memory  --out benchmarks/tiles
    python benchmarks/tiles/measure_tiles.py picture --data data --out benchmarks/tiles
    python benchmarks/tiles/measure_tiles.py table   --out benchmarks/tiles

``quality``: the 18 held-out 64×64 crops (``heldout/``; ``--every k``: every k-th) grown
to windows of 128×128 and 96×160 (H×W) of the same photographs (the held-out photographs at
the demo's scale 1/2, the crop centred in the window, clamped to the photograph). Each
window's sr4 measurement is restored by tiles with overlap 0, 2 and 4 latent px (96×160: 2
only), and the held-out crop itself is restored whole (the bundle's own size). Recorded per
window: PSNR/SSIM of the tiled result and of bicubic on the whole window; PSNR of the tiled
result on the crop's pixels against the whole restoration of that crop (like with like);
the seam score (mean gradient magnitude across tile borders ÷ elsewhere) of the result and
of the ground truth.
``timing``: seconds per megapixel against tile count; ``memory``: peak RSS of a fresh
process per size. The JSON files are rewritten after every unit; a rerun skips done units.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from silo_rt.records import load_record, record_header, save_record

WINDOWS = {"128x128": (128, 128), "96x160": (96, 160)}  # name: (height, width)
OVERLAPS = (0, 2, 4)
TABLE_OVERLAPS = (0, 2, 4, 6, 8)
STEPS = 50
SEED = 0


def _header(args) -> dict:
    return {**record_header("benchmarks/tiles/measure_tiles.py", sys.argv[1:]),
            "threads": args.threads, "backend": "ort", "steps": STEPS, "seed": SEED}


def _runner(threads: int):
    from silo_rt.demo import demo_bundle
    from silo_rt.runtime import BundleRunner

    return BundleRunner(demo_bundle("sr4"), backend="ort", threads=threads)


def heldout_windows(data: Path):
    """``(name, window (1, 3, H, W), (top, left) of the 64 px crop in it)`` for each
    held-out crop and window shape, cut from the photographs the crops came from."""
    from silo_rt.demo.data import EVAL_SIZE, HELDOUT_IMAGES, heldout_photograph

    for photo in HELDOUT_IMAGES:
        image = heldout_photograph(photo)
        h, w = image.shape[:2]
        index = 0
        for top in range(0, h - EVAL_SIZE + 1, EVAL_SIZE):
            for left in range(0, w - EVAL_SIZE + 1, EVAL_SIZE):
                crop_file = data / "heldout" / f"{photo}_{index:02d}.png"
                for shape_name, (wh, ww) in WINDOWS.items():
                    wt = min(max(top - (wh - EVAL_SIZE) // 2, 0), h - wh)
                    wl = min(max(left - (ww - EVAL_SIZE) // 2, 0), w - ww)
                    pixels = image[wt:wt + wh, wl:wl + ww]
                    window = pixels.transpose(2, 0, 1)[None].astype(np.float32) / 127.5 - 1
                    yield (f"{photo}_{index:02d}", shape_name, window, (top - wt, left - wl),
                           crop_file)
                index += 1


def seam_score(image: np.ndarray, rows: list[int], cols: list[int]) -> float:
    """Mean |gradient| across the pixel lines in ``rows``/``cols`` ÷ mean |gradient| across
    all other lines (``image`` ``(1, 3, H, W)``; a line ``c`` is the step from ``c−1`` to
    ``c``)."""
    dx = np.abs(np.diff(image, axis=-1)).mean(axis=(0, 1, 2))  # (W-1,): step c-1 -> c
    dy = np.abs(np.diff(image, axis=-2)).mean(axis=(0, 1, 3))
    seam_x = np.zeros(dx.shape, bool)
    seam_y = np.zeros(dy.shape, bool)
    for c in cols:
        seam_x[c - 1] = True
    for r in rows:
        seam_y[r - 1] = True
    seams = np.concatenate([dx[seam_x], dy[seam_y]])
    rest = np.concatenate([dx[~seam_x], dy[~seam_y]])
    return float(seams.mean() / rest.mean()) if len(seams) else float("nan")


def tile_lines(plan, factor: int, height: int, width: int) -> tuple[list[int], list[int]]:
    """Pixel lines where a tile starts or ends inside the image (not on its border)."""
    def lines(starts, limit):
        edges = {s * factor for s in starts} | {(s + plan.tile) * factor for s in starts}
        return sorted(e for e in edges if 0 < e < limit)

    return lines(plan.rows, height), lines(plan.cols, width)


def quality(args) -> None:
    from silo_rt.degradations import make_measurement
    from silo_rt.evaluation import ssim
    from silo_rt.images import psnr, read_image

    path = args.out / "quality.json"
    data = load_record(path) or {**_header(args), "windows": {}}
    data.setdefault("runs", []).append(_header(args)["command"])
    runner = _runner(args.threads)
    eta = runner.eta_choice(None, STEPS).eta
    data["eta"] = eta
    whole_cache: dict[str, np.ndarray] = {}
    for number, (name, shape_name, window, (ct, cl), crop_file) in enumerate(
            heldout_windows(args.data)):
        key = f"{name}/{shape_name}"
        overlaps = args.overlaps or (OVERLAPS if shape_name == "128x128" else (2,))
        done = data["windows"].get(key, {})
        if (number // len(WINDOWS)) % args.every or (args.overlaps and shape_name != "128x128"):
            continue
        if all(f"overlap{o}" in done for o in overlaps):
            continue
        y = make_measurement(window, "sr4", 0.02, SEED)
        bicubic = _bicubic(y, window.shape[-2:])
        crop = read_image(crop_file)
        np.testing.assert_allclose(window[..., ct:ct + 64, cl:cl + 64], crop, atol=1 / 127)
        if name not in whole_cache:
            y_crop = make_measurement(crop, "sr4", 0.02, SEED)
            whole_cache[name] = runner.restore(y_crop, SEED, eta, steps=STEPS)
        whole = whole_cache[name]
        record = done or {"bicubic_psnr": psnr(bicubic, window),
                          "bicubic_ssim": ssim(bicubic, window), "truth_seams": {},
                          "whole_crop_psnr": psnr(whole, crop)}
        for overlap in overlaps:
            if f"overlap{overlap}" in record:
                continue
            tiles = runner.tiling(y, overlap, STEPS)
            start = time.perf_counter()
            x = runner.restore(y, SEED, eta, steps=STEPS, overlap=overlap)
            seconds = time.perf_counter() - start
            rows, cols = tile_lines(tiles.plan, tiles.model.vae_scale, *window.shape[-2:])
            record[f"overlap{overlap}"] = {
                "tiles": tiles.tile_count, "seconds": seconds,
                "psnr": psnr(x, window), "ssim": ssim(x, window),
                "crop_psnr": psnr(x[..., ct:ct + 64, cl:cl + 64], crop),
                "crop_vs_whole_psnr": psnr(x[..., ct:ct + 64, cl:cl + 64], whole),
                "seams": seam_score(x, rows, cols)}
            record["truth_seams"][str(overlap)] = seam_score(window, rows, cols)
        data["windows"][key] = record
        save_record(path, data)
        print(key, {o: record[f"overlap{o}"] for o in overlaps}, flush=True)


def _bicubic(y: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pillow's bicubic upsampling of ``y`` to ``shape`` (H, W), per channel."""
    from PIL import Image

    h, w = shape
    planes = [Image.fromarray(((y[0, c] + 1) * 127.5).astype(np.float32), mode="F")
              .resize((w, h), Image.BICUBIC) for c in range(3)]
    up = np.stack([np.asarray(p, np.float32) for p in planes])[None] / 127.5 - 1.0
    return np.clip(up, -1, 1).astype(np.float32)


def _peak_rss_child(size: int, steps: int, threads: int) -> dict:
    """Run one restoration of a ``size``² image in a fresh process; its peak RSS."""
    code = (
        "import json, resource, time, numpy as np\n"
        "from silo_rt.demo import demo_bundle\n"
        "from silo_rt.runtime import BundleRunner\n"
        f"r = BundleRunner(demo_bundle('sr4'), backend='ort', threads={threads})\n"
        f"y = np.random.default_rng(0).uniform(-1, 1, (1, 3, {size // 4}, {size // 4}))"
        ".astype(np.float32)\n"
        "t = time.perf_counter()\n"
        f"x = r.restore(y, 0, steps={steps})\n"
        "print(json.dumps({'seconds': time.perf_counter() - t, 'peak_rss_mib': "
        "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def timing(args) -> None:
    """Seconds per megapixel and tile count at square sizes (20 steps, warm sessions)."""
    path = args.out / "timing.json"
    data = load_record(path) or {**_header(args), "steps_timed": 20, "sizes": {}}
    runner = _runner(args.threads)
    rng = np.random.default_rng(0)
    runner.restore(rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32), 0, steps=2)
    for size in (64, 128, 256, 512):
        if str(size) in data["sizes"]:
            continue
        y = rng.uniform(-1, 1, (1, 3, size // 4, size // 4)).astype(np.float32)
        tiles = runner.tiling(y, None, 20)
        start = time.perf_counter()
        runner.restore(y, 0, steps=20)
        seconds = time.perf_counter() - start
        data["sizes"][str(size)] = {
            "tiles": 1 if tiles is None else tiles.tile_count, "seconds": seconds,
            "seconds_per_megapixel": seconds / (size * size / 1e6)}
        save_record(path, data)
        print(size, data["sizes"][str(size)], flush=True)


def memory(args) -> None:
    """Peak RSS of a fresh process restoring one image, per size (4 steps: memory does not
    depend on the step count)."""
    path = args.out / "memory.json"
    data = load_record(path) or {**_header(args), "steps_run": 4, "sizes": {}}
    for size in (64, 256, 512, 1024):
        if str(size) in data["sizes"]:
            continue
        data["sizes"][str(size)] = _peak_rss_child(size, 4, args.threads)
        save_record(path, data)
        print(size, data["sizes"][str(size)], flush=True)


def picture(args) -> None:
    """``tiles.png``: the held-out coffee photograph (300×200) — truth, bicubic, tiled with
    overlap 0 and 2, and the overlap-2 result with its tile borders drawn in red."""
    from PIL import Image, ImageDraw

    from silo_rt.degradations import make_measurement
    from silo_rt.demo.data import heldout_photograph
    from silo_rt.images import psnr, to_uint8

    pixels = heldout_photograph("coffee")
    truth = pixels.transpose(2, 0, 1)[None].astype(np.float32) / 127.5 - 1
    y = make_measurement(truth, "sr4", 0.02, SEED)
    runner = _runner(args.threads)
    eta = runner.eta_choice(None, STEPS).eta
    panels = [("truth", truth), ("bicubic", _bicubic(y, truth.shape[-2:]))]
    record = {**_header(args), "eta": eta, "image": "coffee at scale 1/2", "panels": {}}
    for overlap in (0, 2):
        x = runner.restore(y, SEED, eta, steps=STEPS, overlap=overlap)
        panels.append((f"tiles, overlap {overlap}", x))
    tiles = runner.tiling(y, 2, STEPS)
    rows, cols = tile_lines(tiles.plan, tiles.model.vae_scale, *truth.shape[-2:])
    for name, image in panels:
        record["panels"][name] = {"psnr": psnr(image, truth),
                                  "seams": seam_score(image, rows, cols)}
    marked = Image.fromarray(to_uint8(panels[-1][1]))
    draw = ImageDraw.Draw(marked)
    for r in rows:
        draw.line([(0, r), (marked.width, r)], fill=(255, 0, 0))
    for c in cols:
        draw.line([(c, 0), (c, marked.height)], fill=(255, 0, 0))
    images = [Image.fromarray(to_uint8(image)) for _, image in panels] + [marked]
    w, h = images[0].size
    sheet = Image.new("RGB", (w * len(images), h + 14), "white")
    labels = [name for name, _ in panels] + ["tile borders (overlap 2)"]
    for i, (image, label) in enumerate(zip(images, labels)):
        sheet.paste(image, (i * w, 14))
        ImageDraw.Draw(sheet).text((i * w + 2, 1), label, fill=(0, 0, 0))
    sheet.resize((sheet.width * 2, sheet.height * 2), Image.NEAREST).save(args.out / "tiles.png")
    record["tiles"] = tiles.describe()
    save_record(args.out / "picture.json", record)
    print(json.dumps(record["panels"], indent=1))


def table(args) -> None:
    """``table.md`` from the recorded JSON."""
    quality_data = load_record(args.out / "quality.json")
    runs = quality_data.get("runs") or [quality_data.get("command")]
    lines = ["# Tiled restoration on the demo (sr4, 64 px tiles): recorded figures", "",
             f"From `quality.json` ({quality_data.get('date')}, {STEPS} DDPM steps, eta "
             f"{quality_data.get('eta')}, ORT, 2 threads), written by:", "",
             *[f"    {run}" for run in runs], ""]
    windows = quality_data.get("windows", {})
    for shape in WINDOWS:
        records = [r for k, r in windows.items() if k.endswith("/" + shape)]
        if not records:
            continue
        lines += [f"## {shape} windows ({len(records)} held-out crops)", "",
                  "| | tiles | PSNR | SSIM | crop PSNR (tiled) | crop PSNR (whole) | "
                  "tiled − whole on the crop | seam score ÷ truth's |",
                  "|---|---|---|---|---|---|---|---|"]
        whole = np.mean([r["whole_crop_psnr"] for r in records])
        lines.append(f"| bicubic | | {np.mean([r['bicubic_psnr'] for r in records]):.2f} | "
                     f"{np.mean([r['bicubic_ssim'] for r in records]):.3f} | | | | |")
        for overlap in TABLE_OVERLAPS:
            key = f"overlap{overlap}"
            rs = [r for r in records if key in r]
            if not rs:
                continue
            crop = np.mean([r[key]["crop_psnr"] for r in rs])
            whole_rs = np.mean([r["whole_crop_psnr"] for r in rs])
            seams = np.mean([r[key]["seams"] / r["truth_seams"][str(overlap)] for r in rs])
            lines.append(
                f"| tiles, overlap {overlap} ({len(rs)}) | {rs[0][key]['tiles']} | "
                f"{np.mean([r[key]['psnr'] for r in rs]):.2f} | "
                f"{np.mean([r[key]['ssim'] for r in rs]):.3f} | {crop:.2f} | {whole_rs:.2f} |"
                f" {crop - whole_rs:+.2f} | {seams:.3f} |")
        lines += ["", f"Whole restorations of the 64×64 crops: {whole:.2f} dB mean.", ""]
    for name, unit in (("timing", "sizes"), ("memory", "sizes")):
        data = load_record(args.out / f"{name}.json")
        if not data:
            continue
        lines += [f"## {name} (`{name}.json`: {data['command']}, {data['date']}, "
                  f"{data['machine'].get('cpu_model', '')})", "", "| size | " +
                  " | ".join(next(iter(data[unit].values())).keys()) + " |",
                  "|---|" + "---|" * len(next(iter(data[unit].values()))) ]
        for size, row in data[unit].items():
            lines.append(f"| {size}² | " + " | ".join(
                f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
        lines.append("")
    (args.out / "table.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["quality", "timing", "memory", "picture", "table"])
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/tiles"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--overlaps", type=lambda t: tuple(int(v) for v in t.split(",")),
                        default=None, help="quality: these overlaps on the 128x128 windows "
                        "(added to what is recorded) instead of 0,2,4")
    parser.add_argument("--every", type=int, default=1,
                        help="quality: every k-th held-out crop only (1: all 18)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    {"quality": quality, "timing": timing, "memory": memory, "picture": picture,
     "table": table}[args.what](args)


if __name__ == "__main__":
    main()
