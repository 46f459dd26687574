"""Write-then-rename: an output file appears complete or not at all."""
from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from typing import Iterator, Optional


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
def atomic_path(path: str, suffix: str = "", mode: Optional[int] = None) -> Iterator[str]:
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
