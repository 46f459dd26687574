"""Batched predictions of a force model on ASE structures, and their errors against the
labels stored with the structures (``scripts/evaluate_structures.py``)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.stress import full_3x3_to_voigt_6_stress

from spinconv_train.checkpoints.store import CheckpointError
from spinconv_train.datasets import DatasetError, collate
from spinconv_train.datasets.ase_convert import atoms_to_data
from spinconv_train.tasks.protocol import Task


class NotAForceModelError(CheckpointError):
    """The checkpoint's trainer or model does not predict forces."""


def calculator_properties(stress: bool, atom_energies: bool) -> list[str]:
    """An ASE calculator's ``implemented_properties``: ASE refuses ``get_stress()`` /
    ``get_potential_energies()`` before calling a calculator that does not list them."""
    optional = [name for name, on in (("stress", stress), ("energies", atom_energies)) if on]
    return ["energy", "free_energy", "forces", *optional]


def frame_name(atoms: Atoms, index: int) -> str:
    """How warnings name a structure: its ``sid`` when it has one, else its index and formula."""
    sid = atoms.info.get("sid")
    return f"structure {sid}" if sid is not None else f"structure {index} ({atoms.get_chemical_formula()})"


def predict_atoms(model: torch.nn.Module, task: Task, frames: Sequence[Atoms], batch_size: int = 16,
                  stress: bool = False, device: torch.device | None = None,
                  names: Sequence[str] | None = None) -> list[dict[str, np.ndarray]]:
    """``{"energy", "forces"[, "stress"][, "energies"]}`` per frame (eV, eV/Å, eV/Å^3 Voigt,
    per-atom eV for models that expose them), in batches of ``batch_size`` structures, in the
    training data's units (as ``--mode predict``). The ASE calculator makes the same call
    for one structure. Structures with elements the model was not trained on are warned
    about once each, by ``names`` (default :func:`frame_name`)."""
    for index, atoms in enumerate(frames):
        task.targets.check_elements(atoms.numbers, names[index] if names is not None else frame_name(atoms, index))
    first = next(model.parameters(), torch.empty(0))  # (a parameterless test double: CPU, float32)
    device = device if device is not None else first.device
    dtype = first.dtype if first.dtype in (torch.float32, torch.float64) else torch.float32
    if stress and not getattr(model, "supports_stress", False):
        raise ValueError("stress needs an energy-centric SpinConv (force_estimator: grad, use_pbc: true)")
    model.eval()
    results: list[dict[str, np.ndarray]] = []
    for start in range(0, len(frames), batch_size):
        chunk = frames[start:start + batch_size]
        if stress:
            for k, atoms in enumerate(chunk):
                if not atoms.pbc.all() or atoms.cell.volume <= 1e-6:
                    raise DatasetError("stress needs a periodic cell in all directions", None, start + k, "cell")
        batch = collate([atoms_to_data(atoms, sid=start + k, dtype=dtype) for k, atoms in enumerate(chunk)])
        batch = batch.to(device)
        kwargs = {"stress": True} if stress else {}
        if getattr(model, "supports_atom_energies", False):
            kwargs["atom_energies"] = True
        with torch.no_grad():  # gradient-force models enable autograd inside their forward
            out = model(batch, **kwargs)
        if "forces" not in out:
            raise NotAForceModelError(f"model {type(model).__name__} returned no 'forces' "
                                      "(was it built with regress_forces: false?)")
        pred = task.denormalize(out, batch)
        energies = pred["energy"].reshape(-1).cpu().numpy()
        forces = pred["forces"].cpu().numpy().astype(np.float64)
        splits = np.cumsum([len(atoms) for atoms in chunk])[:-1]
        atom_energies = (np.split(pred["atom_energies"].cpu().numpy().astype(np.float64), splits)
                         if "atom_energies" in pred else None)
        for k, frame_forces in enumerate(np.split(forces, splits)):
            item = {"energy": np.float64(energies[k]), "forces": frame_forces}
            if atom_energies is not None:
                item["energies"] = atom_energies[k]
            if stress:
                item["stress"] = full_3x3_to_voigt_6_stress(pred["stress"].reshape(-1, 3, 3)[k].cpu().numpy())
            results.append(item)
    return results


def stored_labels(atoms: Atoms) -> dict[str, np.ndarray]:
    """The energy, forces and stress stored with a frame (its calculator's results), if any."""
    results = getattr(atoms.calc, "results", None) or {}
    labels = {}
    for key in ("energy", "forces", "stress"):
        if results.get(key) is not None:
            labels[key] = np.asarray(results[key], dtype=np.float64)
    if "stress" in labels and labels["stress"].shape == (3, 3):
        labels["stress"] = full_3x3_to_voigt_6_stress(labels["stress"])
    return labels


def error_summary(frames: Sequence[Atoms], predictions: Iterable[dict[str, np.ndarray]]) -> dict[str, Any]:
    """MAE / RMSE of energy (also per atom), forces (all components) and stress (Voigt)
    over the frames that store each label; counts of frames compared; and the force MAE /
    RMSE of each element (``forces_by_element``: symbol -> mae, rmse, atoms)."""
    sums: dict[str, list[np.ndarray]] = {}
    by_element: dict[str, list[np.ndarray]] = {}
    for atoms, pred in zip(frames, predictions):
        labels = stored_labels(atoms)
        if "energy" in labels:
            error = float(pred["energy"] - labels["energy"])
            sums.setdefault("energy", []).append(np.array([error]))
            sums.setdefault("energy_per_atom", []).append(np.array([error / len(atoms)]))
        if "forces" in labels:
            difference = pred["forces"] - labels["forces"]
            sums.setdefault("forces", []).append(difference.reshape(-1))
            for symbol, row in zip(atoms.get_chemical_symbols(), difference):
                by_element.setdefault(symbol, []).append(row)
        if "stress" in labels and "stress" in pred:
            sums.setdefault("stress", []).append((pred["stress"] - labels["stress"]).reshape(-1))
    summary: dict[str, Any] = {"frames": len(frames)}
    for key, parts in sums.items():
        errors = np.concatenate(parts)
        summary[f"{key}_mae"] = float(np.abs(errors).mean())
        summary[f"{key}_rmse"] = float(np.sqrt((errors ** 2).mean()))
        summary[f"{key}_frames"] = len(parts)
    if by_element:
        summary["forces_by_element"] = {
            symbol: {"mae": float(np.abs(rows).mean()), "rmse": float(np.sqrt((np.square(rows)).mean())),
                     "atoms": len(rows)}
            for symbol, rows in sorted((s, np.stack(r)) for s, r in by_element.items())}
    return summary
