"""Convert ASE ``Atoms`` into structure records (OC20 field layout)."""
from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import NamedTuple

import numpy as np
import torch
from ase import Atoms
from ase.constraints import FixAtoms
from torch_geometric.data import Data

from .errors import DatasetError

RefTable = Mapping[int, float] | np.ndarray


def fixed_mask(atoms: Atoms) -> np.ndarray:
    """1 for atoms fixed by a ``FixAtoms`` constraint, else 0."""
    mask = np.zeros(len(atoms), dtype=np.float32)
    for constraint in atoms.constraints:
        if isinstance(constraint, FixAtoms):
            mask[constraint.get_indices()] = 1.0
    return mask


def reference_energy(numbers: np.ndarray, refs: RefTable, source: str = "") -> float:
    """Sum of per-element reference energies for ``numbers``; unknown elements are an error."""
    total = 0.0
    for z in numbers:
        z = int(z)
        try:
            total += float(refs[z])
        except (KeyError, IndexError):
            raise DatasetError(f"no reference energy for element Z={z}", source, field="atomic_numbers") from None
    return total


def atoms_to_data(
    atoms: Atoms,
    energy: float | None = None,
    forces: np.ndarray | None = None,
    sid: int | str | None = None,
    fid: int = 0,
    refs: RefTable | None = None,
    source: str = "",
    index: int | None = None,
    stress: np.ndarray | None = None,
    dtype: torch.dtype = torch.float32,
) -> Data:
    """A ``Data`` record from ``atoms`` with OC20 dtypes.

    ``pos``/``cell``/``force`` float32, ``atomic_numbers`` float32 (as OC20 files),
    ``natoms`` (1,) long, ``tags`` long from ``atoms.get_tags()``, ``fixed`` from
    ``FixAtoms``, ``pbc`` (1,3) from the Atoms. ``energy`` becomes ``y`` (minus the summed ``refs`` when given).
    ``stress`` (eV/Å^3, ASE's sign; Voigt (6,) or (3,3)) becomes ``stress`` (1,3,3) float32.
    ``dtype``: of ``pos`` and ``cell`` (float64 for a float64 model; files keep float32).
    Rejects NaN energies/forces/positions/stresses, naming ``source``/``index``.
    """
    n = len(atoms)
    pos = np.asarray(atoms.get_positions(), dtype=np.float64)
    if not np.isfinite(pos).all():
        raise DatasetError("positions contain NaN or infinite values", source, index, "pos")
    data = Data(
        pos=torch.tensor(pos, dtype=dtype),
        cell=torch.tensor(np.asarray(atoms.get_cell()), dtype=dtype).reshape(1, 3, 3),
        atomic_numbers=torch.tensor(atoms.get_atomic_numbers(), dtype=torch.float32),
        natoms=torch.tensor([n], dtype=torch.long),
        tags=torch.tensor(atoms.get_tags(), dtype=torch.long),
        fixed=torch.tensor(fixed_mask(atoms)),
        pbc=torch.tensor(np.asarray(atoms.pbc, dtype=bool)).reshape(1, 3),
        sid=sid,
        fid=int(fid),
    )
    if energy is not None:
        energy = float(energy)
        if not np.isfinite(energy):
            raise DatasetError("energy is NaN or infinite", source, index, "y")
        if refs is not None:
            energy -= reference_energy(atoms.get_atomic_numbers(), refs, source)
        data.y = energy
    if forces is not None:
        forces = np.asarray(forces, dtype=np.float64)
        if forces.shape != (n, 3):
            raise DatasetError(f"expected shape ({n}, 3), got {forces.shape}", source, index, "force")
        if not np.isfinite(forces).all():
            raise DatasetError("forces contain NaN or infinite values", source, index, "force")
        data.force = torch.tensor(forces, dtype=torch.float32)
    if stress is not None:
        data.stress = torch.tensor(stress_matrix(stress, source, index), dtype=torch.float32).reshape(1, 3, 3)
    return data


