"""MD17 and revised MD17 (rMD17) molecular-dynamics datasets.

Two file layouts are read, both in kcal/mol and kcal/mol/Å, converted to eV and eV/Å
(1 kcal/mol = ``ase.units.kcal / ase.units.mol`` eV ≈ 0.0433641 eV):

* original MD17 npz: ``z`` (n_atoms,), ``R`` (frames, n_atoms, 3) Å, ``E`` (frames, 1),
  ``F`` (frames, n_atoms, 3);
* rMD17 npz: ``nuclear_charges``, ``coords``, ``energies`` (frames,), ``forces``.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch
from ase import units
from torch.utils.data import Dataset
from torch_geometric.data import Data

from ..registry import DATASETS
from .errors import DatasetError, check_config_keys
from .molecules import check_array, check_elements, molecule_data
from .splits import SPLIT_NAMES, read_index_file, split_by_size

KCAL_PER_MOL_IN_EV = units.kcal / units.mol
logger = logging.getLogger(__name__)

_LAYOUTS = {
    "md17": {"z": "z", "R": "R", "E": "E", "F": "F"},
    "rmd17": {"z": "nuclear_charges", "R": "coords", "E": "energies", "F": "forces"},
}


def load_md17(path: str, elements: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Read an MD17 or rMD17 npz; returns ``z``, ``pos`` (Å), ``energy`` (eV), ``force`` (eV/Å)."""
    if not os.path.isfile(path):
        raise DatasetError("MD17 file not found", path, field="src")
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - any failure to parse is bad input
        raise DatasetError(f"cannot read npz: {err}", path) from err
    with npz:
        keys = set(npz.files)
        layout = next((k for k, names in _LAYOUTS.items() if set(names.values()) <= keys), None)
        if layout is None:
            want = " or ".join("/".join(names.values()) for names in _LAYOUTS.values())
            missing = sorted(set(_LAYOUTS["md17"].values()) - keys)
            raise DatasetError(f"not an MD17/rMD17 file: needs keys {want}, has {sorted(keys)}",
                               path, field=missing[0] if missing else None)
        names = _LAYOUTS[layout]
        z = check_array(npz[names["z"]], (None,), path, names["z"]).astype(np.int64)
        n = len(z)
        pos = check_array(npz[names["R"]], (None, n, 3), path, names["R"], f" for {n} atoms")
        frames = len(pos)
        energy = np.asarray(npz[names["E"]])
        if energy.ndim == 1:  # rMD17 stores (frames,), MD17 (frames, 1)
            energy = energy[:, None]
        energy = check_array(energy, (frames, 1), path, names["E"], " (one energy per frame)")[:, 0]
        force = check_array(npz[names["F"]], (frames, n, 3), path, names["F"])
    check_elements(z, path, None, elements)
    force = force.astype(np.float64) * KCAL_PER_MOL_IN_EV
    warn_net_force(force, path, names["F"])
    return {
        "z": z,
        "pos": pos.astype(np.float64),
        "energy": energy.astype(np.float64) * KCAL_PER_MOL_IN_EV,
        "force": force,
        "layout": layout,
    }


# Mean |sum of a frame's forces| (eV/Å) above which an isolated molecule's forces are not
# those of a translation-invariant energy: far above the SCF noise of quantum-chemistry
# forces, far below the error of forces altered by an MD constraint or thermostat.
NET_FORCE_WARN_EV_A = 0.05


def warn_net_force(force: np.ndarray, path: str, key: str) -> None:
    """Warn when the frames' forces (frames, atoms, 3) in eV/Å do not sum to about zero."""
    if not len(force):
        return
    net = float(np.linalg.norm(force.sum(axis=1), axis=-1).mean())
    if net > NET_FORCE_WARN_EV_A:
        logger.warning(
            "%s: key %r: the forces of a frame sum to %.3g eV/Å on average (mean |F| per atom %.3g); an "
            "isolated molecule's forces sum to zero, and so do any model's, so no model can fit these. "
            "Were they stored with an MD constraint applied (ASE: use atoms.get_forces(apply_constraint=False))?",
            path, key, net, float(np.linalg.norm(force, axis=-1).mean()))


def resolve_md17_path(src: str, molecule: str | None) -> str:
    """``src`` itself if a file, else the molecule's file inside the folder ``src``."""
    if os.path.isfile(src):
        return src
    if not os.path.isdir(src):
        raise DatasetError("MD17 src does not exist", src, field="src")
    if not molecule:
        raise DatasetError("src is a folder: set 'molecule' to pick a file", src, field="molecule")
    for name in (f"{molecule}.npz", f"md17_{molecule}.npz", f"rmd17_{molecule}.npz", f"{molecule}_dft.npz",
                 f"{molecule}_xtb.npz"):
        path = os.path.join(src, name)
        if os.path.isfile(path):
            return path
    raise DatasetError(f"no npz for molecule {molecule!r} (tried {molecule}.npz, md17_{molecule}.npz, "
                       f"rmd17_{molecule}.npz, {molecule}_dft.npz, {molecule}_xtb.npz)", src, field="molecule")


