"""Delivery into a directory: write a temporary file, flush it to disk, rename it into place,
flush the directory. A reader never sees half a file, and after a crash the same delivery
writes the same name again, so a file is never doubled.

Files go in batches: all temporary files are written, then one flush of each file system
(``syncfs``) makes their bytes durable, then all are renamed, then a second flush makes the
names durable. Two flushes per batch instead of two per file; the order (data durable before
the rename, the rename durable before the store marks the delivery done) is the same as for a
single file. Where ``syncfs`` is missing, each file and directory is fsynced on its own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pfhjem_msg.errors import PermanentDeliveryError, TransientDeliveryError

PERMANENT = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}


@dataclass(frozen=True)
class FileDelivery:
    directory: Path
    name: str
    data: bytes


DeliveryError = PermanentDeliveryError | TransientDeliveryError


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        func = libc.syncfs
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int]
    func.restype = ctypes.c_int
    return func


_SYNCFS = _load_syncfs()


def write_atomic(directory: Path, name: str, data: bytes) -> Path:
    """One file, durably under its final name (raises the delivery error on failure)."""
    (error,) = write_batch([FileDelivery(directory, name, data)])
    if error is not None:
        raise error
    return directory / name


def write_batch(files: Sequence[FileDelivery]) -> list[DeliveryError | None]:
    """Write every file durably; per file, None when it is in place, else why not."""
    errors: list[DeliveryError | None] = [None] * len(files)
    fds: dict[int, int] = {}
    try:
        for i, f in enumerate(files):
            try:
                fds[i] = _write_temp(f, fsync=_SYNCFS is None)
            except OSError as exc:
                errors[i] = _delivery_error(f"cannot write {f.name} into {f.directory}", exc)
        directories = sorted({f.directory for i, f in enumerate(files) if errors[i] is None})
        failed_dirs = _flush(directories)  # the bytes, before any name points at them
        for i, f in enumerate(files):
            if errors[i] is None and f.directory in failed_dirs:
                errors[i] = failed_dirs[f.directory]
    finally:
        for fd in fds.values():
            os.close(fd)
    for i, f in enumerate(files):
        if errors[i] is None:
            try:
                base = os.fspath(f.directory)
                os.replace(f"{base}/.{f.name}.tmp", f"{base}/{f.name}")
            except OSError as exc:
                errors[i] = _delivery_error(f"cannot rename {f.name} into place in {f.directory}", exc)
    directories = sorted({f.directory for i, f in enumerate(files) if errors[i] is None})
    failed_dirs = _flush(directories, names=True)  # the names, before the store says delivered
    return [errors[i] if errors[i] is not None else failed_dirs.get(f.directory) for i, f in enumerate(files)]


def _write_temp(f: FileDelivery, fsync: bool) -> int:
    temp = f"{os.fspath(f.directory)}/.{f.name}.tmp"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    except FileNotFoundError:
        f.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        view = memoryview(f.data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    except OSError:
        os.close(fd)
        raise
    return fd


def _flush(directories: Sequence[Path], names: bool = False) -> dict[Path, DeliveryError]:
    """syncfs once per directory's file system (or, without syncfs, fsync each directory
    after the renames; the files themselves were fsynced when written)."""
    failed: dict[Path, DeliveryError] = {}
    if _SYNCFS is None and not names:
        return failed
    done_devices: set[int] = set()
    for directory in directories:
        try:
            fd = os.open(directory, os.O_RDONLY)
            try:
                if _SYNCFS is None:
                    os.fsync(fd)
                    continue
                device = os.fstat(fd).st_dev
                if device in done_devices:
                    continue
                if _SYNCFS(fd) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, os.strerror(code))
                done_devices.add(device)
            finally:
                os.close(fd)
        except OSError as exc:
            failed[directory] = _delivery_error(f"cannot flush the directory {directory}", exc)
    return failed


def _delivery_error(what: str, exc: OSError) -> DeliveryError:
    reason = f"{what}: {exc.strerror}"
    if exc.errno in PERMANENT:
        return PermanentDeliveryError(reason + "; fix the directory's permissions or path")
    return TransientDeliveryError(reason)
