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
  A batch holding an image of another size than the bundle's (restored by tiles) is
  restored image by image, each with its own seed.
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

from .errors import SiloError, first_line
from .images import atomic_write, check_header, check_outputs, read_image, write_image
from .tiling import DEFAULT_OVERLAP

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


RECORD_TYPES: dict[str, tuple[type, ...]] = {
    "image": (str,), "output": (str,), "seed": (int,), "steps": (int,),
    "keep_measured": (bool,), "eta": (int, float), "sigma_y": (int, float), "bundle": (str,),
    "precision": (str,), "sampler": (str,), "samples": (int,), "error": (str,)}
"""The type of each field a log record may hold; a record with another is ignored."""


def _valid_record(record) -> bool:
    if not isinstance(record, dict) or not isinstance(record.get("image"), str):
        return False
    for key, types in RECORD_TYPES.items():
        value = record.get(key)
        if value is None:
            continue
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            return False
    return True


def read_log(out_dir: Path) -> dict[str, dict]:
    """``{image name: its last log record}`` over every log file of ``out_dir``.

    A line that is not valid UTF-8 JSON, or whose fields have the wrong types (a run killed
    mid-write, a damaged file), is ignored: that image is redone.
    """
    from .records import json_lines

    records: dict[str, dict] = {}
    for path in log_paths(out_dir):
        for _, record in json_lines(path):
            if _valid_record(record):
                records[record["image"]] = record
    return records


# --- what a result depends on: the settings recorded with it and compared on a rerun ---

SETTING_OPTIONS = {"bundle": "bundle", "steps": "--steps", "eta": "--eta",
                   "sigma_y": "--sigma-y", "keep_measured": "--keep-measured",
                   "precision": "--precision", "sampler": "--sampler", "samples": "--samples"}
"""The settings a result depends on besides its seed (each recorded in its log line), and
the option that sets each. The backend is not one: every backend gives the same result."""


def run_settings(runner, *, eta: float | None = None, sigma_y: float | None = None,
                 steps: int | None = None, keep_measured: bool = False,
                 precision: str | None = None, sampler: str = "ddpm",
                 samples: int = 1) -> dict:
    """The settings of one run (:data:`SETTING_OPTIONS`), each resolved to the value used:
    ``None`` becomes the bundle's default (its η, σ_y and step count; fp16 with TensorRT,
    else fp32)."""
    manifest = runner.manifest
    return {"bundle": bundle_digest(runner.path),
            "steps": int(steps or runner.steps),
            "eta": float(manifest.eta if eta is None else eta),
            "sigma_y": float(manifest.sigma_y if sigma_y is None else sigma_y),
            "keep_measured": bool(keep_measured),
            "precision": precision or ("fp16" if runner.backend == "trt" else "fp32"),
            "sampler": sampler, "samples": int(samples)}


def bundle_digest(bundle: Path) -> str:
    """The bundle's identity in the log: the first 16 hex digits of
    :func:`~silo_rt.bundle_format.bundle_identity` (its manifest, which holds every graph's
    sha256, without the TensorRT plans a first GPU run adds)."""
    from .bundle_format import bundle_identity

    return bundle_identity(bundle)[:16]


def changed_settings(record: dict, settings: dict, defaults: dict, seed: int) -> list[str]:
    """What differs between a log ``record`` and this run: one ``"--steps 4 -> 8"`` item per
    setting (``"--seed"`` for the image's seed).

    A setting an older log line does not record counts as its value in ``defaults`` (the
    run's settings with every option at its default: ``ddpm`` sampler, one sample, ...);
    one without a default there (the bundle) is not compared.
    """
    changes = [] if record.get("seed") == seed else ["--seed"]
    for key, value in settings.items():
        if key not in record and key not in defaults:
            continue
        old = record.get(key, defaults.get(key))
        if old != value:
            changes.append(f"{SETTING_OPTIONS.get(key, key)} {old} -> {value}")
    return changes


