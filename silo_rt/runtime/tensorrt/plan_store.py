"""Where a bundle's TensorRT plans live, and the lock their builders take.

A writable bundle keeps its plans inside: ``<bundle>/tensorrt/<key>/<graph>.plan``, recorded in
its ``manifest.json`` under ``engines``. A read-only one (the embedded demo bundles in a
system site-packages, a shared read-only mount) gets them in the user's cache:
``$XDG_CACHE_HOME/silo-rt/engines/<bundle sha>/<key>/`` (``~/.cache`` by default; ``bundle
sha``: the first 16 hex digits of the sha256 of the bundle's ``manifest.json``, which
lists every file's own sha256), with the entry the manifest would hold in ``entry.json``.

Processes started together (accelerate shards) build once: the builder holds an exclusive
lock beside the plans, the others wait on it and then load what it built.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from ...bundle_format import Manifest, load_manifest, sha256_file
from ...errors import SiloError

PLAN_FOLDER = "tensorrt"
"""Where a bundle keeps its TensorRT plans (the manifest lists them under ``engines``)."""
ENTRY_FILE = "entry.json"


def user_cache_root() -> Path:
    """``<cache root>/silo-rt/engines`` (:func:`silo_rt.environment.cache_root`: an absolute
    ``$XDG_CACHE_HOME``, else ``~/.cache``)."""
    from ...environment import cache_root

    return cache_root() / "silo-rt" / "engines"


def bundle_writable(bundle: Path) -> bool:
    """Whether plans can be written into ``bundle`` (tried, not guessed: ``os.access`` says
    yes to root on a read-only mount)."""
    folder = Path(bundle) / PLAN_FOLDER
    try:
        folder.mkdir(exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=folder)
    except OSError:
        return False
    os.close(fd)
    with suppress(OSError):
        os.unlink(probe)
    return True


@dataclass(frozen=True)
class PlanStore:
    """Plans of one bundle: ``root`` (entries' file paths are relative to it) and whether
    the entries live in the bundle's manifest (else in ``<root>/<key>/entry.json``)."""

    bundle: Path
    root: Path
    in_bundle: bool

    @classmethod
    def for_bundle(cls, bundle: Path) -> PlanStore:
        bundle = Path(bundle)
        if bundle_writable(bundle):
            return cls(bundle, bundle, True)
        sha = sha256_file(bundle / "manifest.json")[:16]
        return cls(bundle, user_cache_root() / sha, False)

    def describe(self) -> str:
        """One line for the log: where plans go, and why when not in the bundle."""
        if self.in_bundle:
            return f"plans go into the bundle ({self.bundle / PLAN_FOLDER})"
        return (f"the bundle {self.bundle} is read-only: plans go to {self.root} "
                "(the user cache)")

    def plan_folder(self, key_folder: str) -> Path:
        return (self.root / PLAN_FOLDER if self.in_bundle else self.root) / key_folder

    def timing_cache(self, name: str) -> Path:
        return (self.root / PLAN_FOLDER if self.in_bundle else self.root) / name

    def entry(self, manifest: Manifest, key_folder: str) -> dict | None:
        """The recorded engine entry for ``key_folder``, or None."""
        if self.in_bundle:
            return manifest.engines.get(key_folder)
        path = self.plan_folder(key_folder) / ENTRY_FILE
        try:
            entry = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise SiloError(f"cannot read the cached TensorRT entry {path}: {exc}") from None
        return entry if isinstance(entry, dict) else None

    def reload(self, manifest: Manifest) -> Manifest:
        """The bundle's manifest as it is on disk now (another process may have added
        engines while this one waited for the lock)."""
        return load_manifest(self.bundle, verify=False) if self.in_bundle else manifest

    def record(self, key_folder: str, entry: dict) -> None:
        """Write the entry of a read-only bundle's plans (atomically)."""
        from ...images import atomic_write

        text = json.dumps(entry, indent=1)
        atomic_write(self.plan_folder(key_folder) / ENTRY_FILE,
                     lambda tmp: Path(tmp).write_text(text))

    @contextmanager
    def building(self, key_folder: str):
        """Hold the build lock of ``key_folder`` (blocks while another process builds)."""
        folder = self.plan_folder(key_folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SiloError(f"cannot create the TensorRT plan folder {folder}: "
                            f"{exc.strerror or exc}") from None
        with ExitStack() as stack:
            handle = stack.enter_context(folder.with_name(f"{key_folder}.lock").open("a"))
            with suppress(ImportError):  # no fcntl (Windows): builds are not serialised
                import fcntl

                fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
            yield
