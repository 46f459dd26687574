"""The ``forces`` trainer (S2EF, MD17): loss and metrics for energy + forces."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from spinconv_train import distributed as dist
from spinconv_train.registry import TRAINERS
from spinconv_train.tasks import metrics as ev
from spinconv_train.tasks.targets import TargetState, free_mask, scalar_loss, structure_ids

# OC20 tags: 0 subsurface slab atoms, 1 surface slab atoms, 2 adsorbate atoms.
TAG_GROUPS = {0: "subsurface", 1: "surface", 2: "adsorbate"}


def rank_share(count: int, device: torch.device) -> float:
    """``count × world size / (count summed over ranks)`` (a collective: all ranks call it).

    DDP averages the ranks' gradients; a rank's mean force loss scaled by this factor makes
    that average the gradient of the mean over every rank's free atoms, as one process with
    the whole batch computes it (the ranks' free-atom counts differ; their structure counts
    do not, so the energy term needs no factor)."""
    counts = torch.tensor([float(count)], dtype=torch.float64, device=device)
    dist.all_reduce_sum(counts)
    total = float(counts.item())
    return float(count) * dist.get_world_size() / total if total > 0 else 0.0


@TRAINERS.register("forces", "s2ef")
class ForcesTask:
    """Energy (``y``) and forces (``force``); force loss and metrics on free atoms; with
    ``optim.stress_coefficient > 0`` also the stress (``stress``, (B,3,3) eV/Å^3)."""

    default_metric = "forces_mae"
    energy_field = "y"
    regress_forces = True
    num_targets = 1

    def __init__(self, task: Mapping[str, Any], optim: Mapping[str, Any], targets: TargetState) -> None:
        self.targets = targets
        self.train_free = bool(task["train_on_free_atoms"])
        self.eval_free = bool(task["eval_on_free_atoms"])
        self.loss_energy = optim["loss_energy"].lower()
        self.energy_per_atom = bool(optim.get("energy_per_atom", False))
        self.loss_force = optim["loss_force"].lower()
        self.energy_coef = float(optim["energy_coefficient"])
        self.force_coef = float(optim["force_coefficient"])
        self.stress_coef = float(optim.get("stress_coefficient") or 0.0)
        self.loss_stress = str(optim.get("loss_stress") or "mae").lower()
        self.by_tag = bool(task.get("metrics_by_tag", False))

    @property
    def trains_stress(self) -> bool:
        return self.stress_coef > 0

    def label_fields(self) -> list[str]:
        """Fields every evaluated record must carry."""
        return ["y", "force", "stress"] if self.trains_stress else ["y", "force"]

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of every model call: the stress when it is trained."""
        return {"stress": True} if self.trains_stress else {}

    def metric_names(self) -> list[str]:
        names = ["energy_mae", "energy_per_atom_mae", "energy_rmse", "forces_mae", "forces_rmse", "forces_cos",
                 "forces_magnitude",
                 "energy_within_threshold", "energy_force_within_threshold"]
        if self.by_tag:
            names += [f"forces_{kind}_{group}" for group in TAG_GROUPS.values() for kind in ("mae", "cos")]
        return names + ["stress_mae"] if self.trains_stress else names

    def referenced_target(self, batch: Any) -> Tensor:
        """Energy (B,) float64 minus element references (before normalising)."""
        energy = batch.y.reshape(-1).double()
        reference = self.targets.reference(batch)
        return energy if reference is None else energy - reference

    def loss(self, out: Mapping[str, Tensor], batch: Any) -> Tensor:
        """``energy_coefficient·L_E + force_coefficient·L_F`` on normalised targets (with
        ``optim.energy_per_atom`` the energy terms are divided by each structure's atoms)."""
        norm = self.targets.normalizer
        pred_e = out["energy"].reshape(-1)
        target_e = norm.norm(self.referenced_target(batch)).to(pred_e.dtype)
        if self.energy_per_atom:
            natoms = batch.natoms.reshape(-1).to(pred_e.dtype)
            pred_e, target_e = pred_e / natoms, target_e / natoms
        if "forces" not in out:
            raise KeyError("the forces trainer needs a model that returns 'forces' (set model.regress_forces)")
        mask = free_mask(batch, self.train_free)
        pred_f = out["forces"][mask]
        target_f = norm.norm_forces(batch.force[mask].to(pred_f.dtype))
        force_loss = scalar_loss(self.loss_force, pred_f, target_f)
        if torch.is_grad_enabled() and dist.get_world_size() > 1:
            force_loss = force_loss * rank_share(pred_f.shape[0], pred_f.device)
        loss = self.energy_coef * scalar_loss(self.loss_energy, pred_e, target_e) + self.force_coef * force_loss
        if self.trains_stress:
            pred_s = out["stress"].reshape(-1, 9)
            target_s = norm.norm_stress(self.stress_target(batch)).reshape(-1, 9).to(pred_s.dtype)
            loss = loss + self.stress_coef * scalar_loss(self.loss_stress, pred_s, target_s)
        return loss

    @staticmethod
    def stress_target(batch: Any) -> Tensor:
        """The batch's stresses (B,3,3) float64, or a clear error when the records have none."""
        stress = getattr(batch, "stress", None)
        if stress is None:
            raise KeyError("optim.stress_coefficient > 0 needs records with a 'stress' field "
                           "(scripts/preprocess_ef.py --stress)")
        return stress.reshape(-1, 3, 3).double()

    def denormalize(self, out: Mapping[str, Tensor], batch: Any) -> dict[str, Tensor]:
        """Model outputs in eV and eV/Å (energy float64 with element references added back);
        a "stress" output (eV/Å^3) is scaled like the energy it is the strain derivative of."""
        norm = self.targets.normalizer
        energy = norm.denorm(out["energy"].detach().reshape(-1).double())
        reference = self.targets.reference(batch)
        if reference is not None:
            energy = energy + reference
        result = {"energy": energy, "forces": norm.denorm_forces(out["forces"].detach().double())}
        if "stress" in out:
            result["stress"] = norm.denorm_stress(out["stress"].detach().double())
        if "atom_energies" in out:
            result["atom_energies"] = self.denormalize_atom_energies(out["atom_energies"], batch)
        return result

    def denormalize_atom_energies(self, atom_energies: Tensor, batch: Any) -> Tensor:
        """Per-atom energies (N,) in eV that sum to the denormalised energies: each atom gets
        ``std`` times its term, an equal share of the normaliser's mean over its structure's
        atoms, and its element's reference energy."""
        norm = self.targets.normalizer
        structure = batch.batch if batch.batch is not None else torch.zeros_like(atom_energies, dtype=torch.long)
        natoms = batch.natoms.reshape(-1).to(atom_energies.device).double()
        values = atom_energies.detach().double()
        values = values * norm.std.to(values).reshape(-1)[0] + norm.mean.to(values).reshape(-1)[0] / natoms[structure]
        refs = self.targets.element_references
        return values if refs is None else values + refs.atom_energies(batch.atomic_numbers)

    def update_metrics(self, acc: ev.MetricAccumulator, pred: Mapping[str, Tensor], batch: Any) -> None:
        target_e = batch.y.reshape(-1).double()
        target_f = batch.force.double()
        mask = free_mask(batch, self.eval_free)
        acc.add("energy_mae", ev.energy_mae(pred["energy"], target_e))
        acc.add("energy_per_atom_mae", ev.energy_per_atom_mae(pred["energy"], target_e, batch.natoms.reshape(-1)))
        acc.add("energy_within_threshold", ev.energy_within_threshold(pred["energy"], target_e))
        acc.add("energy_rmse", ev.energy_squared_error(pred["energy"], target_e))
        acc.add("forces_mae", ev.forces_mae(pred["forces"], target_f, mask))
        acc.add("forces_rmse", ev.forces_squared_error(pred["forces"], target_f, mask))
        acc.add("forces_cos", ev.forces_cos(pred["forces"], target_f, mask))
        acc.add("forces_magnitude", ev.forces_magnitude(pred["forces"], target_f, mask))
        acc.add("energy_force_within_threshold", ev.energy_force_within_threshold(
            pred["energy"], target_e, pred["forces"], target_f, mask, batch.batch))
        if self.by_tag:
            tags = batch.tags.reshape(-1)
            for tag, group in TAG_GROUPS.items():
                selected = mask & (tags == tag)
                acc.add(f"forces_mae_{group}", ev.forces_mae(pred["forces"], target_f, selected))
                acc.add(f"forces_cos_{group}", ev.forces_cos(pred["forces"], target_f, selected))
        if self.trains_stress:
            error = (pred["stress"].reshape(-1, 9) - self.stress_target(batch).reshape(-1, 9)).abs()
            acc.add("stress_mae", (float(error.sum()), float(error.numel())))

    def prediction_arrays(self, pred: Mapping[str, Tensor], batch: Any) -> dict[str, Any]:
        """Ids, energies, free-atom forces and free-atom counts of one batch."""
        mask = free_mask(batch, self.eval_free)
        counts = torch.zeros(int(batch.natoms.numel()), dtype=torch.long, device=mask.device)
        counts.index_add_(0, batch.batch, mask.long())
        arrays = {"ids": structure_ids(batch),
                  "energy": pred["energy"].cpu().numpy().astype(np.float32),
                  "forces": pred["forces"][mask].cpu().numpy().astype(np.float32),
                  "natoms": counts.cpu().numpy()}
        if "stress" in pred:
            arrays["stress"] = pred["stress"].reshape(-1, 3, 3).cpu().numpy().astype(np.float32)
        return arrays
