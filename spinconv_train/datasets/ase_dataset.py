"""Structures read straight from ASE files (extxyz, ASE trajectories, ASE databases).

For data that fit in memory (MD17-sized sets, fine-tuning sets, a few thousand DFT
frames): no preprocessing step. The records are exactly those ``preprocess_ef.py``
writes to an LMDB from the same files (tested); for OC20-sized data write the LMDB.
"""
from __future__ import annotations

import fnmatch
import os

import numpy as np
from torch.utils.data import Dataset
from torch_geometric.data import Data

from ..registry import DATASETS
from .ase_convert import file_records, load_refs
from .errors import DatasetError, check_config_keys
from .records import normalize_structure, validate_structure
from .splits import SPLIT_NAMES, split_by_size

DEFAULT_PATTERNS = ("*.xyz", "*.extxyz", "*.extxyz.xz", "*.traj", "*.db")


def ase_input_files(src: str, pattern: str | None = None) -> list[str]:
    """``src`` itself when it is a file, else the files in folder ``src`` matching ``pattern``
    (comma-separated globs; default extxyz (also xz-compressed), trajectories and databases),
    sorted by name."""
    if os.path.isfile(src):
        return [src]
    if not os.path.isdir(src):
        raise DatasetError("ase dataset src does not exist", src, field="src")
    patterns = [p.strip() for p in pattern.split(",")] if pattern else list(DEFAULT_PATTERNS)
    files = sorted(os.path.join(src, name) for name in os.listdir(src)
                   if os.path.isfile(os.path.join(src, name)) and any(fnmatch.fnmatch(name, p) for p in patterns))
    if not files:
        raise DatasetError(f"no files matching {', '.join(patterns)} in the folder", src, field="pattern")
    return files


@DATASETS.register("ase", "extxyz")
class AseDataset(Dataset):
    """Every frame of the ASE-readable files of ``src``, held in memory, one split.

    Config keys: ``src`` (a file, or a folder whose files match ``pattern``, or a list of
    them; files in name order within a folder, frames in file order), ``pattern`` (globs, default ``*.xyz,*.extxyz,*.traj,*.db``),
    ``split`` (``all``, default, or ``train`` / ``val`` / ``test`` of a seeded split by
    ``train_size``, ``val_size``, ``test_size`` (default: the rest) and ``seed``),
    ``energy`` / ``forces`` (default true: each frame's stored labels are required; false
    for unlabelled structures to predict), ``stress`` (default false: keep stored stresses),
    ``ref_energies`` (per-element energies, dict or JSON file, subtracted from ``y``),
    ``elements`` (allowed atomic numbers) and, for OC20 S2EF downloads (``N.extxyz.xz``
    beside ``N.txt.xz``), ``oc20_txt`` (sid / fid from the ``.txt`` rows) and
    ``oc20_ref_energy`` (subtract the rows' reference energies).

    ``sid`` is a frame's ``atoms.info["sid"]`` if set, else its file's position; ``fid``
    the frame's index in its file (as ``preprocess_ef.py``).
    """

    CONFIG_KEYS = {"src", "pattern", "split", "train_size", "val_size", "test_size", "seed", "energy", "forces",
                   "stress", "ref_energies", "elements", "oc20_txt", "oc20_ref_energy"}

    def __init__(self, config: dict, transform=None) -> None:
        check_config_keys(config, self.CONFIG_KEYS, "ase dataset")
        if "src" not in config:
            raise DatasetError("ase dataset config needs a 'src' key (a file or folder)", field="src")
        sources = config["src"]
        sources = [str(s) for s in sources] if isinstance(sources, (list, tuple)) else [str(sources)]
        self.src = ", ".join(sources)
        self.split = config.get("split", "all")
        if self.split not in (*SPLIT_NAMES, "all"):
            raise DatasetError(f"split {self.split!r} is not one of all, train, val, test", field="split")
        energy, forces = bool(config.get("energy", True)), bool(config.get("forces", True))
        if forces and not energy:
            raise DatasetError("forces: true needs energy: true (frames are read as energy + forces)", field="energy")
        refs = load_refs(config.get("ref_energies"))
        elements = config.get("elements")
        required = tuple(name for name, on in (("y", energy), ("force", forces)) if on)
        sidecars, subtract = bool(config.get("oc20_txt", False)), bool(config.get("oc20_ref_energy", False))
        if subtract and not sidecars:
            raise DatasetError("oc20_ref_energy needs oc20_txt: true (the references are in the .txt files)",
                               field="oc20_ref_energy")
        self.files = [f for source in sources for f in ase_input_files(source, config.get("pattern"))]
        records: list[Data] = []
        origins: list[tuple] = []
        for file_index, path in enumerate(self.files):
            for fid, data in file_records(path, file_index, refs, energy=energy, forces=forces,
                                          stress=bool(config.get("stress", False)), sidecars=sidecars,
                                          subtract_reference=subtract):
                normalize_structure(data, path, fid)
                validate_structure(data, path, fid, required, elements)
                records.append(data)
                origins.append((path, fid))
        self.transform = transform
        selected = self._select(config, len(records))
        self.records = [records[i] for i in selected]
        self._origins = [origins[i] for i in selected]

    def _select(self, config: dict, count: int) -> np.ndarray:
        if self.split == "all":
            return np.arange(count)
        if "train_size" not in config or "val_size" not in config:
            raise DatasetError(f"split {self.split!r} needs train_size and val_size (test: the rest unless "
                               "test_size is set)", self.src, field="train_size")
        splits = split_by_size(count, int(config["train_size"]), int(config["val_size"]), config.get("test_size"),
                               int(config.get("seed", 0)), self.src)
        return splits[self.split]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Data:
        data = self.records[index].clone()
        return self.transform(data) if self.transform is not None else data

    def get_natoms(self) -> np.ndarray:
        """Atoms per structure."""
        return np.array([int(r.natoms) for r in self.records], dtype=np.int64)

    def element_range(self) -> tuple[np.ndarray, np.ndarray]:
        """``(z_min, z_max)`` per structure."""
        rows = [(int(r.atomic_numbers.min()), int(r.atomic_numbers.max())) if r.atomic_numbers.numel() else (0, 0)
                for r in self.records]
        array = np.array(rows, dtype=np.int64).reshape(-1, 2)
        return array[:, 0], array[:, 1]

    def record_origin(self, index: int) -> tuple[str, int]:
        """``(file, frame index in it)`` of structure ``index``."""
        return self._origins[index]