def stress_matrix(stress: np.ndarray, source: str = "", index: int | None = None) -> np.ndarray:
    """A (3,3) stress from ASE's Voigt order (xx, yy, zz, yz, xz, xy) or a (3,3) array."""
    from ase.stress import voigt_6_to_full_3x3_stress

    stress = np.asarray(stress, dtype=np.float64)
    if stress.shape == (6,):
        stress = voigt_6_to_full_3x3_stress(stress)
    if stress.shape != (3, 3):
        raise DatasetError(f"expected a Voigt (6,) or (3, 3) stress, got shape {stress.shape}", source, index, "stress")
    if not np.isfinite(stress).all():
        raise DatasetError("stress contains NaN or infinite values", source, index, "stress")
    return stress


def frame_stress(atoms: Atoms) -> np.ndarray | None:
    """The stress stored with a periodic frame (its calculator's results), or None."""
    results = getattr(atoms.calc, "results", None) or {}
    stress = results.get("stress")
    if stress is None or not atoms.pbc.all():
        return None
    return np.asarray(stress, dtype=np.float64)


def read_frames(path: str):
    """All frames of an ASE-readable file (trajectory, extxyz, ASE database) as a list."""
    import os

    from ase.io import read

    if not os.path.isfile(path):
        raise DatasetError("input file not found", path)
    try:
        frames = read(path, index=":")
    except Exception as err:  # noqa: BLE001 - ASE raises many types for bad files
        raise DatasetError(f"ASE cannot read the file: {err}", path) from err
    return frames if isinstance(frames, list) else [frames]


def frame_results(atoms: Atoms, path: str, index: int, need_forces: bool = True) -> tuple:
    """``(energy, forces)`` stored with a frame (its calculator's results), or a clear error."""
    if atoms.calc is None:
        raise DatasetError("frame has no stored energy (no calculator results)", path, index, "y")
    try:
        energy = atoms.get_potential_energy()
    except Exception as err:  # noqa: BLE001
        raise DatasetError(f"frame has no stored energy: {err}", path, index, "y") from err
    forces = None
    if need_forces:
        try:
            forces = atoms.get_forces(apply_constraint=False)
        except Exception as err:  # noqa: BLE001
            raise DatasetError(f"frame has no stored forces: {err}", path, index, "force") from err
    return energy, forces


def load_refs(spec) -> dict | None:
    """Element reference energies from a dict or a JSON file: keys symbols or atomic numbers."""
    import json

    from ase.data import atomic_numbers as symbol_to_z

    if spec is None:
        return None
    source = ""
    if isinstance(spec, str):
        source = spec
        try:
            with open(spec) as handle:
                spec = json.load(handle)
        except (OSError, ValueError) as err:
            raise DatasetError(f"cannot read reference energies: {err}", source) from err
    refs = {}
    for key, value in spec.items():
        if isinstance(key, str) and not key.isdigit():
            if key not in symbol_to_z:
                raise DatasetError(f"unknown element symbol {key!r}", source, field="refs")
            z = symbol_to_z[key]
        else:
            z = int(key)
        refs[z] = float(value)
    return refs


