"""The SpinConv checkpoints OCP released, and downloads of checkpoints into a cache.

OCP's model documentation (MODELS.md at e7a8745e) lists two SpinConv checkpoints, both
force-centric S2EF models trained with ``configs/s2ef/{2M,all}/spinconv/spinconv_force.yml``.
:func:`fetch` downloads a URL once into the cache folder (``$SPINCONV_CACHE`` or
``~/.cache/spinconv_train``), with a progress bar and a SHA-256 checksum: the expected
one when known (``sha256=``), else the one recorded at the first download, which later
uses of the cached file are checked against. Without network it fails at once with an
error naming the URL.
"""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm


@dataclass(frozen=True)
class Released:
    """One released checkpoint: where it is and what it was trained as."""

    url: str
    config: str  # the OCP config it was trained with (relative to OCP's repository)
    task: str
    train_split: str
    sha256: str | None = None  # not recorded yet: the first download records it in the cache


RELEASED: dict[str, Released] = {
    "spinconv_force_centric_2M": Released(
        url="https://dl.fbaipublicfiles.com/opencatalystproject/models/2021_12/s2ef/spinconv_force_centric_2M.pt",
        config="configs/s2ef/2M/spinconv/spinconv_force.yml", task="s2ef", train_split="2M"),
    "spinconv_force_centric_all": Released(
        url="https://dl.fbaipublicfiles.com/opencatalystproject/models/2021_08/s2ef/spinconv_force_centric_all.pt",
        config="configs/s2ef/all/spinconv/spinconv_force.yml", task="s2ef", train_split="all"),
}
TIMEOUT_S = 30.0
_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download failed or its checksum does not match; the message names the URL."""


def cache_dir() -> Path:
    """``$SPINCONV_CACHE`` or ``~/.cache/spinconv_train``."""
    return Path(os.environ.get("SPINCONV_CACHE") or Path.home() / ".cache" / "spinconv_train")


def is_url(text: str) -> bool:
    return urllib.parse.urlparse(text).scheme in ("http", "https")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, sha256: str | None = None, cache: Path | None = None, progress: bool = True,
          timeout: float = TIMEOUT_S) -> Path:
    """The cached copy of ``url``, downloaded first when absent; checked against ``sha256``
    (or the checksum recorded when it was downloaded)."""
    cache = Path(cache) if cache is not None else cache_dir()
    name = os.path.basename(urllib.parse.urlparse(url).path) or "download"
    folder = cache / hashlib.sha256(url.encode()).hexdigest()[:16]
    path, recorded = folder / name, folder / f"{name}.sha256"
    if path.is_file():
        expected = sha256 or (recorded.read_text().strip() if recorded.is_file() else None)
        actual = sha256_of(path)
        if expected is not None and actual != expected:
            raise DownloadError(f"cached copy {str(path)!r} of {url} has SHA-256 {actual}, expected {expected}; "
                                "delete it to download again")
        return path
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.part"
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - http(s) only (is_url)
            total = response.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            size = 0
            with open(tmp, "wb") as handle, tqdm(total=total, unit="B", unit_scale=True, desc=name,
                                                   disable=not progress, leave=False) as bar:
                for block in iter(lambda: response.read(_CHUNK), b""):
                    handle.write(block)
                    digest.update(block)
                    size += len(block)
                    bar.update(len(block))
        if total is not None and size != total:
            raise DownloadError(f"download of {url} stopped after {size} of {total} bytes")
    except (urllib.error.URLError, OSError, ValueError) as err:
        tmp.unlink(missing_ok=True)
        reason = getattr(err, "reason", err)
        raise DownloadError(f"cannot download {url}: {reason}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    actual = digest.hexdigest()
    if sha256 is not None and actual != sha256:
        tmp.unlink(missing_ok=True)
        raise DownloadError(f"download of {url} has SHA-256 {actual}, expected {sha256}")
    os.replace(tmp, path)
    recorded.write_text(actual + "\n")
    return path


def resolve(source: str, cache: Path | None = None, sha256: str | None = None, progress: bool = True) -> str:
    """A local checkpoint path for ``source``: a file, a released model's name or a URL
    (downloaded into the cache)."""
    if source in RELEASED:
        entry = RELEASED[source]
        return str(fetch(entry.url, sha256 or entry.sha256, cache, progress))
    if is_url(source):
        return str(fetch(source, sha256, cache, progress))
    return source
