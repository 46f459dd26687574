"""Write-then-rename: an output file appears complete or not at all."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def atomic_path(path: str, suffix: str = "", mode: int | None = None) -> Iterator[str]:
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