def frame_record(atoms: Atoms, path: str, file_index: int, fid: int, refs: RefTable | None = None,
                 energy: bool = True, forces: bool = True, stress: bool = False,
                 sidecar: SidecarRow | None = None, subtract_reference: bool = False) -> Data:
    """The record of frame ``fid`` of file ``path`` (the ``file_index``-th input), as
    ``preprocess_ef.py`` stores it: ``sid`` from ``atoms.info["sid"]`` (else ``file_index``),
    the stored energy (minus ``refs``), forces and, with ``stress``, the stored stress;
    a missing label is an error naming the file, frame and field. ``sidecar``: the frame's
    row of an OC20 ``.txt`` file, which gives ``sid`` and ``fid`` (and, with
    ``subtract_reference``, the reference energy subtracted from ``y``)."""
    value, force = frame_results(atoms, path, fid, need_forces=forces) if energy else (None, None)
    sid, record_fid = atoms.info.get("sid", file_index), fid
    if sidecar is not None:
        sid, record_fid = sidecar.sid, sidecar.fid
        if subtract_reference and value is not None:
            value = float(value) - sidecar.reference_energy
    frame_stress_value = None
    if stress:
        frame_stress_value = frame_stress(atoms)
        if frame_stress_value is None:
            raise DatasetError("frame has no stored stress (or is not periodic in all directions); "
                               "training on stress needs it for every frame", path, fid, "stress")
    return atoms_to_data(atoms, value, force, sid=sid, fid=record_fid, refs=refs, source=path, index=fid,
                         stress=frame_stress_value)


def file_records(path: str, file_index: int, refs: RefTable | None = None, energy: bool = True,
                 forces: bool = True, stress: bool = False, sidecars: bool = False,
                 subtract_reference: bool = False) -> Iterator[tuple[int, Data]]:
    """``(index in the file, record)`` for every frame of ``path`` (see ``frame_record``);
    with ``sidecars`` the OC20 ``.txt`` rows beside the file give sid / fid (and, with
    ``subtract_reference``, the reference energies)."""
    frames = read_frames(path)
    rows = read_sidecar(sidecar_path(path), len(frames), path) if sidecars else [None] * len(frames)
    for fid, (atoms, row) in enumerate(zip(frames, rows)):
        yield fid, frame_record(atoms, path, file_index, fid, refs, energy=energy, forces=forces, stress=stress,
                                sidecar=row, subtract_reference=subtract_reference)


class SidecarRow(NamedTuple):
    """One line of an OC20 S2EF ``.txt`` file: ``random<sid>,frame<fid>,<reference energy>``."""

    sid: int
    fid: int
    reference_energy: float


_SIDECAR_LINE = re.compile(r"^\s*random(\d+)\s*,\s*frame(\d+)\s*,\s*([-+0-9.eE]+)\s*$")


def sidecar_path(path: str) -> str:
    """The OC20 ``.txt`` file beside ``X.extxyz`` / ``X.extxyz.xz``: ``X.txt`` or ``X.txt.xz``."""
    import os

    base = path[:-3] if path.endswith(".xz") else path
    stem = base[: -len(".extxyz")] if base.endswith(".extxyz") else os.path.splitext(base)[0]
    for candidate in (stem + ".txt", stem + ".txt.xz"):
        if os.path.isfile(candidate):
            return candidate
    raise DatasetError(f"no OC20 sidecar file {stem}.txt or {stem}.txt.xz for it", path)


def read_sidecar(path: str, frames: int, structures: str) -> list[SidecarRow]:
    """The rows of an OC20 S2EF ``.txt`` (or ``.txt.xz``) file, one per frame of ``structures``."""
    import lzma

    opener = lzma.open if path.endswith(".xz") else open
    try:
        with opener(path, "rt") as handle:
            lines = [line for line in handle.read().splitlines() if line.strip()]
    except (OSError, lzma.LZMAError, UnicodeDecodeError) as err:
        raise DatasetError(f"cannot read OC20 sidecar file: {err}", path) from err
    if len(lines) != frames:
        raise DatasetError(f"has {len(lines)} rows but {structures} has {frames} frames (one row per frame)", path)
    rows = []
    for number, line in enumerate(lines):
        match = _SIDECAR_LINE.match(line)
        if match is None:
            raise DatasetError(f"row {number} is {line.strip()!r}, expected random<sid>,frame<fid>,<energy>", path)
        try:
            energy = float(match.group(3))
        except ValueError:
            raise DatasetError(f"row {number}: reference energy {match.group(3)!r} is not a number", path) from None
        rows.append(SidecarRow(int(match.group(1)), int(match.group(2)), energy))
    return rows
