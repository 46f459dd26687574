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
from spinconv_train.datasets.ase_convert import atoms_to_data, fixed_mask
from spinconv_train.tasks import metrics as ev
from spinconv_train.tasks.protocol import Task

# The metrics of ``error_summary`` by the label they need.
SUMMARY_METRICS = {
    "energy": ("energy_mae", "energy_rmse", "energy_per_atom_mae"),
    "forces": ("forces_mae", "forces_rmse", "forces_mae_all_atoms", "forces_rmse_all_atoms"),
    "stress": ("stress_mae", "stress_rmse"),
}


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
    """Errors of the predictions against the labels stored with the frames, with the
    definitions of ``--mode validate`` (``tasks/metrics.py``): MAE / RMSE of energy (also
    per atom) and of stress (Voigt) over the frames that store each; ``forces_mae`` /
    ``forces_rmse`` over every component of the free atoms (not fixed by ``FixAtoms``), as
    OC20 scores forces, and ``forces_mae_all_atoms`` / ``forces_rmse_all_atoms`` over every
    atom; counts of frames compared (``*_frames``) and of free atoms (``forces_free_atoms``);
    and per element the free atoms' force MAE / RMSE (``forces_by_element``: symbol -> mae,
    rmse, atoms)."""
    acc = ev.MetricAccumulator()
    frame_counts: dict[str, int] = {}
    by_element: dict[str, list[np.ndarray]] = {}
    free_atoms = 0
    for atoms, pred in zip(frames, predictions):
        labels = stored_labels(atoms)
        if "energy" in labels:
            predicted, target = torch.tensor([float(pred["energy"])]), torch.tensor([float(labels["energy"])])
            acc.add("energy_mae", ev.energy_mae(predicted, target))
            acc.add("energy_rmse", ev.energy_squared_error(predicted, target))
            acc.add("energy_per_atom_mae", ev.energy_per_atom_mae(predicted, target, torch.tensor([len(atoms)])))
            frame_counts["energy"] = frame_counts.get("energy", 0) + 1
        if "forces" in labels:
            predicted = torch.as_tensor(np.asarray(pred["forces"], dtype=np.float64))
            target = torch.as_tensor(labels["forces"])
            free = torch.as_tensor(fixed_mask(atoms) == 0)
            every = torch.ones(len(atoms), dtype=torch.bool)
            acc.add("forces_mae", ev.forces_mae(predicted, target, free))
            acc.add("forces_rmse", ev.forces_squared_error(predicted, target, free))
            acc.add("forces_mae_all_atoms", ev.forces_mae(predicted, target, every))
            acc.add("forces_rmse_all_atoms", ev.forces_squared_error(predicted, target, every))
            frame_counts["forces"] = frame_counts.get("forces", 0) + 1
            free_atoms += int(free.sum())
            difference = (predicted - target)[free].numpy()
            for symbol, row in zip(np.asarray(atoms.get_chemical_symbols())[free.numpy()], difference):
                by_element.setdefault(str(symbol), []).append(row)
        if "stress" in labels and "stress" in pred:
            error = np.asarray(pred["stress"], dtype=np.float64).reshape(-1) - labels["stress"].reshape(-1)
            acc.add("stress_mae", (float(np.abs(error).sum()), float(error.size)))
            acc.add("stress_rmse", (float((error ** 2).sum()), float(error.size)))
            frame_counts["stress"] = frame_counts.get("stress", 0) + 1
    summary: dict[str, Any] = {"frames": len(frames)}
    values = acc.compute()
    for group, metrics in SUMMARY_METRICS.items():
        if group in frame_counts:
            summary.update({name: values[name] for name in metrics})
            summary[f"{group}_frames"] = frame_counts[group]
    if "forces" in frame_counts:
        summary["forces_free_atoms"] = free_atoms
    if by_element:
        summary["forces_by_element"] = {
            symbol: {"mae": float(np.abs(rows).mean()), "rmse": float(np.sqrt((np.square(rows)).mean())),
                     "atoms": len(rows)}
            for symbol, rows in sorted((s, np.stack(r)) for s, r in by_element.items())}
    return summary
