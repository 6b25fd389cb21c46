"""Writing a bundle folder safely: one exporter per target, and the new bundle swapped in
whole.

A lock file (``<out>.lock``, holding the exporter's pid) refuses a second concurrent export
into the same folder; a lock left by a dead process is taken over, and the hidden folders such
a process left behind (``.<out>.*.partial``, ``.<out>.old-*``) are removed. The bundle is
built in a hidden temporary folder beside the target; on Linux it replaces an existing bundle
with one ``renameat2(RENAME_EXCHANGE)``, so a reader always finds a whole bundle, old or new
(elsewhere two renames leave a moment with no bundle). Bundles get the usual modes (folders
0755, files 0644 under the default umask).
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

from ..bundle_format import MANIFEST
from ..errors import SiloError

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@contextmanager
def export_lock(out: Path):
    """Hold ``<out>.lock`` for the duration; refuse if a live process holds it."""
    lock = out.with_name(out.name + ".lock")
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
                os.kill(pid, 0)
            except (ValueError, ProcessLookupError, FileNotFoundError):
                lock.unlink(missing_ok=True)  # stale: its exporter is gone
                continue
            except PermissionError:
                pass
            raise SiloError(f"another export (pid {pid}) is writing {out}; wait for it or "
                            f"remove {lock} if it is stale") from None
    else:
        raise SiloError(f"cannot take the export lock {lock}")
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        remove_leftovers(out)
        yield
    finally:
        lock.unlink(missing_ok=True)


def remove_leftovers(out: Path) -> None:
    """Remove the hidden build folders of exports into ``out`` that died (``kill -9``).

    Only called with the lock held: no live exporter owns such a folder then.
    """
    name = re.escape(out.name)
    # An .old-PID folder is the only copy when its exporter died between the two renames.
    kinds = r"[a-z0-9_]{8}\.partial|old-\d+" if (out / MANIFEST).is_file() else \
        r"[a-z0-9_]{8}\.partial"
    leftover = re.compile(rf"^\.{name}\.({kinds})$")
    for path in out.parent.iterdir():
        if leftover.match(path.name) and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)


def check_export_target(out: Path) -> None:
    """Refuse, before any work, a bundle folder that cannot be written or is not a bundle."""
    out = Path(out)
    if not out.parent.is_dir():
        raise SiloError(f"output folder does not exist: {out.parent}")
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise SiloError(f"output folder is not writable: {out.parent}")
    if out.is_symlink() or (out.exists() and not (out / MANIFEST).is_file()):
        raise SiloError(f"{out} exists and is not a bundle; refusing to replace it")


def publish_modes(folder: Path) -> None:
    """mkdtemp makes a 0700 folder: give the bundle the usual modes under the umask."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def replace_dir(new: Path, target: Path) -> str:
    """Put folder ``new`` at ``target``, removing what was there; returns how it was done:
    ``"rename"`` (nothing there), ``"exchange"`` (atomic swap) or ``"two renames"``."""
    if not target.exists():
        os.replace(new, target)
        return "rename"
    if _exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # now the old bundle
        return "exchange"
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)
    return "two renames"


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux's ``renameat2``; False where it is unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0
