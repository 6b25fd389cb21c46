"""Writing a bundle folder safely: one exporter per target, and the new bundle swapped in
whole.

A lock file (``<out>.lock``, flock'ed by the exporter, holding its pid) refuses a second
concurrent export into the same folder; a lock left by a dead process (``kill -9``) is taken
over, and the hidden folders such a process left behind (``.<out>.*.partial``, ``.<out>.old-*``)
are removed. The bundle is
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
    """Hold ``<out>.lock`` for the duration; refuse if a live process holds it.

    The lock is an ``flock`` on the file (where ``fcntl`` exists), which the kernel drops when
    its holder dies however it dies, so a ``kill -9``'d export's lock is simply taken over
    (its pid, kept in the file for messages, may belong to another process by then).
    Elsewhere the pid alone decides.
    """
    lock = out.with_name(out.name + ".lock")
    try:
        import fcntl
    except ImportError:
        fcntl = None
    fd = _take_flock(lock, out, fcntl) if fcntl is not None else _take_by_pid(lock, out)
    try:
        os.write(fd, str(os.getpid()).encode())
        remove_leftovers(out)
        yield
    finally:
        lock.unlink(missing_ok=True)  # still held: nobody can take it in between
        os.close(fd)


def _take_flock(lock: Path, out: Path, fcntl) -> int:
    """An open, emptied, flock'ed ``lock``; refuses if a live process holds it."""
    for _ in range(10):
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SiloError(f"another export (pid {_holder(lock)}) is writing {out}; wait for "
                            "it to finish") from None
        try:  # the file a finishing holder unlinked is not the lock any more: open it again
            current = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            os.ftruncate(fd, 0)
            return fd
        os.close(fd)
    raise SiloError(f"cannot take the export lock {lock}")


def _take_by_pid(lock: Path, out: Path) -> int:
    """``lock`` created exclusively; one whose recorded pid is not running is taken over."""
    for _ in range(2):
        try:
            return os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid = _holder(lock)
            try:
                if pid <= 0 or pid == os.getpid():
                    raise ProcessLookupError
                os.kill(pid, 0)
            except ProcessLookupError:
                lock.unlink(missing_ok=True)  # stale: its exporter is gone
                continue
            except PermissionError:
                pass
            raise SiloError(f"another export (pid {pid}) is writing {out}; wait for it or "
                            f"remove {lock} if it is stale") from None
    raise SiloError(f"cannot take the export lock {lock}")


def _holder(lock: Path) -> int:
    """The pid recorded in ``lock`` (0 when it cannot be read)."""
    try:
        return int(lock.read_text().strip() or 0)
    except (OSError, ValueError, UnicodeDecodeError):
        return 0


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
