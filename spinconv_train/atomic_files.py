"""Write-then-rename: an output file appears complete or not at all."""
from __future__ import annotations

import ctypes
import errno
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class DiskFullError(OSError):
    """No space left on the device while writing an output; names the output's path."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        self.path = str(path)

    def __reduce__(self) -> tuple:  # rebuilt from the path (worker processes send it back pickled)
        return type(self), (self.path,)

    def __str__(self) -> str:
        return (f"no space left on device while writing {self.path} (nothing was written there; "
                "free some space or choose another folder, then rerun)")


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` is an ``OSError`` for a full disk (ENOSPC) or quota (EDQUOT)."""
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


@contextmanager
def atomic_path(path: str, suffix: str = "", mode: int | None = None) -> Iterator[str]:
    """A temporary path in ``path``'s folder (created if needed) to write the output to;
    renamed to ``path`` (after ``chmod`` to ``mode``, if given) when the block ends without
    an error, removed otherwise. ``suffix``: the temporary name's ending, for writers that
    choose a format by it. A full disk, while the block writes or while the file is
    created or renamed, raises one :class:`DiskFullError` naming ``path`` (not the
    temporary name, and without the low-level error chained to it)."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
        os.close(fd)
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as err:
        if is_disk_full(err) and not isinstance(err, DiskFullError):
            raise DiskFullError(path) from None
        raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def default_file_mode() -> int:
    """The mode of a newly created file: 0o666 less the process umask (mkstemp gives 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path, suffix=os.path.basename(path)) as tmp, open(tmp, "w") as handle:
        handle.write(text)


def save_npz_atomic(path: str, *, compress: bool = False, **arrays: Any) -> None:
    """``np.savez`` (``np.savez_compressed`` with ``compress``) of ``arrays`` to ``path``
    atomically, with the mode of a normally created file."""
    import numpy as np

    save = np.savez_compressed if compress else np.savez
    with atomic_path(path, suffix=".npz", mode=default_file_mode()) as tmp, open(tmp, "wb") as handle:
        save(handle, **arrays)


def torch_save_atomic(obj: Any, path: str) -> None:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(obj, tmp)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange_paths(first: str, second: str) -> bool:
    """Swap two existing paths (e.g. folders) in one step, so that no reader sees neither:
    Linux ``renameat2(RENAME_EXCHANGE)``. Returns False where the system or file system
    cannot (the caller then renames twice); other failures raise ``OSError``."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a C library without the call
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), first, None, second)
