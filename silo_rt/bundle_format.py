"""The bundle format, in one place: a folder of ONNX graphs plus ``manifest.json``.

Export writes it and the runtime reads it, both through this module (neither imports the
other for it): :class:`Manifest` is the schema, :func:`write_manifest` the one writer,
:func:`load_manifest` the one reader. ``manifest.json`` (format version 1)::

    format            "silo-rt-bundle"
    format_version    1
    task, arch        degradation and operator kind
    batch             batch size the graphs were traced for (1 … 64)
    image_size        pixel side H = W of the restoration (8 … 4096, a multiple of 8)
    measurement_shape [B, 3, h, w]  (h = H / scale for SR)
    latent_shape      [B, C, s, s]
    precision         "fp32" (the ``step`` graph's; ``step_fp16`` is the fp16 one)
    weights           "fp32" or "fp16" (fp16-exact weights stored as fp16 where exact)
    eta, sigma_y, clamp_latent, cfg_scale, prompt
    init_noise_sigma  z_T multiplier (1.0 for DDPM)
    context           {"file": "context.npy", "shape": [...]}: the prompt's text embedding
    schedule          {"timesteps", "coefficient_names", "coefficients"[, "alphas_cumprod",
                      "steps_offset"]}
    noise             how the random numbers are drawn (a description)
    graphs            {name: {"file", "inputs": {name: shape}, "outputs": {name: shape}}}
    prior, operator   identities (name, fingerprint; the operator's config)
    versions          packages that exported it
    export_passes     optional {pass: "applied" | "skipped: why"} (what export did)
    files             {relative path: sha256} for every file in the bundle but the manifest
    engines           optional TensorRT plans (:mod:`silo_rt.runtime.tensorrt.build`), each
                      with its own sha256

Nothing outside a bundle is trusted: :func:`read_manifest` checks every field's type and
range before anything uses it, and every path the manifest names must be a plain relative
path inside the bundle (no ``..``, not absolute, no symlink on the way), listed in ``files``
and matching its sha256. Files the manifest does not list are never loaded. Each problem is
one :class:`SiloError` naming the field. numpy-free.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from .degradations import get_degradation, task_names
from .errors import SiloError

FORMAT = "silo-rt-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED_GRAPHS = ("vae_encoder", "vae_decoder", "step")
OPTIONAL_GRAPHS = ("unet_h", "step_fp16")

MAX_MANIFEST_BYTES = 64 << 20
MAX_BATCH = 64
MAX_IMAGE_SIZE = 4096
MAX_LATENT_DIM = 1024
MAX_STEPS = 1000
MAX_TRAIN_STEPS = 100_000
MAX_DIM = 1_000_000
MAX_ELEMENTS = 1 << 28  # of one tensor: 1 GiB of float32
MAX_CONTEXT_SHAPE = (2 * MAX_BATCH, 1024, 4096)  # CFG doubles the batch
MAX_ETA = 100.0
MAX_CFG = 50.0
ENGINE_KEY_FIELDS = ("flavor", "version", "compute_capability", "precision")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX graph: its file and the shapes it was traced with (``[]`` = scalar)."""

    file: str
    inputs: dict[str, list[int]]
    outputs: dict[str, list[int]]


@dataclass(frozen=True)
class ContextSpec:
    """The prompt's text embedding: ``file`` (``.npy``) of ``shape`` ``(B', L, D)``."""

    file: str
    shape: list[int]


@dataclass(frozen=True)
class ScheduleRecord:
    """``timesteps`` (steps,), ``coefficients`` (steps, 5); optional training
    ``alphas_cumprod`` (values in (0, 1]) and ``steps_offset`` to change the step count."""

    timesteps: list[int]
    coefficient_names: list[str]
    coefficients: list[list[float]]
    alphas_cumprod: list[float] | None = None
    steps_offset: int = 0

    def to_json(self) -> dict:
        record = asdict(self)
        if self.alphas_cumprod is None:
            del record["alphas_cumprod"], record["steps_offset"]
        return record


