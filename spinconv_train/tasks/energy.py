"""The ``energy`` trainer (IS2RE direct, QM9 properties): one or more scalar targets."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import Tensor

from spinconv_train.registry import TRAINERS
from spinconv_train.tasks import metrics as ev
from spinconv_train.tasks.targets import TargetState, scalar_loss, structure_ids


@TRAINERS.register("energy", "is2re")
class EnergyTask:
    """Scalar targets read from ``task.target`` (default ``y_relaxed``), shape (B,) or (B, T).

    ``task.target_indices`` selects columns of a (B, T) target; ``task.labels`` names them
    (per-target metrics ``{label}_mae``). With one target the metrics also include the
    OC20 ``energy_mae`` and ``energy_within_threshold``.
    """

    default_metric = "energy_mae"
    regress_forces = False

    def __init__(self, task: Mapping[str, Any], optim: Mapping[str, Any], targets: TargetState) -> None:
        self.targets = targets
        self.energy_field = task.get("target") or "y_relaxed"
        self.indices: list[int] | None = task.get("target_indices")
        count = len(self.indices) if self.indices is not None else max(1, len(task.get("labels") or []))
        labels = list(task.get("labels") or [])
        self.labels = labels if len(labels) == count else [f"target{k}" for k in range(count)]
        self.num_targets = len(self.labels)
        self.loss_kind = optim["loss_energy"].lower()
        self.default_metric = "energy_mae" if self.num_targets == 1 else "mean_mae"

    def label_fields(self) -> list[str]:
        """Fields every evaluated record must carry."""
        return [self.energy_field]

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of every model call (none)."""
        return {}

    def metric_names(self) -> list[str]:
        names = [f"{label}_mae" for label in self.labels]
        if len(self.labels) == 1:
            names += ["energy_mae", "energy_rmse", "energy_within_threshold"]
        else:
            names += ["mean_mae"]
        return names

    def target(self, batch: Any) -> Tensor:
        """The raw targets (B, T) in float64."""
        value = getattr(batch, self.energy_field, None)
        if value is None:
            raise KeyError(f"task.target {self.energy_field!r} is not a field of the data "
                           f"(fields: {', '.join(sorted(batch.keys()))})")
        value = value.double().reshape(int(batch.natoms.numel()), -1)
        if self.indices is not None:
            value = value[:, self.indices]
        if value.shape[1] != len(self.labels):
            raise ValueError(f"task.labels names {len(self.labels)} targets but {self.energy_field!r} "
                             f"has {value.shape[1]} columns; set task.target_indices")
        return value

    def referenced_target(self, batch: Any) -> Tensor:
        """Targets (B, T) minus element references (before normalising)."""
        value = self.target(batch)
        reference = self.targets.reference(batch)
        return value if reference is None else value - reference.reshape(-1, 1)

    def _output(self, out: Mapping[str, Tensor], batch: Any) -> Tensor:
        return out["energy"].reshape(int(batch.natoms.numel()), -1)

    def loss(self, out: Mapping[str, Tensor], batch: Any) -> Tensor:
        pred = self._output(out, batch)
        target = self.targets.normalizer.norm(self.referenced_target(batch)).to(pred.dtype)
        return scalar_loss(self.loss_kind, pred, target)

    def denormalize(self, out: Mapping[str, Tensor], batch: Any) -> dict[str, Tensor]:
        value = self.targets.normalizer.denorm(self._output(out, batch).detach().double())
        reference = self.targets.reference(batch)
        if reference is not None:
            value = value + reference.reshape(-1, 1)
        return {"energy": value}

    def update_metrics(self, acc: ev.MetricAccumulator, pred: Mapping[str, Tensor], batch: Any) -> None:
        target = self.target(batch)
        for k, label in enumerate(self.labels):
            acc.add(f"{label}_mae", ev.energy_mae(pred["energy"][:, k], target[:, k]))
        if len(self.labels) == 1:
            acc.add("energy_mae", ev.energy_mae(pred["energy"][:, 0], target[:, 0]))
            acc.add("energy_rmse", ev.energy_squared_error(pred["energy"][:, 0], target[:, 0]))
            acc.add("energy_within_threshold", ev.energy_within_threshold(pred["energy"][:, 0], target[:, 0]))
        else:
            err = (pred["energy"] - target).abs().mean(dim=1)
            acc.add("mean_mae", (float(err.sum()), float(err.numel())))

    def prediction_arrays(self, pred: Mapping[str, Tensor], batch: Any) -> dict[str, Any]:
        energy = pred["energy"].cpu().numpy().astype(np.float32)
        return {"ids": structure_ids(batch), "energy": energy[:, 0] if energy.shape[1] == 1 else energy,
                "natoms": batch.natoms.reshape(-1).cpu().numpy()}
