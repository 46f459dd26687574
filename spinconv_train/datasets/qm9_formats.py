"""Readers for QM9: the original ``dsgdb9nsd_*.xyz`` files (folder or ``.tar.bz2``), the
CSV tables of the PyPI package ``qm9pack``, and the compact npz of a committed subset.

Every reader returns a ``QM9Table``: concatenated atoms plus one row of the 12 standard
properties per molecule, in the units of the original release (see ``RAW_UNITS``).
"""
from __future__ import annotations

import csv
import glob
import importlib.util
import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from zlib import error as zlib_error

import numpy as np
from ase.data import atomic_numbers as SYMBOL_TO_Z

from .errors import DatasetError

# The 12 standard targets, in the order of the original property line (after A, B, C).
PROPERTY_NAMES = ("mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "U0", "U", "H", "G", "Cv")
RAW_UNITS = ("D", "bohr^3", "Ha", "Ha", "Ha", "bohr^2", "Ha", "Ha", "Ha", "Ha", "Ha", "cal/(mol K)")

# qm9pack CSV column for each property.
CSV_COLUMNS = ("Dipole_debye", "Polarizability_bohr3", "HOMO_au", "LUMO_au", "HOMO_LUMO_gap_au", "R2_bohr2",
               "ZPVE_au", "InternalEnergy_0K_au", "InternalEnergy_298K_au", "Enthalphy_298K_au",
               "GibbsFreeEnergy_298K_au", "Heatcapacity_Cv_cal_mol_K")

_FLOAT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_SYMBOL = re.compile(r"[A-Z][a-z]?")


@dataclass
class QM9Table:
    """Molecules as flat arrays: ``z``/``pos`` concatenated, ``natoms`` and ``props`` per molecule."""

    ids: np.ndarray  # (M,) gdb index
    natoms: np.ndarray  # (M,)
    z: np.ndarray  # (sum natoms,)
    pos: np.ndarray  # (sum natoms, 3) Å
    props: np.ndarray  # (M, 12) raw units
    source: str = ""

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.natoms)]).astype(np.int64)

    def molecule(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """``(z, pos)`` of molecule ``m``."""
        a, b = self.offsets[m], self.offsets[m + 1]
        return self.z[a:b], self.pos[a:b]

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[int, np.ndarray, np.ndarray, np.ndarray]], source: str) -> QM9Table:
        rows = list(rows)
        if not rows:
            raise DatasetError("no QM9 molecules found", source)
        return cls(
            ids=np.array([r[0] for r in rows], dtype=np.int64),
            natoms=np.array([len(r[1]) for r in rows], dtype=np.int64),
            z=np.concatenate([r[1] for r in rows]).astype(np.int64),
            pos=np.concatenate([r[2] for r in rows]).astype(np.float64),
            props=np.stack([r[3] for r in rows]).astype(np.float64),
            source=source,
        )


def _float(token: str, source: str, index: int | None, field: str) -> float:
    try:
        return float(token.replace("*^", "e"))
    except ValueError:
        raise DatasetError(f"not a number: {token!r}", source, index, field) from None