def done_images(out_dir: Path, paths: list[Path]) -> set[str]:
    """Names of the images of ``paths`` whose output exists and is logged as restored."""
    logged = read_log(out_dir)
    return {p.name for p in paths if p.name in logged and "error" not in logged[p.name]
            and output_path(out_dir, p).is_file()}


def check_output_folder(out: Path, inputs: list[Path] | Path, option: str = "--out") -> None:
    """Refuse an output folder that is, or is inside, a folder the inputs are read from
    (``inputs``: that folder, or the input files): its results would sit among the inputs."""
    folders = {Path(inputs).resolve()} if not isinstance(inputs, list) else \
        {Path(p).resolve().parent for p in inputs}
    target = Path(out).resolve()
    for folder in sorted(folders):
        if target == folder or folder in target.parents:
            where = "is" if target == folder else "is inside"
            raise SiloError(f"{option} {out} {where} the input folder {folder}; the results "
                            "would be mixed with the inputs: choose an output folder outside "
                            "it")


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
        """Barrier across processes (a no-op for one process or without accelerate); a
        process that died on the way is one :class:`SiloError` here, not a traceback."""
        if self.state is not None and self.world > 1:
            try:
                self.state.wait_for_everyone()
            except Exception as exc:  # torch.distributed raises several types
                raise SiloError(f"process {self.rank + 1} of {self.world}: another process "
                                f"stopped (see its error above): {first_line(exc)}") from None


LAUNCHER_VARIABLES = ("RANK", "MASTER_ADDR", "MASTER_PORT")
"""What a launcher (``accelerate launch``, torchrun) sets beside ``WORLD_SIZE``."""


def current_processes() -> Processes:
    """accelerate's process group when a launcher started several processes, else one.

    ``accelerate launch --multi_gpu --num_processes N`` (or torchrun) sets ``WORLD_SIZE``; only
    then is accelerate imported (it needs torch). Without a GPU it joins with gloo on the CPU.
    Without accelerate installed, ``RANK``/``WORLD_SIZE`` alone shard the set (no barrier: the
    per-process logs are then left as they are, which readers accept). A ``WORLD_SIZE`` that
    is not a whole number, or above 1 without a launcher's other variables, is refused.
    """
    from .environment import LAUNCHER_HINT, env_int

    world = env_int("WORLD_SIZE", 1, 1, 1_000_000)
    if world <= 1:
        return Processes()
    missing = [name for name in LAUNCHER_VARIABLES if not os.environ.get(name)]
    if missing:
        raise SiloError(f"environment variable WORLD_SIZE={world} says {world} processes, but "
                        f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: "
                        f"no launcher started this one; {LAUNCHER_HINT}")
    rank = env_int("RANK", 0, 0, world - 1)
    try:
        import torch
        from accelerate import PartialState
    except ModuleNotFoundError:
        return Processes(rank, world)
    try:
        state = PartialState(cpu=not torch.cuda.is_available())
    except (ValueError, RuntimeError) as exc:
        raise SiloError(f"cannot join the {world} launched processes ({first_line(exc)}); "
                        f"{LAUNCHER_HINT}") from None
    return Processes(state.process_index, state.num_processes, state)


def log_record(image: Path, output: Path, seed: int, seconds: float, cpsnr: float | None,
               backend: str, rank: int, settings: dict) -> dict:
    """One log line: image (file name), output (file name), seed, seconds (this image's share
    of its batch's time), cpsnr (dB of ``A(x̂)`` against ``y``; null where the task has no
    numpy measurement model: ``gb``, ``jpeg``), backend, process, and the run's
    :func:`run_settings` (bundle, steps, eta, sigma_y, keep_measured, precision, sampler,
    samples)."""
    return {"image": image.name, "output": output.name, "seed": seed,
            "seconds": round(seconds, 4), "cpsnr": cpsnr, "backend": backend, "process": rank,
            **settings}


