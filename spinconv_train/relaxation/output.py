"""Relaxation outputs: ``relaxations.npz`` (one row per relaxed system, positions
concatenated), the IS2RS submission arrays and ``relaxed.extxyz`` (the relaxed structures)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from ase import Atoms

from spinconv_train.atomic_files import save_npz_atomic
from spinconv_train.relaxation.runner import RelaxResult


def result_arrays(results: Sequence[RelaxResult]) -> dict[str, np.ndarray]:
    """Arrays of ``relaxations.npz``: ``sid`` (int64, or str when any sid is not an
    integer), ``index`` (dataset index), ``energy`` (float64, eV), ``positions``
    (sum natoms × 3, float32, Å), ``natoms``, ``steps`` (int64), ``converged`` (bool),
    ``fmax`` (float32, eV/Å, final largest free-atom force norm), ``cell`` (float64,
    systems × 3 × 3, Å: the final cell, changed only by ``relax_cell``)."""
    sids = [r.sid for r in results]
    integer = all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in sids)
    return {
        "sid": np.array(sids, dtype=np.int64 if integer else str),
        "index": np.array([r.index for r in results], dtype=np.int64),
        "energy": np.array([r.energy for r in results], dtype=np.float64),
        "positions": (np.concatenate([r.positions for r in results]).astype(np.float32) if results
                      else np.zeros((0, 3), dtype=np.float32)),
        "natoms": np.array([len(r.positions) for r in results], dtype=np.int64),
        "steps": np.array([r.steps for r in results], dtype=np.int64),
        "converged": np.array([r.converged for r in results], dtype=bool),
        "fmax": np.array([r.fmax for r in results], dtype=np.float32),
        "cell": (np.stack([r.cell for r in results]).astype(np.float64) if results
                 else np.zeros((0, 3, 3), dtype=np.float64)),
    }


def submission_arrays(results: Sequence[RelaxResult]) -> dict[str, np.ndarray]:
    """The OC20 IS2RS submission layout the reference writes as ``relaxed_positions.npz``:
    ``ids`` (sids as strings), ``pos`` (all atoms' relaxed positions, concatenated) and
    ``chunk_idx`` (where each system's rows end, without the last: ``np.split`` offsets)."""
    natoms = np.array([len(r.positions) for r in results], dtype=np.int64)
    return {
        "ids": np.array([str(r.sid) for r in results], dtype=str),
        "pos": (np.concatenate([r.positions for r in results]).astype(np.float32) if results
                else np.zeros((0, 3), dtype=np.float32)),
        "chunk_idx": np.cumsum(natoms)[:-1],
    }


def write_relaxations(path: str, results: Sequence[RelaxResult]) -> str:
    """Write ``relaxations.npz`` atomically (temporary file + rename); return ``path``."""
    save_npz_atomic(path, **result_arrays(results))
    return path


def relaxed_atoms(dataset: Any, results: Sequence[RelaxResult]) -> list[Atoms]:
    """The relaxed structures as ASE Atoms (elements, tags and fixed atoms from the dataset's
    records; final positions and cell), with ``sid``, ``energy`` (model, eV), ``steps``,
    ``converged`` and ``fmax`` in ``info``."""
    from spinconv_train.calculators.convert import record_to_atoms

    frames = []
    for result in results:
        atoms = record_to_atoms(dataset[result.index])
        atoms.set_cell(result.cell)
        atoms.positions = result.positions
        atoms.info.update({"sid": str(result.sid), "energy": float(result.energy), "steps": int(result.steps),
                           "converged": bool(result.converged), "fmax": float(result.fmax)})
        frames.append(atoms)
    return frames


def write_relaxed_structures(path: str, dataset: Any, results: Sequence[RelaxResult]) -> str:
    """Write ``relaxed_atoms`` as one extxyz file atomically; return ``path``."""
    from ase.io import write

    from spinconv_train.atomic_files import atomic_path

    with atomic_path(path, suffix=".extxyz") as tmp:
        write(tmp, relaxed_atoms(dataset, results), format="extxyz")
    return path