@DATASETS.register("md17")
class MD17Dataset(Dataset):
    """Frames of one MD17/rMD17 molecule, one split.

    Config keys: ``src`` (npz file, or folder + ``molecule``), ``split`` (``train``,
    ``val``, ``test`` or ``all``; default ``train``), ``train_size`` (default 1000, the
    paper setting), ``val_size`` (default 1000), ``test_size`` (default: the rest),
    ``seed`` (default 0), ``index_files`` (mapping split → rMD17 index file; overrides the
    sized split for the splits it names), ``elements`` (allowed atomic numbers).

    ``ds[i]``: ``pos`` Å, ``y`` (1,) float64 eV, ``force`` eV/Å, zero ``cell``,
    ``pbc`` False, ``sid`` and ``fid`` the frame index in the file (ints, so that MD17
    structures batch with OC20 ones); the molecule's name is ``dataset.molecule``.
    """

    CONFIG_KEYS = {"src", "molecule", "split", "train_size", "val_size", "test_size", "seed",
                   "index_files", "elements"}

    def __init__(self, config: dict, transform=None) -> None:
        check_config_keys(config, self.CONFIG_KEYS, "md17 dataset")
        if "src" not in config:
            raise DatasetError("md17 dataset config needs a 'src' key", field="src")
        self.path = resolve_md17_path(str(config["src"]), config.get("molecule"))
        self.molecule = config.get("molecule") or os.path.splitext(os.path.basename(self.path))[0]
        self.split = config.get("split", "train")
        if self.split not in (*SPLIT_NAMES, "all"):
            raise DatasetError(f"split {self.split!r} is not one of train, val, test, all", field="split")
        arrays = load_md17(self.path, config.get("elements"))
        self.layout = arrays["layout"]
        self.z, self.pos, self.energy, self.force = arrays["z"], arrays["pos"], arrays["energy"], arrays["force"]
        self.transform = transform
        self.indices = self._select(config, len(self.energy))

    def _select(self, config: dict, frames: int) -> np.ndarray:
        if self.split == "all":
            return np.arange(frames)
        index_files = config.get("index_files") or {}
        unknown = sorted(set(index_files) - set(SPLIT_NAMES))
        if unknown:
            raise DatasetError(f"index_files names unknown split(s) {unknown}", field="index_files")
        if self.split in index_files:
            return read_index_file(str(index_files[self.split]), frames)
        splits = split_by_size(frames, int(config.get("train_size", 1000)), int(config.get("val_size", 1000)),
                               config.get("test_size"), int(config.get("seed", 0)), self.path)
        return splits[self.split]

    def __len__(self) -> int:
        return len(self.indices)

    def element_range(self) -> tuple[np.ndarray, np.ndarray]:
        """``(z_min, z_max)`` per frame (one molecule: the same for all)."""
        low, high = (int(self.z.min()), int(self.z.max())) if self.z.size else (0, 0)
        return np.full(len(self), low, dtype=np.int64), np.full(len(self), high, dtype=np.int64)

    def record_origin(self, index: int) -> tuple[str, int]:
        """``(file, frame index in it)`` of structure ``index``."""
        return self.path, int(self.indices[index])

    def __getitem__(self, index: int) -> Data:
        frame = int(self.indices[index])
        data = molecule_data(self.z, self.pos[frame], sid=frame, fid=frame)
        data.y = torch.tensor([self.energy[frame]], dtype=torch.float64)
        data.force = torch.as_tensor(self.force[frame].astype(np.float32))
        return self.transform(data) if self.transform is not None else data

    def get_natoms(self) -> np.ndarray:
        """Atoms per structure (constant for one molecule)."""
        return np.full(len(self), len(self.z), dtype=np.int64)

    def energies_and_counts(self, field: str = "y", indices=None, max_z: int = 118) -> tuple:
        """``(energies, element counts)`` for ``indices`` of this split, without building graphs."""
        if field != "y":
            raise DatasetError(f"md17 has only the energy field 'y', not {field!r}", self.path, field=field)
        rows = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64)
        counts = np.bincount(self.z, minlength=max_z + 1).astype(np.float64)
        return self.energy[self.indices[rows]].copy(), np.tile(counts, (len(rows), 1))