def failure_record(image: Path, reason: str, rank: int, settings: dict) -> dict:
    """The log line of an image that could not be restored (a rerun retries it)."""
    return {"image": image.name, "error": reason, "process": rank, **settings}


def _cpsnr(task: str, x: np.ndarray, y: np.ndarray, resizer: str) -> float | None:
    from .degradations import get_degradation
    from .evaluation import consistency_psnr

    if not get_degradation(task).imposable:
        return None
    value = consistency_psnr(task, x, y, resizer)
    return round(value, 3) if np.isfinite(value) else None


def check_inputs(paths: list[Path], measurement_shape: tuple[int, ...],
                 any_size: bool = False) -> dict[str, str]:
    """``{image name: why it cannot be restored}`` for each file that is not an image or (unless
    ``any_size``: a task restored by tiles) has another size than the bundle's, from the
    headers."""
    from PIL import Image

    height, width = measurement_shape[-2:]
    failures = {}
    for path in paths:
        try:
            check_header(path, "measurement")
            with Image.open(path) as im:
                size = im.size
        except SiloError as exc:
            failures[path.name] = str(exc)
            continue
        except Exception as exc:  # Pillow raises many types for a malformed file
            failures[path.name] = f"cannot read measurement {path}: {first_line(exc)}"
            continue
        if size != (width, height) and not any_size:
            failures[path.name] = (f"measurement {path} is {size[0]}x{size[1]}; the bundle "
                                   f"restores {width}x{height} measurements")
    return failures


