"""Restoring a whole dataset from a bundle: resumable, per-image seeds, sharded over processes.

numpy + Pillow only (accelerate, hence torch, is imported only when a launcher started more
than one process). The rules, each chosen so that a result never depends on how a run was
split, interrupted or resumed:

* **Inputs**: a folder (its ``.png/.jpg/.jpeg/.webp`` files, not searched recursively) or a
  ``.txt`` list (one path a line, relative to the list file; blank lines and ``#`` comments
  ignored), sorted by file name. Names must be unique: ``OUT/<stem>.png`` is the output.
* **Seeds**: image ``name`` (its file name) is restored with :func:`image_seed`
  ``(base_seed, name)``, so an image's result is the same alone, in a subset or in any shard.
* **Batches**: the sorted list is cut into batches of the bundle's batch size ``B`` (the last
  padded by repeating its last image; the padding's output is dropped). A batch uses one
  noise source, seeded by its first image's seed; for ``B = 1`` that is the image's own seed.
  For ``B > 1`` the batches come from the full sorted list, so a batch (and each image's
  result) is the same whatever the process count, but restoring a subset regroups it.
* **Shards**: process ``r`` of ``n`` takes batches ``r, r + n, r + 2n, …`` of the full list;
  within its shard it skips batches whose images are all done.
* **Done**: an image is done when its output exists *and* a log line records it. Outputs are
  written atomically (temporary file renamed), then the log line appended, so an interrupted
  run leaves no partial image and redoes at most the batch it was in.
* **Log**: ``OUT/restore-log.jsonl``, one JSON object per image (:func:`log_record`). With
  several processes each appends to ``restore-log.rank<r>.jsonl`` (concurrent appends to one
  file can interleave) and the main process folds them into ``restore-log.jsonl`` at the end;
  readers read all of them, so an interrupted multi-process run resumes too.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import SiloError
from .images import atomic_write, check_header, check_outputs, read_image, write_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
LOG_NAME = "restore-log.jsonl"
LIST_SUFFIX = ".txt"


def is_dataset(source: str | os.PathLike) -> bool:
    """Whether ``restore``'s MEASUREMENT names a dataset (a folder or a ``.txt`` list)."""
    source = Path(source)
    return source.is_dir() or source.suffix.lower() == LIST_SUFFIX


