"""OC20-layout LMDB datasets (S2EF trajectories and IS2RE/IS2RS single points)."""
from __future__ import annotations

import bisect
import fnmatch
import glob
import logging
import os
import warnings
import zipfile
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torch_geometric.data import Data

from ..registry import DATASETS
from .ase_dataset import DEFAULT_PATTERNS
from .element_refs import scalar
from .errors import DatasetError, check_config_keys
from .lmdb_io import close_shared, decode_record, read_length, read_raw, shared_readonly_env
from .records import normalize_structure, validate_structure

logger = logging.getLogger(__name__)

METADATA_NAME = "metadata.npz"
# Reading every record for its elements warns from this many records on (a minute or more).
SLOW_SCAN_RECORDS = 100_000


def find_shards(src: str) -> list[str]:
    """The ``.lmdb`` files of ``src``: the file itself, or a folder's ``*.lmdb`` sorted."""
    if os.path.isdir(src):
        shards = sorted(glob.glob(os.path.join(src, "*.lmdb")))
        if not shards:
            names = sorted(name for name in os.listdir(src) if any(fnmatch.fnmatch(name, p) for p in DEFAULT_PATTERNS))
            hint = (f"; it holds ASE-readable files ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}): "
                    f"read them with the ase dataset (dataset: {{name: ase, src: {src}}})" if names else "")
            raise DatasetError(f"folder holds no *.lmdb files{hint}", src, field="src")
        return shards
    if os.path.isfile(src):
        return [src]
    raise DatasetError("dataset src does not exist", src, field="src")


def metadata_path(src: str) -> str:
    """Where the ``metadata.npz`` of ``src`` is: in the folder, or next to the ``.lmdb`` file."""
    folder = src if os.path.isdir(src) else os.path.dirname(os.path.abspath(src))
    return os.path.join(folder, METADATA_NAME)


def record_natoms(data: Data) -> int:
    """Atoms of a stored record: its ``natoms`` field, else the length of ``pos``."""
    natoms = getattr(data, "natoms", None)
    return int(natoms) if natoms is not None else int(data.pos.shape[0])


def record_summary(data: Data) -> tuple[int, int, int]:
    """``(atoms, smallest atomic number, largest atomic number)`` of a stored record, the
    row ``metadata.npz`` keeps for it (``natoms``, ``z_min``, ``z_max``); 0, 0 without atoms."""
    z = torch.as_tensor(data.atomic_numbers).reshape(-1)
    if z.numel() == 0:
        return record_natoms(data), 0, 0
    return record_natoms(data), int(z.min()), int(z.max())


