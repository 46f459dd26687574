"""Write-then-rename: an output file appears complete or not at all."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from typing import Iterator, Optional


@contextmanager
def atomic_path(path: str, suffix: str = "", mode: Optional[int] = None) -> Iterator[str]:
    """A temporary path in ``path``'s folder (created if needed) to write the output to;
    renamed to ``path`` (after ``chmod`` to ``mode``, if given) when the block ends without
    an error, removed otherwise. ``suffix``: the temporary name's ending, for writers that
    choose a format by it."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