def parse_qm9_xyz(text: str, source: str = "") -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Parse one original QM9 xyz file: ``(gdb id, z, pos, 12 properties)``.

    Line 1 the atom count; line 2 ``gdb <id> A B C mu alpha homo lumo gap r2 zpve U0 U H G
    Cv``; then ``symbol x y z charge`` lines (numbers may use Mathematica's ``*^``).
    """
    lines = text.splitlines()
    try:
        n = int(lines[0].strip())
    except (IndexError, ValueError):
        raise DatasetError("first line is not an atom count", source, field="natoms") from None
    if len(lines) < n + 2:
        raise DatasetError(f"expected {n} atom lines, file has {len(lines) - 2} lines after the header",
                           source, field="pos")
    head = lines[1].split()
    if len(head) < 17 or head[0] != "gdb":
        raise DatasetError("second line is not a 'gdb <id> A B C ...' property line", source, field="properties")
    gdb_id = int(head[1])
    props = np.array([_float(t, source, gdb_id, name) for t, name in zip(head[5:17], PROPERTY_NAMES)])
    z = np.empty(n, dtype=np.int64)
    pos = np.empty((n, 3))
    for i, line in enumerate(lines[2:2 + n]):
        parts = line.split()
        if len(parts) < 4 or parts[0] not in SYMBOL_TO_Z:
            raise DatasetError(f"bad atom line {i + 1}: {line!r}", source, gdb_id, "atomic_numbers")
        z[i] = SYMBOL_TO_Z[parts[0]]
        pos[i] = [_float(t, source, gdb_id, "pos") for t in parts[1:4]]
    return gdb_id, z, pos, props


def read_xyz_folder(folder: str) -> QM9Table:
    """All ``*.xyz`` files of a folder (sorted by name)."""
    files = sorted(glob.glob(os.path.join(folder, "*.xyz")))
    if not files:
        raise DatasetError("folder holds no *.xyz files", folder, field="src")
    rows = []
    for path in files:
        with open(path) as handle:
            rows.append(parse_qm9_xyz(handle.read(), path))
    return QM9Table.from_rows(rows, folder)


def read_xyz_tar(path: str) -> QM9Table:
    """The ``*.xyz`` members of a (compressed) tar archive, e.g. ``dsgdb9nsd.xyz.tar.bz2``."""
    named = []
    try:
        # One sequential pass: random access into a compressed stream would decompress
        # from the start for every member.
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".xyz"):
                    text = tar.extractfile(member).read().decode()
                    named.append((member.name, parse_qm9_xyz(text, f"{path}:{member.name}")))
    except (tarfile.TarError, EOFError, OSError, zlib_error) as err:
        raise DatasetError(f"cannot read tar archive (corrupt or truncated?): {err}", path) from err
    named.sort(key=lambda item: item[0])
    return QM9Table.from_rows([row for _, row in named], path)


def qm9pack_csv_files() -> list[str]:
    """The ``qm9_part*.csv`` files of the installed ``qm9pack`` (found without importing it)."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("the optional package qm9pack is not installed: pip install -e .[qm9]", field="src")
    folder = os.path.join(list(spec.submodule_search_locations)[0], "data")
    files = sorted(glob.glob(os.path.join(folder, "qm9_part*.csv")))
    if not files:
        raise DatasetError("qm9pack has no data/qm9_part*.csv files", folder, field="src")
    return files


def iter_qm9pack_rows(
    files: Iterable[str], ids: set | None = None
) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Rows of qm9pack CSV files as ``(gdb id, z, pos, 12 properties)``; only ``ids`` if given."""
    csv.field_size_limit(1 << 30)
    for path in files:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in ("Index", "Elements", "XYZ_Ang", *CSV_COLUMNS) if c not in (reader.fieldnames or [])]
            if missing:
                raise DatasetError(f"CSV lacks column(s) {missing}", path, field=missing[0])
            for line, row in enumerate(reader):
                gdb_id = int(row["Index"])
                if ids is not None and gdb_id not in ids:
                    continue
                symbols = _SYMBOL.findall(row["Elements"])
                try:
                    z = np.array([SYMBOL_TO_Z[s] for s in symbols], dtype=np.int64)
                except KeyError as err:
                    raise DatasetError(f"unknown element {err.args[0]!r}", path, line, "Elements") from None
                pos = np.array([float(t) for t in _FLOAT.findall(row["XYZ_Ang"])])
                if pos.size != 3 * len(z):
                    raise DatasetError(f"{pos.size} coordinates for {len(z)} atoms", path, line, "XYZ_Ang")
                props = np.array([_float(row[c], path, line, c) for c in CSV_COLUMNS])
                yield gdb_id, z, pos.reshape(-1, 3), props


def read_qm9pack(files: list[str] | None = None, ids: set | None = None) -> QM9Table:
    """QM9 from qm9pack's CSV tables (all of the installed package unless ``files``)."""
    files = files or qm9pack_csv_files()
    return QM9Table.from_rows(iter_qm9pack_rows(files, ids), ",".join(files))


NPZ_KEYS = ("ids", "natoms", "z", "pos", "props")


def read_npz(path: str) -> QM9Table:
    """A compact subset written by ``save_npz`` (``scripts/make_qm9_subset.py``)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in NPZ_KEYS if k not in npz.files]
            if missing:
                raise DatasetError(f"not a QM9 subset npz: missing {missing}", path, field=missing[0])
            table = QM9Table(*(npz[k] for k in NPZ_KEYS), source=path)
            table.z = table.z.astype(np.int64)
    except DatasetError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure to parse is bad input
        raise DatasetError(f"cannot read npz: {err}", path) from err
    total = int(table.natoms.sum())
    if table.z.shape != (total,) or table.pos.shape != (total, 3) or table.props.shape != (len(table.ids), 12):
        raise DatasetError("inconsistent array shapes", path, field="natoms")
    return table


def to_npz_arrays(table: QM9Table) -> dict:
    """The arrays ``read_npz`` expects (positions as stored: float64)."""
    return {"ids": table.ids, "natoms": table.natoms, "z": table.z.astype(np.uint8), "pos": table.pos,
            "props": table.props}


def read_qm9(src: str) -> QM9Table:
    """Dispatch on ``src``: ``qm9pack``, a ``.npz``, a ``.tar``/``.tar.bz2``, a ``.csv``, or a folder."""
    if src == "qm9pack":
        return read_qm9pack()
    if os.path.isdir(src):
        csvs = sorted(glob.glob(os.path.join(src, "qm9_part*.csv")))
        return read_qm9pack(csvs) if csvs else read_xyz_folder(src)
    if not os.path.isfile(src):
        raise DatasetError("QM9 src does not exist", src, field="src")
    if src.endswith(".npz"):
        return read_npz(src)
    if src.endswith(".csv"):
        return read_qm9pack([src])
    if ".tar" in os.path.basename(src) or src.endswith((".tbz2", ".tgz")):
        return read_xyz_tar(src)
    raise DatasetError("unknown QM9 format: expected qm9pack, .npz, .csv, .tar(.bz2) or a folder", src, field="src")