@dataclass(frozen=True)
class Manifest:
    """A bundle's ``manifest.json``, typed (see the module docstring for each field).

    Built with keywords by export, by :func:`parse_manifest` from JSON (every field checked);
    :meth:`to_json` is the one place the JSON object is made.
    """

    task: str
    arch: str
    batch: int
    image_size: int
    measurement_shape: list[int]
    latent_shape: list[int]
    eta: float
    sigma_y: float
    cfg_scale: float
    prompt: str
    init_noise_sigma: float
    context: ContextSpec
    schedule: ScheduleRecord
    graphs: dict[str, GraphSpec]
    files: dict[str, str]
    clamp_latent: bool = False
    weights: str = "fp32"
    precision: str = "fp32"
    noise: str = ""
    prior: dict = field(default_factory=dict)
    operator: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    export_passes: dict[str, str] = field(default_factory=dict)
    engines: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def graph_files(self) -> dict[str, str]:
        """``{graph name: its ONNX file, relative to the bundle}``."""
        return {name: graph.file for name, graph in self.graphs.items()}

    def graph_file(self, bundle: Path, name: str) -> Path:
        """The path of graph ``name`` inside ``bundle``; a :class:`SiloError` if the bundle
        has no such graph."""
        graph = self.graphs.get(name)
        if graph is None:
            raise SiloError(f"bundle has no {name} graph")
        return Path(bundle) / graph.file

    @property
    def steps(self) -> int:
        """The number of steps the schedule was exported with."""
        return len(self.schedule.timesteps)

    def to_json(self) -> dict:
        """The JSON object :func:`write_manifest` writes (keys in the documented order)."""
        data = {"format": FORMAT, "format_version": self.format_version}
        for name in ("task", "arch", "batch", "image_size", "measurement_shape",
                     "latent_shape", "precision", "weights", "eta", "sigma_y",
                     "clamp_latent", "cfg_scale", "prompt", "init_noise_sigma"):
            data[name] = getattr(self, name)
        data["context"] = asdict(self.context)
        data["schedule"] = self.schedule.to_json()
        data["noise"] = self.noise
        data["graphs"] = {name: asdict(graph) for name, graph in self.graphs.items()}
        data.update(prior=self.prior, operator=self.operator, versions=self.versions)
        if self.export_passes:
            data["export_passes"] = self.export_passes
        data["files"] = self.files
        if self.engines:
            data["engines"] = self.engines
        return data


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def bundle_identity(bundle: Path) -> str:
    """sha256 of the bundle's manifest without its ``engines`` section: what its
    restorations depend on (every graph's sha256, the schedule, η, …), unchanged when
    TensorRT plans are built into it. Keys ``tuning.json`` and the restore log."""
    path = Path(bundle) / MANIFEST
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SiloError(f"cannot read {path}: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise SiloError(f"{path} is not a JSON object")
    data.pop("engines", None)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- field checks: each returns the value or raises one SiloError naming the field ---

class _Fields:
    """Typed access to a JSON object's fields; ``where`` names it in messages."""

    def __init__(self, data, where: str, origin: str):
        if not isinstance(data, dict):
            raise SiloError(f"{origin}: {where} must be an object, got {_kind(data)}")
        self.data, self.where, self.origin = data, where, origin

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, problem: str):
        raise SiloError(f"{self.origin}: {self._name(key)} {problem}")

    def get(self, key: str, kind, required: bool = True, default=None):
        if key not in self.data:
            if required:
                self.fail(key, "is missing")
            return default
        value = self.data[key]
        if kind is float and _is_int(value):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else "/".join(
                k.__name__ for k in kind)
            self.fail(key, f"must be {_article(names)}, got {_kind(value)}")
        return value

    def int_in(self, key: str, lo: int, hi: int, required: bool = True, default=None) -> int:
        value = self.get(key, int, required, default)
        if value is not None and not lo <= value <= hi:
            self.fail(key, f"must be between {lo} and {hi}, got {value}")
        return value

    def float_in(self, key: str, lo: float, hi: float, lo_open: bool = False,
                 required: bool = True, default=None) -> float:
        value = self.get(key, float, required, default)
        if value is None:
            return value
        low_ok = value > lo if lo_open else value >= lo
        if not (math.isfinite(value) and low_ok and value <= hi):
            self.fail(key, f"must be a finite number in {'(' if lo_open else '['}{lo}, {hi}], "
                           f"got {value}")
        return value

    def choice(self, key: str, choices, required: bool = True, default=None) -> str:
        value = self.get(key, str, required, default)
        if value is not None and value not in choices:
            self.fail(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def shape(self, key: str, rank: int | None = None, hi: int = MAX_DIM) -> list[int]:
        value = self.get(key, list)
        if rank is not None and len(value) != rank:
            self.fail(key, f"must have {rank} dimensions, got {len(value)}")
        if len(value) > 8 or not all(_is_int(d) and 1 <= d <= hi for d in value):
            self.fail(key, f"must be a list of at most 8 integers in 1…{hi}, got "
                           f"{_short(value)}")
        if math.prod(value) > MAX_ELEMENTS:
            self.fail(key, f"has {math.prod(value)} elements; at most {MAX_ELEMENTS}")
        return list(value)

    def sub(self, key: str, required: bool = True) -> _Fields | None:
        if key not in self.data and not required:
            return None
        return _Fields(self.get(key, dict), self._name(key), self.origin)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(type(value),
                                                                             type(value).__name__)


def _article(name: str) -> str:
    return {"dict": "an object", "list": "a list", "str": "a string", "bool": "a boolean",
            "int": "an integer", "float": "a number"}.get(name, name)


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- paths ---

def bundle_path(bundle: Path, name, field: str, origin: str | None = None) -> Path:
    """``bundle / name`` for a plain relative path that stays inside ``bundle``.

    Refuses absolute paths, ``..``, backslashes, empty parts and symlinks anywhere between
    the bundle folder and the file.
    """
    origin = origin or str(bundle)
    if not isinstance(name, str) or not name:
        raise SiloError(f"{origin}: {field} must be a relative file name, got {_short(name)}")
    parts = PurePosixPath(name).parts
    if (name.startswith(("/", "~")) or "\\" in name or ":" in name or "\x00" in name
            or any(p in ("", ".", "..") for p in parts) or name.endswith("/")
            or len(name) > 255):
        raise SiloError(f"{origin}: {field} {name!r} is not a plain relative path inside "
                        "the bundle")
    root = Path(bundle).resolve()
    path = root
    for part in parts:
        path = path / part
        if path.is_symlink():
            raise SiloError(f"{origin}: {field} {name!r} goes through a symlink "
                            f"({path.relative_to(root)}); bundles hold plain files only")
    if not path.resolve().is_relative_to(root):
        raise SiloError(f"{origin}: {field} {name!r} points outside the bundle")
    return path


# --- the manifest ---

def _graph(fields: _Fields) -> GraphSpec:
    def shapes(key):
        table = fields.sub(key)
        if not table.data or len(table.data) > 32:
            fields.fail(key, "must name 1 to 32 tensors")
        return {name: _tensor_shape(table, name) for name in table.data}

    return GraphSpec(fields.get("file", str), shapes("inputs"), shapes("outputs"))


def _tensor_shape(table: _Fields, name: str) -> list[int]:
    value = table.get(name, list)
    return [] if not value else table.shape(name)  # [] is a scalar (the step's loss)


def _context(fields: _Fields) -> ContextSpec:
    shape = fields.shape("shape", rank=3)
    if any(d > m for d, m in zip(shape, MAX_CONTEXT_SHAPE)):
        fields.fail("shape", f"must be at most {'x'.join(map(str, MAX_CONTEXT_SHAPE))}, got "
                             f"{shape}")
    return ContextSpec(fields.get("file", str), shape)


def _number_list(fields: _Fields, key: str, check, what: str, required: bool = True):
    value = fields.get(key, list, required)
    if value is None:
        return None
    if not value or len(value) > MAX_TRAIN_STEPS or not all(check(v) for v in value):
        fields.fail(key, f"must be a list of 1 to {MAX_TRAIN_STEPS} {what}")
    return value


def _schedule(fields: _Fields) -> ScheduleRecord:
    def finite(v):
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    timesteps = _number_list(fields, "timesteps",
                             lambda t: _is_int(t) and 0 <= t < MAX_TRAIN_STEPS, "timesteps")
    if len(timesteps) > MAX_STEPS:
        fields.fail("timesteps", f"has {len(timesteps)} steps; at most {MAX_STEPS}")
    names = fields.get("coefficient_names", list)
    if len(names) != 5 or not all(isinstance(n, str) for n in names):
        fields.fail("coefficient_names", "must be a list of 5 names")
    rows = fields.get("coefficients", list)
    if len(rows) != len(timesteps) or not all(
            isinstance(r, list) and len(r) == len(names) and all(finite(c) for c in r)
            for r in rows):
        fields.fail("coefficients", f"must be {len(timesteps)} rows of {len(names)} finite "
                                    "numbers (one per timestep)")
    alphas = _number_list(fields, "alphas_cumprod", lambda a: finite(a) and 0 < a <= 1,
                          "numbers in (0, 1]", required=False)
    offset = fields.int_in("steps_offset", 0, MAX_TRAIN_STEPS, required=False, default=0)
    return ScheduleRecord(timesteps, names, rows, alphas, offset)


def _files(fields: _Fields, bundle: Path) -> dict[str, str]:
    table = fields.get("files", dict)
    for name, digest in table.items():
        bundle_path(bundle, name, "files entry", fields.origin)
        if not isinstance(digest, str) or not SHA256.match(digest):
            fields.fail("files", f"entry {name!r} must map to a sha256 (64 lowercase hex "
                                 "digits)")
    return table


def _check_shapes(fields: _Fields, task: str, batch: int, image_size: int) -> tuple:
    measurement = fields.shape("measurement_shape", rank=4)
    latent = fields.shape("latent_shape", rank=4, hi=MAX_LATENT_DIM)
    side = image_size // get_degradation(task).scale
    if measurement != [batch, 3, side, side]:
        fields.fail("measurement_shape", f"must be {[batch, 3, side, side]} for a {task} "
                                         f"bundle of {image_size}px, batch {batch}; got "
                                         f"{measurement}")
    if latent[0] != batch:
        fields.fail("latent_shape", f"must start with the batch {batch}, got {latent}")
    return measurement, latent


def parse_manifest(data, bundle: Path, origin: str | None = None) -> Manifest:
    """Check a manifest's JSON object field by field; returns the typed :class:`Manifest`.

    Paths are checked to be plain relative paths inside ``bundle`` and listed in ``files``
    (not opened: :func:`read_manifest` verifies the files).
    """
    origin = origin or str(Path(bundle) / MANIFEST)
    m = _Fields(data, "", origin)
    if m.data.get("format") != FORMAT:
        raise SiloError(f"{origin} is not a silo-rt bundle manifest")
    version = m.get("format_version", int)
    if not 1 <= version <= FORMAT_VERSION:
        raise SiloError(f"bundle {bundle} has format version {version}; this silo-rt reads "
                        f"up to {FORMAT_VERSION}: upgrade silo-rt")
    task = m.choice("task", list(task_names()))
    batch = m.int_in("batch", 1, MAX_BATCH)
    image_size = m.int_in("image_size", 8, MAX_IMAGE_SIZE)
    if image_size % 8:
        m.fail("image_size", f"must be a multiple of 8, got {image_size}")
    if image_size % get_degradation(task).scale:
        m.fail("image_size", f"must be a multiple of {task}'s scale, got {image_size}")
    measurement, latent = _check_shapes(m, task, batch, image_size)
    precision = m.choice("precision", ["fp32"], required=False, default="fp32")
    weights = m.choice("weights", ["fp32", "fp16"], required=False, default="fp32")
    clamp_latent = m.get("clamp_latent", bool, required=False,
                         default=get_degradation(task).clamp_latent)
    files = _files(m, Path(bundle))
    graphs_table = m.sub("graphs")
    missing = [g for g in REQUIRED_GRAPHS if g not in graphs_table.data]
    if missing:
        raise SiloError(f"bundle {bundle} lacks graphs: {', '.join(missing)}")
    graphs = {name: _graph(graphs_table.sub(name)) for name in graphs_table.data}
    context = _context(m.sub("context"))
    for where, name in [(f"graphs.{g}.file", spec.file) for g, spec in graphs.items()] + [
            ("context.file", context.file)]:
        _check_listed(bundle, name, where, files, origin)
    _check_engines(m, bundle)
    passes = m.get("export_passes", dict, required=False, default={})
    if not all(isinstance(v, str) for v in passes.values()):
        m.fail("export_passes", "must map each pass to a string")
    return Manifest(
        task=task, arch=m.choice("arch", ["cnn", "readout"]), batch=batch,
        image_size=image_size, measurement_shape=measurement, latent_shape=latent,
        eta=m.float_in("eta", 0.0, MAX_ETA),
        sigma_y=m.float_in("sigma_y", 0.0, 1.0),
        cfg_scale=m.float_in("cfg_scale", 1.0, MAX_CFG),
        prompt=m.get("prompt", str, required=False, default=""),
        init_noise_sigma=m.float_in("init_noise_sigma", 0.0, 1e4, lo_open=True),
        context=context, schedule=_schedule(m.sub("schedule")), graphs=graphs, files=files,
        clamp_latent=clamp_latent, weights=weights, precision=precision,
        noise=m.get("noise", str, required=False, default=""),
        prior=m.get("prior", dict, required=False, default={}),
        operator=m.get("operator", dict, required=False, default={}),
        versions=m.get("versions", dict, required=False, default={}),
        export_passes=passes, engines=m.get("engines", dict, required=False, default={}),
        format_version=version)


def _check_listed(bundle: Path, name: str, field: str, files: dict, origin: str) -> None:
    bundle_path(bundle, name, field, origin)
    if name not in files:
        raise SiloError(f"{origin}: {field} {name!r} is not listed in files (so not "
                        "checked); refusing to load it")


def _check_engines(m: _Fields, bundle: Path) -> None:
    """TensorRT plans are hashed in their own entries (:mod:`.engines` verifies them)."""
    engines = m.sub("engines", required=False)
    if engines is None:
        return
    for key in engines.data:
        entry = engines.sub(key)
        recorded = entry.sub("key")
        if set(recorded.data) != set(ENGINE_KEY_FIELDS):
            entry.fail("key", f"must have exactly the fields {', '.join(ENGINE_KEY_FIELDS)}")
        for name in ENGINE_KEY_FIELDS:
            recorded.get(name, str)
        plans = entry.sub("plans")
        for graph in plans.data:
            plan = plans.sub(graph)
            bundle_path(bundle, plan.get("file", str), f"{plan.where}.file", m.origin)
            if not SHA256.match(plan.get("sha256", str)):
                plan.fail("sha256", "must be 64 lowercase hex digits")


def verify_files(bundle: Path, manifest: Manifest, hashes: bool = True) -> None:
    """Each listed file must be a regular file (no symlink) matching its sha256."""
    for name, digest in manifest.files.items():
        file = bundle_path(bundle, name, "files entry")
        if not file.is_file():
            raise SiloError(f"bundle {bundle} is missing {name}")
        if hashes and sha256_file(file) != digest:
            raise SiloError(f"bundle file {Path(bundle) / name} does not match its sha256 in "
                            "the manifest (altered or corrupted)")


def load_manifest(bundle: str | Path, verify: bool = True) -> Manifest:
    """Read, check and (with ``verify``) hash-verify a bundle; returns the typed manifest.

    Raises :class:`SiloError` naming the problem: not a bundle, a newer format, a field of
    the wrong type or out of range, a path leaving the bundle, a missing or altered file.
    """
    bundle = Path(bundle)
    path = bundle / MANIFEST
    if not bundle.is_dir() or not path.is_file() or path.is_symlink():
        raise SiloError(f"{bundle} is not a silo-rt bundle (no {MANIFEST})")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise SiloError(f"{path} is larger than {MAX_MANIFEST_BYTES >> 20} MiB; not a manifest")
    try:
        data = json.loads(path.read_text(), parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise SiloError(f"{path} is not valid JSON: {str(exc)[:200]}") from None
    manifest = parse_manifest(data, bundle, str(path))
    verify_files(bundle, manifest, hashes=verify)
    return manifest


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def read_manifest(bundle: str | Path, verify: bool = True) -> dict:
    """:func:`load_manifest`, returning the checked manifest as a JSON object."""
    return load_manifest(bundle, verify).to_json()


def write_manifest(folder: Path, manifest: Manifest | dict) -> None:
    """Check ``manifest`` as a reader would, then write ``folder/manifest.json`` atomically
    (the one writer of the format). A dict is parsed into a :class:`Manifest` first."""
    folder = Path(folder)
    origin = f"manifest for {folder}"
    if isinstance(manifest, dict):
        manifest = parse_manifest(manifest, folder, origin)
    data = manifest.to_json()
    parse_manifest(data, folder, origin)
    fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST}.", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, allow_nan=False)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, folder / MANIFEST)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