def read_metadata(path: str, src: str) -> dict[str, np.ndarray]:
    """The arrays of the ``metadata.npz`` at ``path`` (of the LMDB source ``src``); a file
    that cannot be read is a ``DatasetError`` naming it and the command that rewrites it."""
    try:
        with np.load(path, allow_pickle=False) as meta:
            return {key: np.asarray(meta[key]) for key in meta.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DatasetError(f"cannot read {METADATA_NAME} (truncated or corrupt? {type(err).__name__}: {err}); "
                           f"rewrite it from the records with: spinconv-lmdb-metadata --overwrite {src}",
                           path) from None


@DATASETS.register("lmdb", "trajectory_lmdb", "single_point_lmdb")
class LmdbDataset(Dataset):
    """Structures stored in OC20-layout LMDB files.

    Config keys:
      ``src``: a folder of ``*.lmdb`` shards or one ``.lmdb`` file, or a list of them whose
      records follow one another in list order (e.g. new data plus a replay of the data a
      model was pretrained on) (required);
      ``required_fields``: fields every record must carry (e.g. ``["y", "force"]`` for
      S2EF, ``["y_relaxed"]`` for IS2RE, ``["pos_relaxed"]`` for IS2RS);
      ``elements``: optional list of allowed atomic numbers;
      ``validate``: check shapes / NaN / elements of each record read (default True).

    ``ds[i]`` is a ``Data`` following docs/design.md; ``ds.__getitems__(indices)`` (what a
    DataLoader calls for a batch) returns the same records, the transform applied to them
    together when it can (``RadiusGraph.apply_many``). Files are opened read-only without
    locks, once per process (shared by all dataset objects: py-lmdb allows one handle per
    file and process), and reopened after a fork, so the dataset is safe in DataLoader
    workers and under DDP; pickling it (spawned workers) carries no handles.
    """

    CONFIG_KEYS = {"src", "required_fields", "elements", "validate"}

    def __init__(self, config: dict, transform: Callable[[Data], Data] | None = None) -> None:
        check_config_keys(config, self.CONFIG_KEYS, "lmdb dataset")
        if "src" not in config:
            raise DatasetError("lmdb dataset config needs a 'src' key (folder or .lmdb file)", field="src")
        sources = config["src"]
        self.sources = [str(s) for s in sources] if isinstance(sources, (list, tuple)) else [str(sources)]
        if not self.sources:
            raise DatasetError("lmdb dataset src is an empty list", field="src")
        self.src = self.sources[0] if len(self.sources) == 1 else ", ".join(self.sources)
        self.required_fields = tuple(config.get("required_fields", ()))
        elements = config.get("elements")
        self.elements = None if elements is None else tuple(int(e) for e in elements)
        self.validate = bool(config.get("validate", True))
        self.transform = transform
        per_source = [find_shards(source) for source in self.sources]
        self.shards = [shard for shards in per_source for shard in shards]
        lengths = [read_length(shared_readonly_env(shard), shard) for shard in self.shards]
        self._offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        # records per source, in order (for each source's metadata.npz)
        shard_counts = np.cumsum([0] + [len(shards) for shards in per_source])
        self._source_records = [int(self._offsets[shard_counts[k + 1]] - self._offsets[shard_counts[k]])
                                for k in range(len(self.sources))]

    # -- lazy, per-process file handles -------------------------------------------------
    def _env(self, shard: int):
        # One handle per file and process, opened on first use and reopened after a fork.
        return shared_readonly_env(self.shards[shard])

    def close(self) -> None:
        """Close this process's handles of the shards (they reopen on the next access)."""
        for shard in self.shards:
            close_shared(shard)

    # -- records ------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._offsets[-1])

    def locate(self, index: int) -> tuple:
        """``(shard file, index within the shard)`` of global record ``index``."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} records in {self.src}")
        shard = bisect.bisect_right(self._offsets, index) - 1
        return shard, index - int(self._offsets[shard])

    def raw_record(self, index: int) -> Data:
        """The record as stored (old PyG objects rebuilt), without normalisation."""
        shard, local = self.locate(int(index))
        path = self.shards[shard]
        return decode_record(read_raw(self._env(shard), path, local), path, local)

    def _read(self, index: int, envs: dict | None = None) -> Data:
        """Record ``index`` normalised and (if configured) validated, before the transform.
        ``envs`` keeps the shard handles looked up during one ``__getitems__`` call."""
        shard, local = self.locate(int(index))
        path = self.shards[shard]
        if envs is None:
            env = self._env(shard)
        else:
            env = envs.get(shard)
            if env is None:
                env = envs[shard] = self._env(shard)
        data = decode_record(read_raw(env, path, local), path, local)
        normalize_structure(data, path, local)
        if self.validate:
            validate_structure(data, path, local, self.required_fields, self.elements)
        return data

    def __getitem__(self, index: int) -> Data:
        data = self._read(index)
        if self.transform is not None:
            data = self.transform(data)
        return data

    def __getitems__(self, indices: Sequence[int]) -> list[Data]:
        """``[self[i] for i in indices]``, what a DataLoader asks for one batch (torch
        calls this when a dataset has it). A transform with ``apply_many`` (such as
        ``RadiusGraph``) treats the batch's records together: same results, less
        per-record overhead."""
        envs: dict = {}
        items = [self._read(index, envs) for index in indices]
        transform = self.transform
        if transform is None:
            return items
        apply_many = getattr(transform, "apply_many", None)
        if apply_many is not None:
            return list(apply_many(items))
        return [transform(data) for data in items]

    # -- cheap passes for samplers and fitted statistics ---------------------------------
    def metadata_path(self, source: int = 0) -> str:
        """Where a source's ``metadata.npz`` is looked for (``metadata_path``)."""
        return metadata_path(self.sources[source])

    def get_natoms(self) -> np.ndarray:
        """Atoms per record, from each source's ``metadata.npz`` when it matches, else read
        (with a warning)."""
        parts, start = [], 0
        for source, count in enumerate(self._source_records):
            parts.append(self._source_natoms(source, start, count))
            start += count
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

    def _source_metadata(self, source: int, count: int) -> tuple[dict[str, np.ndarray] | None, str]:
        """The source's metadata arrays when its ``natoms`` has one entry per record, else
        None and why not."""
        path = self.metadata_path(source)
        if not os.path.isfile(path):
            return None, f"no {path}"
        meta = read_metadata(path, self.sources[source])
        if "natoms" not in meta:
            return None, f"{path} has no 'natoms' array"
        if len(meta["natoms"]) != count:
            return None, (f"{path} lists {len(meta['natoms'])} records but the shards of {self.sources[source]} "
                          f"hold {count}: the folder may mix the outputs of different runs (rebuild it, e.g. "
                          "spinconv-preprocess-ef --overwrite), or the shards were changed after the file was written")
        return meta, ""

    def _source_natoms(self, source: int, start: int, count: int) -> np.ndarray:
        meta, reason = self._source_metadata(source, count)
        if meta is not None:
            return np.asarray(meta["natoms"], dtype=np.int64)
        advice = ("" if os.path.isfile(self.metadata_path(source))
                  else f"; write it once with: spinconv-lmdb-metadata {self.sources[source]}")
        message = f"{reason}: reading natoms from all {count} records of {self.sources[source]} (slow{advice})"
        logger.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        return np.array([record_natoms(self.raw_record(i)) for i in range(start, start + count)], dtype=np.int64)

    def element_range(self) -> tuple[np.ndarray, np.ndarray]:
        """``(z_min, z_max)`` per record: from each source's ``metadata.npz`` when it has
        them (files written by this package's preprocessing or ``spinconv-lmdb-metadata``),
        else by reading the records once."""
        lows, highs, start = [], [], 0
        for source, count in enumerate(self._source_records):
            meta, _ = self._source_metadata(source, count)
            if meta is not None and "z_min" in meta and "z_max" in meta:
                lows.append(np.asarray(meta["z_min"], dtype=np.int64))
                highs.append(np.asarray(meta["z_max"], dtype=np.int64))
            else:
                if count >= SLOW_SCAN_RECORDS:
                    message = (f"reading the elements of all {count} records of {self.sources[source]} (its "
                               f"{METADATA_NAME} does not list them; write it once with: spinconv-lmdb-metadata "
                               f"--overwrite {self.sources[source]})")
                    logger.warning(message)
                    warnings.warn(message, RuntimeWarning, stacklevel=2)
                rows = np.array([record_summary(self.raw_record(i))[1:] for i in range(start, start + count)],
                                dtype=np.int64).reshape(-1, 2)
                lows.append(rows[:, 0])
                highs.append(rows[:, 1])
            start += count
        empty = np.zeros(0, dtype=np.int64)
        return (np.concatenate(lows) if lows else empty), (np.concatenate(highs) if highs else empty)

    def record_origin(self, index: int) -> tuple[str, int]:
        """``(shard file, record index within it)`` of record ``index``, for messages."""
        shard, local = self.locate(int(index))
        return self.shards[shard], local

    def energies_and_counts(
        self, field: str = "y", indices: Sequence[int] | None = None, max_z: int = 118
    ) -> tuple:
        """``(energies (n,), element counts (n, max_z+1))`` by a light pass over records."""
        indices = range(len(self)) if indices is None else indices
        energies = np.empty(len(indices), dtype=np.float64)
        counts = np.zeros((len(indices), max_z + 1), dtype=np.float64)
        for row, index in enumerate(indices):
            data = self.raw_record(int(index))
            value = getattr(data, field, None)
            shard, local = self.locate(int(index))
            if value is None:
                raise DatasetError("missing energy field", self.shards[shard], local, field)
            energies[row] = scalar(value)
            z = torch.as_tensor(data.atomic_numbers).long().numpy()
            if z.size and (z.min() < 1 or z.max() > max_z):
                raise DatasetError(f"element outside 1..{max_z}", self.shards[shard], local, "atomic_numbers")
            counts[row] = np.bincount(z, minlength=max_z + 1)
        return energies, counts