def list_inputs(source: str | os.PathLike) -> list[Path]:
    """The measurement files of a folder or a ``.txt`` list, sorted by file name.

    Raises one :class:`SiloError` for a missing source, an empty one, a listed file that does
    not exist and two inputs with the same file stem (their outputs would collide).
    """
    source = Path(source)
    if source.is_dir():
        paths = [p for p in source.iterdir()
                 if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if not paths:
            raise SiloError(f"no {'/'.join(IMAGE_SUFFIXES)} images in {source}")
    elif source.suffix.lower() == LIST_SUFFIX:
        if not source.is_file():
            raise SiloError(f"image list not found: {source}")
        try:
            lines = source.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise SiloError(f"cannot read image list {source}: {exc}") from None
        entries = [line.strip() for line in lines]
        paths = [source.parent / e for e in entries if e and not e.startswith("#")]
        if not paths:
            raise SiloError(f"image list {source} names no images")
        for path in paths:
            if not path.is_file():
                raise SiloError(f"image {path} (listed in {source}) not found")
    else:
        raise SiloError(f"{source} is neither a folder nor a {LIST_SUFFIX} list of images")
    paths.sort(key=lambda p: (p.name, str(p)))
    stems: dict[str, Path] = {}
    for path in paths:
        if path.stem in stems:
            raise SiloError(f"{stems[path.stem]} and {path} would both be restored to "
                            f"{path.stem}.png; rename one")
        stems[path.stem] = path
    return paths


def image_seed(base_seed: int, name: str) -> int:
    """The seed of image ``name`` (its file name) in a run with ``base_seed``.

    ``int(sha256(f"{base_seed}:{name}"), 16) mod 2**63``: stable across Python versions,
    platforms and processes (unlike ``hash``), in the CLI's seed range [0, 2**63).
    """
    digest = hashlib.sha256(f"{int(base_seed)}:{name}".encode()).hexdigest()
    return int(digest, 16) % 2**63


def output_path(out_dir: Path, image: Path) -> Path:
    """Where the restoration of ``image`` goes: ``out_dir/<stem>.png``."""
    return Path(out_dir) / f"{Path(image).stem}.png"


def make_batches(paths: list[Path], size: int) -> list[list[Path]]:
    """Consecutive groups of ``size`` (the last may be shorter; it is padded at restore)."""
    return [paths[i:i + size] for i in range(0, len(paths), size)]


def shard(batches: list, rank: int, world: int) -> list:
    """Batches ``rank, rank + world, …``: round-robin, so shards differ by at most one."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, {world})")
    return batches[rank::world]


def log_paths(out_dir: Path) -> list[Path]:
    """Every log file of ``out_dir``: the merged one and any per-process ones."""
    out_dir = Path(out_dir)
    return [p for p in [out_dir / LOG_NAME, *sorted(out_dir.glob("restore-log.rank*.jsonl"))]
            if p.is_file()]


def read_log(out_dir: Path) -> dict[str, dict]:
    """``{image name: its last log record}`` over every log file of ``out_dir``.

    A line that does not parse (a run killed mid-write) is ignored: that image is redone.
    """
    records: dict[str, dict] = {}
    for path in log_paths(out_dir):
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("image"), str):
                records[record["image"]] = record
    return records


def done_images(out_dir: Path, paths: list[Path]) -> set[str]:
    """Names of the images of ``paths`` whose output exists and is logged."""
    logged = read_log(out_dir)
    return {p.name for p in paths if p.name in logged and output_path(out_dir, p).is_file()}


@dataclass
class Processes:
    """This process's place among the launched ones; ``state`` is accelerate's, or None."""

    rank: int = 0
    world: int = 1
    state: object = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wait(self) -> None:
        """Barrier across processes (a no-op for one process or without accelerate)."""
        if self.state is not None and self.world > 1:
            self.state.wait_for_everyone()


def current_processes() -> Processes:
    """accelerate's process group when a launcher started several processes, else one.

    ``accelerate launch --multi_gpu --num_processes N`` (or torchrun) sets ``WORLD_SIZE``; only
    then is accelerate imported (it needs torch). Without a GPU it joins with gloo on the CPU.
    Without accelerate installed, ``RANK``/``WORLD_SIZE`` alone shard the set (no barrier: the
    per-process logs are then left as they are, which readers accept).
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Processes()
    try:
        import torch
        from accelerate import PartialState
    except ModuleNotFoundError:
        return Processes(int(os.environ.get("RANK", "0")), world)
    state = PartialState(cpu=not torch.cuda.is_available())
    return Processes(state.process_index, state.num_processes, state)


def log_record(image: Path, output: Path, seed: int, seconds: float, cpsnr: float | None,
               backend: str, rank: int, steps: int, keep_measured: bool) -> dict:
    """One log line: image (file name), output (file name), seed, seconds (this image's share
    of its batch's time), cpsnr (dB of ``A(x̂)`` against ``y``; null where the task has no
    numpy measurement model: ``gb``, ``jpeg``), backend, process, steps, keep_measured."""
    return {"image": image.name, "output": output.name, "seed": seed,
            "seconds": round(seconds, 4), "cpsnr": cpsnr, "backend": backend, "process": rank,
            "steps": steps, "keep_measured": keep_measured}


def _cpsnr(task: str, x: np.ndarray, y: np.ndarray, resizer: str) -> float | None:
    from .degradations import get_degradation
    from .evaluation import consistency_psnr

    if not get_degradation(task).imposable:
        return None
    value = consistency_psnr(task, x, y, resizer)
    return round(value, 3) if np.isfinite(value) else None


def check_inputs(paths: list[Path], measurement_shape: tuple[int, ...]) -> None:
    """Refuse, from the headers, a file that is not an image or has the wrong size."""
    from PIL import Image

    height, width = measurement_shape[-2:]
    for path in paths:
        check_header(path, "measurement")
        with Image.open(path) as im:
            size = im.size
        if size != (width, height):
            raise SiloError(f"measurement {path} is {size[0]}x{size[1]}; the bundle restores "
                            f"{width}x{height} measurements")


def _append(path: Path, record: dict) -> None:
    # One write() per line, flushed: a killed run loses at most its last line, and a torn
    # last line is ended first so that it cannot swallow the next record.
    torn = False
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as log:
            log.seek(-1, os.SEEK_END)
            torn = log.read(1) != b"\n"
    with open(path, "a") as log:
        log.write(("\n" if torn else "") + json.dumps(record) + "\n")
        log.flush()


def merge_logs(out_dir: Path) -> None:
    """Fold every log file into ``restore-log.jsonl`` (one line per image, sorted), atomically,
    and remove the per-process files."""
    out_dir = Path(out_dir)
    ranks = sorted(out_dir.glob("restore-log.rank*.jsonl"))
    if not ranks:
        return
    records = read_log(out_dir)
    text = "".join(json.dumps(records[name]) + "\n" for name in sorted(records))
    atomic_write(out_dir / LOG_NAME, lambda tmp: Path(tmp).write_text(text))
    for path in ranks:
        path.unlink(missing_ok=True)


def restore_dataset(runner, paths: list[Path], out_dir: Path, seed: int = 0,
                    eta: float | None = None, sigma_y: float | None = None,
                    steps: int | None = None, keep_measured: bool = False,
                    processes: Processes | None = None, progress=None) -> dict:
    """Restore every image of ``paths`` not done yet into ``out_dir`` (see the module rules).

    Args:
        runner: a :class:`~silo_rt.runtime.BundleRunner` (``restore``, ``manifest``, ``task``,
            ``resizer``, ``label``).
        paths: the inputs, as :func:`list_inputs` returns them (the full, sorted set).
        out_dir: output folder; created if its parent exists.
        processes: this process's rank and world (default :func:`current_processes`).
        progress: ``progress(total, initial)`` → a bar with ``update(n)`` and ``close()``
            (e.g. tqdm), counting this process's images; None for no bar.

    Returns:
        ``{"total", "shard", "skipped", "restored", "rank", "world"}`` for this process.
    """
    out_dir = Path(out_dir)
    processes = processes or current_processes()
    shape = tuple(runner.manifest.measurement_shape)
    batch = shape[0]
    if not out_dir.parent.is_dir():
        raise SiloError(f"output folder's parent does not exist: {out_dir.parent}")
    if out_dir.exists() and not out_dir.is_dir():
        raise SiloError(f"--out {out_dir} is a file; a folder of measurements needs an output "
                        "folder")
    check_inputs(paths, (1, *shape[1:]))
    out_dir.mkdir(exist_ok=True)
    check_outputs([output_path(out_dir, p) for p in paths], inputs=paths)
    mine = shard(make_batches(paths, batch), processes.rank, processes.world)
    done = done_images(out_dir, [p for group in mine for p in group])
    todo = [group for group in mine if not all(p.name in done for p in group)]
    count = sum(len(group) for group in mine)
    log_path = out_dir / (LOG_NAME if processes.world == 1
                          else f"restore-log.rank{processes.rank}.jsonl")
    bar = progress(count, len(done)) if progress else None
    restored = 0
    steps_run = steps or runner.steps
    try:
        for group in todo:
            y = np.concatenate([read_image(p) for p in group])
            if len(group) < batch:  # pad with the last image; its outputs are dropped
                y = np.concatenate([y] + [y[-1:]] * (batch - len(group)))
            batch_seed = image_seed(seed, group[0].name)
            start = time.perf_counter()
            x = runner.restore(y, batch_seed, eta, sigma_y, steps=steps,
                               keep_measured=keep_measured)
            seconds = (time.perf_counter() - start) / len(group)
            for i, path in enumerate(group):
                if path.name in done:
                    continue
                target = output_path(out_dir, path)
                write_image(target, x[i:i + 1])
                cpsnr = _cpsnr(runner.task, x[i:i + 1], y[i:i + 1], runner.resizer)
                _append(log_path, log_record(path, target, batch_seed, seconds, cpsnr,
                                             runner.label, processes.rank, steps_run,
                                             keep_measured))
                restored += 1
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    processes.wait()
    if processes.is_main and processes.world > 1 and processes.state is not None:
        merge_logs(out_dir)
    return {"total": len(paths), "shard": count, "skipped": len(done), "restored": restored,
            "rank": processes.rank, "world": processes.world}