def _append(path: Path, record: dict) -> None:
    # One write() per line, flushed: a killed run loses at most its last line, and a torn
    # last line is ended first so that it cannot swallow the next record.
    torn = False
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as log:
            log.seek(-1, os.SEEK_END)
            torn = log.read(1) != b"\n"
    with open(path, "a", encoding="utf-8") as log:
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
    atomic_write(out_dir / LOG_NAME, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    for path in ranks:
        path.unlink(missing_ok=True)


def _check_log_files(out_dir: Path, log_path: Path) -> None:
    """Refuse a log path that exists and is not a plain file (a folder, a socket...)."""
    for path in (out_dir / LOG_NAME, log_path):
        if path.exists() and not path.is_file():
            raise SiloError(f"{path} is not a file; remove it (silo-rt writes its "
                            "restoration log there)")


def _stale(out_dir: Path, paths: list[Path], batch: int, seed: int, settings: dict,
           defaults: dict) -> dict[str, list[str]]:
    """``{image name: what changed}`` for images restored before with other settings."""
    logged = read_log(out_dir)
    stale = {}
    for group in make_batches(paths, batch):
        batch_seed = image_seed(seed, group[0].name)
        for path in group:
            record = logged.get(path.name)
            if record is None or "error" in record or not output_path(out_dir, path).is_file():
                continue
            changes = changed_settings(record, settings, defaults, batch_seed)
            if changes:
                stale[path.name] = changes
    return stale


def _refuse_stale(out_dir: Path, stale: dict[str, list[str]]) -> None:
    changes = list(dict.fromkeys(change for item in stale.values() for change in item))
    raise SiloError(f"{len(stale)} image{'s' if len(stale) != 1 else ''} in {out_dir} "
                    f"{'were' if len(stale) != 1 else 'was'} restored with other settings "
                    f"({', '.join(changes)}); rerun with --overwrite to restore "
                    f"{'them' if len(stale) != 1 else 'it'} again with these, or choose "
                    "another --out")


def _read_group(group: list[Path], failures: dict[str, str]) -> list[np.ndarray | None]:
    """Each image of ``group`` read, or None (its reason added to ``failures``)."""
    images = []
    for path in group:
        if path.name in failures:
            images.append(None)
            continue
        try:
            images.append(read_image(path))
        except SiloError as exc:
            failures[path.name] = str(exc)
            images.append(None)
    return images


def restore_dataset(restorer, paths: list[Path], out_dir: Path, seed: int = 0,
                    eta: float | None = None, sigma_y: float | None = None,
                    steps: int | None = None, keep_measured: bool = False,
                    processes: Processes | None = None, progress=None, *,
                    precision: str | None = None, sampler: str = "ddpm",
                    overwrite: bool = False, source: Path | None = None,
                    overlap: int | None = DEFAULT_OVERLAP) -> dict:
    """Restore every image of ``paths`` not done yet into ``out_dir`` (see the module rules).

    Args:
        restorer: a bundle's :class:`~silo_rt.restorer.Restorer` (called per batch; its
            ``runner`` gives the bundle's manifest, path and task for the log); ``eta``
            None means the bundle's own η.
        paths: the inputs, as :func:`list_inputs` returns them (the full, sorted set).
        out_dir: output folder; created if its parent exists (and removed again when this
            run created it and could restore nothing).
        processes: this process's rank and world (default :func:`current_processes`).
        progress: ``progress(total, initial)`` → a bar with ``update(n)`` and ``close()``
            (e.g. tqdm), counting this process's images; None for no bar.
        precision, sampler: recorded (and ``sampler`` passed on) with the other settings.
        overwrite: restore again the images logged with other settings; without it such a
            rerun is refused (:class:`SiloError` naming what changed).
        source: the input folder (or list) ``out_dir`` must not be in (default: the inputs'
            folders).
        overlap: latent pixels shared by the tiles of an image of another size than the
            bundle's (:mod:`silo_rt.tiled`).

    Returns:
        ``{"total", "shard", "skipped", "restored", "failed", "report", "rank", "world"}``
        for this process; ``failed`` is ``{image name: reason}`` of its shard (each also
        logged; a rerun retries them), ``report`` the failures it is to report: its own, or
        under accelerate every process's for the main one and none for the others (so only
        the main process, the last to finish, exits non-zero and no process is stopped by
        the launcher before it has written its line).
    """
    out_dir = Path(out_dir)
    processes = processes or current_processes()
    runner = restorer.runner
    eta = runner.manifest.eta if eta is None else eta
    shape = tuple(runner.manifest.measurement_shape)
    batch = shape[0]
    if not out_dir.parent.is_dir():
        raise SiloError(f"output folder's parent does not exist: {out_dir.parent}")
    if out_dir.exists() and not out_dir.is_dir():
        raise SiloError(f"--out {out_dir} is a file; a folder of measurements needs an output "
                        "folder")
    check_output_folder(out_dir, source if source is not None and Path(source).is_dir()
                        else list(paths))
    log_path = out_dir / (LOG_NAME if processes.world == 1
                          else f"restore-log.rank{processes.rank}.jsonl")
    _check_log_files(out_dir, log_path)
    settings = run_settings(runner, eta=eta, sigma_y=sigma_y, steps=steps,
                            keep_measured=keep_measured, precision=precision, sampler=sampler)
    defaults = run_settings(runner)
    defaults.pop("bundle")  # an old log line without it: the bundle is not known
    failures = check_inputs(paths, (1, *shape[1:]), runner.degradation.tileable)
    if len(failures) == len(paths):
        first = next(iter(failures.values()))
        more = f" (and {len(paths) - 1} more failed likewise)" if len(paths) > 1 else ""
        raise SiloError(f"{first}{more}")
    stale = _stale(out_dir, paths, batch, seed, settings, defaults) if out_dir.is_dir() else {}
    if stale and not overwrite:
        _refuse_stale(out_dir, stale)
    try:
        out_dir.mkdir()
        created = True
    except FileExistsError:
        created = False
    check_outputs([output_path(out_dir, p) for p in paths], inputs=paths)
    mine = shard(make_batches(paths, batch), processes.rank, processes.world)
    done = done_images(out_dir, [p for group in mine for p in group]) - set(stale)
    todo = [group for group in mine if not all(p.name in done for p in group)]
    count = sum(len(group) for group in mine)
    mine_failed = {}
    bar = progress(count, len(done)) if progress else None
    restored = 0
    error = None
    try:
        for group in todo:
            images = _read_group(group, failures)
            good = [image for image in images if image is not None]
            for path, image in zip(group, images):
                if image is None and path.name not in done:
                    mine_failed[path.name] = failures[path.name]
                    _append(log_path, failure_record(path, failures[path.name],
                                                     processes.rank, settings))
                    if bar is not None:
                        bar.update(1)
            if not good:
                continue
            for path, y, x, image_seed_used, seconds in _restore_group(
                    restorer, group, images, batch, seed, eta=eta, sigma_y=sigma_y, steps=steps,
                    keep_measured=keep_measured, sampler=sampler, overlap=overlap,
                    skip=done):
                target = output_path(out_dir, path)
                write_image(target, x)
                cpsnr = _cpsnr(runner.task, x, y, runner.resizer)
                _append(log_path, log_record(path, target, image_seed_used, seconds, cpsnr,
                                             runner.label, processes.rank, settings))
                restored += 1
                if bar is not None:
                    bar.update(1)
    except Exception as exc:  # met at the barriers first: the other processes finish
        error = exc
    finally:
        if bar is not None:
            bar.close()
    processes.wait()
    if processes.is_main and processes.world > 1 and processes.state is not None:
        merge_logs(out_dir)
    processes.wait()  # the merge is done before a folder this run created is looked at
    report = mine_failed
    if processes.world > 1 and processes.state is not None:  # the main process names all
        names = {p.name for p in paths}
        report = {name: record["error"] for name, record in sorted(read_log(out_dir).items())
                  if "error" in record and name in names} if processes.is_main else {}
    if created:
        _remove_if_empty(out_dir)
    if error is not None:
        raise error
    return {"total": len(paths), "shard": count, "skipped": len(done), "restored": restored,
            "failed": mine_failed, "report": report, "rank": processes.rank,
            "world": processes.world}


def _restore_group(restorer, group: list[Path], images: list, batch: int, seed: int, *,
                   skip: set[str], overlap: int, **options):
    """Restore one batch's readable images; yields ``(path, y, x, seed, seconds)`` per image
    not in ``skip``.

    A batch of the bundle's own measurement size runs as one call (an unreadable image's
    place and the padding hold a readable one of the batch; images are independent in a
    batch, so no other result changes), seeded by its first image. A batch with an image of
    another size is restored image by image, by tiles, each with its own seed.
    """
    good = [image for image in images if image is not None]
    whole = tuple(restorer.runner.manifest.measurement_shape[1:])
    if all(image.shape[1:] == whole for image in good):
        y = np.concatenate([image if image is not None else good[-1] for image in images]
                           + [good[-1]] * (batch - len(group)))
        batch_seed = image_seed(seed, group[0].name)
        start = time.perf_counter()
        x = restorer(y, seed=batch_seed, overlap=overlap, **options).image
        seconds = (time.perf_counter() - start) / len(good)
        for i, (path, image) in enumerate(zip(group, images)):
            if path.name not in skip and image is not None:
                yield path, y[i:i + 1], x[i:i + 1], batch_seed, seconds
        return
    for path, image in zip(group, images):
        if path.name in skip or image is None:
            continue
        own_seed = image_seed(seed, path.name)
        start = time.perf_counter()
        x = restorer(image, seed=own_seed, overlap=overlap, **options).image
        yield path, image, x, own_seed, time.perf_counter() - start


def _remove_if_empty(out_dir: Path) -> None:
    """Remove an output folder that holds no restoration, only failure records (a run that
    could read nothing leaves nothing behind)."""
    if any(output_path(out_dir, Path(name)).is_file() for name in read_log(out_dir)):
        return
    names = {p.name for p in out_dir.iterdir()}
    if names <= {p.name for p in log_paths(out_dir)}:
        for name in names:
            (out_dir / name).unlink(missing_ok=True)
        out_dir.rmdir()
