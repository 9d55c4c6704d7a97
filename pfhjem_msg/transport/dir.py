"""Delivery into a directory: write a temporary file, flush it to disk, rename it into place,
flush the directory. A reader never sees half a file, and after a crash the same delivery
writes the same name again, so a file is never doubled.

Files go in batches: all temporary files are written, then one flush of each file system
(``syncfs``) makes their bytes durable, then all are renamed, then a second flush makes the
names durable. Two flushes per batch instead of two per file; the order (data durable before
the rename, the rename durable before the store marks the delivery done) is the same as for a
single file. Where ``syncfs`` is missing, each file and directory is fsynced on its own.

The service runs with ``UMask=0077``: what it writes is its own alone. A delivery with a
``group`` (``[hub] group``, a destination's ``group``) is for another service to read, such
as the hub running as another user: its file is 0640 and owned by that group, set on the
temporary file before the rename so no reader ever sees it otherwise, and the directories
this module creates for it are 0750 with that group. A directory that exists and belongs to
the service user is made group-searchable and given the group; directories of others (and
the state directory above a default destination) are left as they are.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import grp
import os
import stat
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
    group: str | None = None
    """A Unix group that may read the file (None: the service user's alone)."""


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
    shared = _share_directories(files)
    try:
        for i, f in enumerate(files):
            gid = shared.get((f.directory, f.group)) if f.group is not None else None
            if isinstance(gid, Exception):
                errors[i] = gid
                continue
            try:
                fds[i] = _write_temp(f, fsync=_SYNCFS is None, gid=gid)
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


def _write_temp(f: FileDelivery, fsync: bool, gid: int | None = None) -> int:
    temp = f"{os.fspath(f.directory)}/.{f.name}.tmp"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    except FileNotFoundError:
        f.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        if gid is not None:  # the umask took the group's read bit: give it back, with the group
            os.fchown(fd, -1, gid)
            os.fchmod(fd, 0o640)
        view = memoryview(f.data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    except OSError:
        os.close(fd)
        raise
    return fd


def gid_of(group: str) -> int:
    """The id of a Unix group; raises KeyError when there is none of that name."""
    return grp.getgrnam(group).gr_gid


def _share_directories(files: Sequence[FileDelivery]) -> dict[tuple[Path, str], int | DeliveryError]:
    """Per directory and group of this batch: the group's id once the directory is ready for
    the group to read (created or adjusted), or why it is not."""
    out: dict[tuple[Path, str], int | DeliveryError] = {}
    for key in sorted({(f.directory, f.group) for f in files if f.group is not None}):
        directory, group = key
        try:
            gid = gid_of(group)
        except KeyError:
            out[key] = TransientDeliveryError(
                f"there is no Unix group {group!r} for the files in {directory}; create it "
                "(groupadd) or correct [hub] group / the destination's group in the configuration"
            )
            continue
        try:
            _share(directory, gid)
        except OSError as exc:
            out[key] = _delivery_error(f"cannot make {directory} readable by group {group}", exc)
        else:
            out[key] = gid
    return out


def _share(directory: Path, gid: int) -> None:
    """Create the missing directories group-searchable; adjust the directory if it is ours."""
    missing: list[Path] = []
    at = directory
    while not at.exists():
        missing.append(at)
        at = at.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, 0o750)
        st = os.stat(d)
        if st.st_uid == os.geteuid():
            os.chown(d, -1, gid)
            os.chmod(d, 0o750)  # noqa: S103 (the group's read access is the point)
    if not missing:
        st = os.stat(directory)
        if st.st_uid == os.geteuid() and (st.st_gid != gid or st.st_mode & 0o050 != 0o050):
            os.chown(directory, -1, gid)
            os.chmod(directory, stat.S_IMODE(st.st_mode) | 0o050)  # noqa: S103 (as above)


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
    """The delivery error, caused by the OS error, so the log's ``error_class`` names what went
    wrong underneath (``NotADirectoryError``, ``PermissionError``), not our wrapper."""
    reason = f"{what}: {exc.strerror}"
    error: DeliveryError
    if exc.errno in PERMANENT:
        error = PermanentDeliveryError(
            reason
            + "; fix the directory's permissions or path, then `pfhjem-msg messages replay` the message"
        )
    else:
        error = TransientDeliveryError(reason)
    error.__cause__ = exc
    return error
