"""Delivery into a directory: write a temporary file, fsync it, rename it into place, fsync
the directory. A reader never sees half a file, and after a crash the same delivery writes
the same name again, so a file is never doubled."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from pfhjem_msg.errors import PermanentDeliveryError, TransientDeliveryError

PERMANENT = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG}


def write_atomic(directory: Path, name: str, data: bytes) -> Path:
    target = directory / name
    temp = directory / f".{name}.tmp"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, target)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        reason = f"cannot write {name} into {directory}: {exc.strerror}"
        if exc.errno in PERMANENT:
            raise PermanentDeliveryError(reason + "; fix the directory's permissions or path") from exc
        raise TransientDeliveryError(reason) from exc
    return target
