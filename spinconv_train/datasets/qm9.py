"""QM9: 12 standard molecular property targets with documented units.

Units of ``y`` (converted from the original release with ``ase.units.Hartree``):

=======  ==============  ===========================================================
name     unit            meaning
=======  ==============  ===========================================================
mu       D               dipole moment
alpha    bohr^3          isotropic polarisability
homo     eV              HOMO energy
lumo     eV              LUMO energy
gap      eV              HOMO-LUMO gap
r2       bohr^2          electronic spatial extent
zpve     eV              zero-point vibrational energy
U0       eV              internal energy at 0 K        (atomisation: atom refs subtracted)
U        eV              internal energy at 298.15 K   (idem)
H        eV              enthalpy at 298.15 K          (idem)
G        eV              free energy at 298.15 K       (idem)
Cv       cal/(mol K)     heat capacity at 298.15 K
=======  ==============  ===========================================================

Atom references (B3LYP/6-31G(2df,p), hartree; the ``atomref`` table of the QM9 release,
Ramakrishnan et al., Sci. Data 1, 140022 (2014), figshare 1057643) are subtracted from
U0/U/H/G unless ``subtract_atomref: false``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase.units import Hartree
from torch.utils.data import Dataset
from torch_geometric.data import Data

from ..registry import DATASETS
from .errors import DatasetError, check_config_keys
from .molecules import check_elements, molecule_data
from .qm9_formats import PROPERTY_NAMES, QM9Table, read_qm9
from .splits import SPLIT_NAMES, split_by_size

UNITS = {"mu": "D", "alpha": "bohr^3", "homo": "eV", "lumo": "eV", "gap": "eV", "r2": "bohr^2",
         "zpve": "eV", "U0": "eV", "U": "eV", "H": "eV", "G": "eV", "Cv": "cal/(mol K)"}
HARTREE_TARGETS = ("homo", "lumo", "gap", "zpve", "U0", "U", "H", "G")
ATOMREF_TARGETS = ("U0", "U", "H", "G")

# hartree, columns U0, U, H, G
ATOM_REFS_HARTREE = {
    1: (-0.500273, -0.498857, -0.497912, -0.510927),
    6: (-37.846772, -37.845355, -37.844411, -37.861317),
    7: (-54.583861, -54.582445, -54.581501, -54.598897),
    8: (-75.064579, -75.063163, -75.062219, -75.079532),
    9: (-99.718730, -99.717314, -99.716370, -99.733544),
}
QM9_ELEMENTS = tuple(sorted(ATOM_REFS_HARTREE))
STANDARD_SPLIT = (110_000, 10_000)


def convert_properties(table: QM9Table, subtract_atomref: bool = True) -> np.ndarray:
    """The (M, 12) property table in the documented units (atom refs subtracted if asked)."""
    out = table.props.astype(np.float64).copy()
    for name in HARTREE_TARGETS:
        out[:, PROPERTY_NAMES.index(name)] *= Hartree
    if subtract_atomref:
        refs = np.zeros((max(ATOM_REFS_HARTREE) + 1, 4))
        for z, values in ATOM_REFS_HARTREE.items():
            refs[z] = values
        molecule = np.repeat(np.arange(len(table.natoms)), table.natoms)
        per_molecule = np.zeros((len(table.natoms), 4))
        np.add.at(per_molecule, molecule, refs[table.z])
        for k, name in enumerate(ATOMREF_TARGETS):
            out[:, PROPERTY_NAMES.index(name)] -= per_molecule[:, k] * Hartree
    return out


@DATASETS.register("qm9")
class QM9Dataset(Dataset):
    """QM9 molecules with the configured property targets, one split.

    Config keys: ``src`` (``qm9pack``; a folder of ``dsgdb9nsd_*.xyz`` or of qm9pack
    CSVs; a ``.tar.bz2``; a ``.csv``; or the committed subset ``.npz``), ``target`` (a
    name or list of names from ``PROPERTY_NAMES``; default all 12), ``split``
    (``train``/``val``/``test``/``all``), ``train_size``/``val_size`` (default the
    standard 110 000 / 10 000), ``test_size`` (default: the rest), ``seed`` (0),
    ``subtract_atomref`` (True), ``elements`` (allowed atomic numbers; default H C N O F).

    ``ds[i].y`` has shape (1, T) (float64) in the units of ``UNITS``;
    ``target_names`` lists the T names; ``sid`` is the gdb index.
    """

    CONFIG_KEYS = {"src", "target", "split", "train_size", "val_size", "test_size", "seed",
                   "subtract_atomref", "elements"}

    def __init__(self, config: dict, transform=None) -> None:
        check_config_keys(config, self.CONFIG_KEYS, "qm9 dataset")
        if "src" not in config:
            raise DatasetError("qm9 dataset config needs a 'src' key", field="src")
        self.src = str(config["src"])
        target = config.get("target", list(PROPERTY_NAMES))
        names = [target] if isinstance(target, str) else list(target)
        unknown = [t for t in names if t not in PROPERTY_NAMES]
        if unknown or not names:
            raise DatasetError(f"unknown target(s) {unknown or names}; choose from {', '.join(PROPERTY_NAMES)}",
                               self.src, field="target")
        self.target_names = tuple(names)
        self.split = config.get("split", "train")
        if self.split not in (*SPLIT_NAMES, "all"):
            raise DatasetError(f"split {self.split!r} is not one of train, val, test, all", self.src, field="split")
        self.table = read_qm9(self.src)
        elements = config.get("elements", QM9_ELEMENTS)
        offsets = self.table.offsets
        for m in range(len(self.table.ids)):
            z = self.table.z[offsets[m]:offsets[m + 1]]
            if z.min() < 1 or z.max() > 118 or not np.isin(z, elements).all():
                check_elements(z, self.src, int(self.table.ids[m]), elements)
        columns = [PROPERTY_NAMES.index(t) for t in self.target_names]
        self.targets = convert_properties(self.table, bool(config.get("subtract_atomref", True)))[:, columns]
        bad = ~np.isfinite(self.targets)
        if bad.any():
            m, t = np.argwhere(bad)[0]
            raise DatasetError("target is NaN or infinite", self.src, int(self.table.ids[m]), self.target_names[t])
        self.transform = transform
        n = len(self.table.ids)
        if self.split == "all":
            self.indices = np.arange(n)
        else:
            train_size = int(config.get("train_size", STANDARD_SPLIT[0]))
            val_size = int(config.get("val_size", STANDARD_SPLIT[1]))
            self.indices = split_by_size(n, train_size, val_size, config.get("test_size"),
                                         int(config.get("seed", 0)), self.src)[self.split]
        self._offsets = offsets

    @property
    def units(self) -> tuple:
        """Units of the configured targets, in order."""
        return tuple(UNITS[t] for t in self.target_names)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Data:
        m = int(self.indices[index])
        a, b = self._offsets[m], self._offsets[m + 1]
        data = molecule_data(self.table.z[a:b], self.table.pos[a:b], sid=int(self.table.ids[m]), fid=0)
        data.y = torch.as_tensor(self.targets[m:m + 1])
        return self.transform(data) if self.transform is not None else data

    def get_natoms(self) -> np.ndarray:
        """Atoms per molecule of this split."""
        return self.table.natoms[self.indices].astype(np.int64)

    def element_range(self) -> tuple[np.ndarray, np.ndarray]:
        """``(z_min, z_max)`` per molecule of this split."""
        low = np.array([self.table.z[self._offsets[m]:self._offsets[m + 1]].min() for m in self.indices],
                       dtype=np.int64)
        high = np.array([self.table.z[self._offsets[m]:self._offsets[m + 1]].max() for m in self.indices],
                        dtype=np.int64)
        return low, high

    def record_origin(self, index: int) -> tuple[str, int]:
        """``(file, molecule id)`` of structure ``index``, as this dataset's errors name it."""
        return self.src, int(self.table.ids[self.indices[index]])

    def energies_and_counts(self, field: str = "y", indices: Sequence[int] | None = None,
                            max_z: int = 118) -> tuple:
        """``(target values, element counts)``; ``field`` is ``y`` (first target) or a target name."""
        if field == "y":
            column = 0
        elif field in self.target_names:
            column = self.target_names.index(field)
        else:
            raise DatasetError(f"field {field!r} is not 'y' or a configured target {self.target_names}",
                               self.src, field=field)
        rows = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64)
        molecules = self.indices[rows]
        counts = np.zeros((len(rows), max_z + 1))
        for r, m in enumerate(molecules):
            counts[r] = np.bincount(self.table.z[self._offsets[m]:self._offsets[m + 1]], minlength=max_z + 1)
        return self.targets[molecules, column].copy(), counts
