"""Write files so that a reader never sees a half-written one: temporary name, then rename.

Temporary files are named ``.<name>.<pid>.<random>.tmp`` beside their target. A run that is killed
(``kill -9``, a power cut) cannot remove its own; the next write into the same directory removes
those whose process is gone (:func:`remove_stale`), and never one a live process still writes, so
the runs of a sweep writing into one folder at once leave each other alone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
import time
from pathlib import Path
from typing import IO, Iterator

from ..errors import DiskFullError

#: btperp's temporary files: ``.<target name>.<pid>.<mkstemp's random part>.tmp``.
TMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]{6,}\.tmp$")
#: Temporary files of btperp 0.1.0 and earlier (no pid): removed once a day old.
LEGACY_TMP_PATTERN = re.compile(r"^\.(?P<name>.+\.(?:parquet|json|png|html|pdf|svg))\.[A-Za-z0-9_]{8}\.tmp$")
LEGACY_TMP_AGE_S = 86_400
#: errno values that mean the machine ran out of room, not that the input was wrong.
DISK_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):          # exists, owned by someone else (or unknowable)
        return True
    return True


def remove_stale(folder: "str | os.PathLike[str]") -> list[Path]:
    """Remove btperp's temporary files in ``folder`` whose writing process no longer exists (and
    pid-less ones from older versions once a day old); returns what was removed. Nothing else in
    the folder is touched, nor a temporary file of a live process."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        name = entry.name
        if not name.endswith(".tmp") or not name.startswith("."):
            continue
        match = TMP_PATTERN.match(name)
        if match:
            stale = not _alive(int(match["pid"]))
        elif LEGACY_TMP_PATTERN.match(name):
            try:
                stale = now - entry.stat(follow_symlinks=False).st_mtime > LEGACY_TMP_AGE_S
            except OSError:
                continue
        else:
            continue
        if stale and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def disk_full(exc: BaseException, target: Path, tmp: Path | None, existed: bool) -> DiskFullError:
    """The error a full disk (or a file-size limit) gives while writing ``target``: the file, the
    reason and what is left on disk."""
    reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else str(exc)
    left = ("the incomplete temporary file was removed" if tmp is None or not tmp.exists()
            else f"the incomplete temporary file {tmp} could not be removed: delete it")
    kept = (f"{target} keeps its previous contents" if existed else f"{target} was not created")
    return DiskFullError(f"cannot write {target}: {reason.lower()}; {left}, {kept}. Files this command "
                         f"finished before are complete. Free some space (or raise the file-size "
                         f"limit) and rerun")


@contextlib.contextmanager
def atomic_path(path: "str | os.PathLike[str]") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    The directory is created if needed, and stale temporary files of killed runs in it are removed
    first. ``os.replace`` is atomic on POSIX and Windows. A full disk or a file-size limit
    (ENOSPC, EDQUOT, EFBIG) is raised as :class:`~btperp.errors.DiskFullError` naming the file.
    """
    target = Path(path)
    existed = target.exists()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(target.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp",
                                   dir=target.parent)
    except OSError as exc:
        if exc.errno in DISK_FULL:
            raise disk_full(exc, target, None, existed) from exc
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)     # mkstemp creates 0600; give the file normal permissions
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError, OSError):
            tmp_path.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, DiskFullError) and exc.errno in DISK_FULL:
            raise disk_full(exc, target, tmp_path, existed) from exc
        raise


@contextlib.contextmanager
def atomic_open(path: "str | os.PathLike[str]", mode: str = "w", **kwargs) -> Iterator[IO]:
    """``open()`` for writing through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
