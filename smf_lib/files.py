"""Crash-safe files: atomic writes, strict JSON, readers that name the file, and a folder lock.

Every artifact smf_lib writes (adapters, background statistics, logs, checkpoints, run records) goes through
:func:`atomic_write`: the bytes go to a temporary file in the same folder, are flushed to disk, and the file is
renamed over the target. A crash or a full disk leaves the old file or the new one, never a partial one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, data: bytes | str | Callable[[Path], None]) -> Path:
    """Write ``path`` atomically.

    Args:
        path: the target file (its folder is created).
        data: bytes, text (UTF-8), or a function that writes a given temporary path (for writers such as
            ``torch.save`` or ``safetensors.torch.save_file`` that take a file name).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if callable(data):
            data(tmp)
        else:
            tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"no space left on {path.parent} while writing {path.name}; free some space "
                          "and rerun (nothing already written was lost)") from err
        raise
    except RuntimeError as err:  # torch.save reports a full disk as a RuntimeError from its C++ writer
        tmp.unlink(missing_ok=True)
        if "enforce fail" in str(err) or "No space" in str(err) or "file write failed" in str(err):
            raise OSError(errno.ENOSPC, f"no space left on {path.parent} while writing {path.name} ({err}); free "
                          "some space and rerun (nothing already written was lost)") from err
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def file_sha256(path: str | Path) -> str:
    """The first 16 hex digits of a file's sha256."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def checksum_path(path: str | Path) -> Path:
    """Where :func:`write_checked` keeps a file's checksum: ``.NAME.sha256`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.sha256")


def write_checked(path: str | Path, data) -> Path:
    """:func:`atomic_write`, then the file's checksum beside it. The old checksum goes first, so a crash between
    the two writes leaves a file without a checksum (accepted, like files older than checksums), never a file
    with a stale one."""
    checksum_path(path).unlink(missing_ok=True)
    atomic_write(path, data)
    atomic_write(checksum_path(path), file_sha256(path))
    return Path(path)


def verify_checked(path: str | Path, remedy: str) -> None:
    """Refuse a file whose bytes no longer match the checksum written with it, naming the file and ``remedy``.
    Files written before checksums existed (no checksum beside them) pass."""
    path = Path(path)
    side = checksum_path(path)
    if not side.exists():
        return
    want, have = side.read_text().strip(), file_sha256(path)
    if want != have:
        raise ValueError(f"{path}: its bytes do not match the checksum written with it ({side.name}: {want}, now "
                         f"{have}); the file was damaged or edited: {remedy}")


def dumps(obj) -> str:
    """Strict JSON text (NaN and infinity are refused: they are not JSON)."""
    try:
        return json.dumps(obj, indent=1, allow_nan=False)
    except ValueError as err:
        raise ValueError(f"refusing to write a non-finite number as JSON ({err}); a NaN or infinite metric means "
                         "the model diverged: check its training log") from err


def write_json(path: str | Path, obj) -> Path:
    """Write strict JSON atomically."""
    return atomic_write(path, dumps(obj))


def read_json(path: str | Path):
    """Read a JSON file; a truncated or edited file raises an error naming it and the remedy."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); delete it so it is "
                         "written again, or restore it") from err
    def refuse(name):
        raise ValueError(f"{path}: holds {name}, which is not JSON (a non-finite number); the file was edited or "
                         "damaged: delete it so it is written again, or restore it")

    try:
        return json.loads(text, parse_constant=refuse)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: not valid JSON ({err.msg}); the file is damaged: delete it so "
                         "it is written again, or restore it") from err


def read_record(path: str | Path, required: tuple[str, ...] = ()) -> dict:
    """A JSON object with the ``required`` keys (a run record, a marker); anything else raises naming the file."""
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(obj).__name__}; the file was edited or "
                         "damaged: delete it so it is written again, or restore it")
    missing = [k for k in required if k not in obj]
    if missing:
        raise ValueError(f"{path}: missing {missing}; the file was edited, damaged or written by another version: "
                         "delete it so it is written again")
    return obj


class FolderLock:
    """An exclusive lock on a folder (``folder/.lock``) while one process uses it; released on exit or death.

    Uses ``fcntl.flock``, so a killed process never leaves a stale lock. Where ``fcntl`` is missing (Windows)
    the lock is a no-op.
    """

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / ".lock"
        self._f = None

    def acquire(self) -> FolderLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RuntimeError(f"{self.path.parent} is in use by {holder}: wait for that runner to finish, or "
                                   "pass another --out") from None
            raise
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()}")
        f.flush()
        self._f = f
        return self

    def release(self) -> None:
        if self._f is not None:
            with contextlib.suppress(OSError):
                self._f.close()
            self._f = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def plain(obj):
    """``obj`` as it reads back from JSON (tuples become lists), so stored and current identities compare."""
    return json.loads(json.dumps(obj, default=str))


def git_state(folder: Path) -> dict:
    """The git commit the code in ``folder`` runs from and whether its tracked files had uncommitted changes (``{}``
    outside a git checkout, e.g. an installed wheel). Read it when a run starts: that is the code that runs."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=30)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {}
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return {"git_commit": head.stdout.strip(), "git_clean": dirty.returncode == 0 and not dirty.stdout.strip()}
    except (OSError, subprocess.SubprocessError):
        return {}


def check_clean(code: dict, allow_dirty: bool, what: str) -> dict:
    """Refuse to start ``what`` from a checkout with uncommitted changes unless ``allow_dirty``: a record names its
    code by commit, which a dirty tree does not pin down. Returns ``code`` with ``allow_dirty: True`` added when a
    dirty start was allowed, so the record says so."""
    if code.get("git_clean") is not False:
        return code
    if not allow_dirty:
        raise RuntimeError(f"{what} would start from a checkout with uncommitted changes, so its records could not "
                           "name the code that ran: commit (or stash) the changes first, or pass --allow-dirty to "
                           "run anyway (the records then say so)")
    return {**code, "allow_dirty": True}
