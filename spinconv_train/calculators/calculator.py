"""An ASE calculator backed by a trained force model (its normaliser and element
references included), and loading one from a checkpoint."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from spinconv_train.calculators.predict import NotAForceModelError, calculator_properties, predict_atoms
from spinconv_train.checkpoints import load
from spinconv_train.tasks.protocol import Task


def require_forces_task(task: Task | type[Task], trainer: str, source: str) -> None:
    """Raise ``NotAForceModelError`` unless ``task`` regresses forces (the ``forces`` trainer)."""
    if not getattr(task, "regress_forces", False):
        raise NotAForceModelError(
            f"{source}: trainer {trainer!r} does not predict forces; relaxations need a model trained "
            "with `trainer: forces` (S2EF), e.g. configs/s2ef/oc20_mini/spinconv_force.yml")


class ModelCalculator(Calculator):
    """Energy (eV), forces (eV/Å), for SpinConv the per-atom energies (``energies``, which sum
    to the energy) and, for energy-centric SpinConv models on periodic structures, the
    stress (eV/Å^3, ASE's Voigt order and sign) of ``atoms`` from ``model`` and its task's
    target state.

    ``task.denormalize`` turns the model's normalised outputs into the training data's
    units (element references added back), as ``--mode predict`` does. Forces are the
    model's raw forces for every atom; ASE's ``FixAtoms`` zeroes the fixed atoms' forces
    in ``atoms.get_forces()``, so optimisers never move them. The graph is rebuilt from
    the positions at every call.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(self, model: torch.nn.Module, task: Task, device: torch.device | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.task = task
        self.device = device if device is not None else next(model.parameters(), torch.empty(0)).device
        self.supports_stress = bool(getattr(model, "supports_stress", False))  # energy-centric, periodic
        # per-atom energies ("energies", ASE's name) where the model's energy head exposes them
        self.supports_atom_energies = bool(getattr(model, "supports_atom_energies", False))
        self.implemented_properties = calculator_properties(self.supports_stress, self.supports_atom_energies)
        self.evaluations = 0

    @classmethod
    def from_checkpoint(cls, path: str, device: str = "cpu", use_ema: bool = True,
                        cuda_graphs: bool = False) -> ModelCalculator:
        """A calculator for the model of ``path`` (EMA weights when saved and ``use_ema``).

        ``cuda_graphs``: replay SpinConv's forward from CUDA graphs (``GraphedSpinConv``;
        CUDA only): the same results, without Python launching every kernel of every step."""
        model, task = load_force_model(path, torch.device(device), use_ema, cuda_graphs)
        return cls(model, task, torch.device(device))

    def calculate(self, atoms: Atoms | None = None, properties: Sequence[str] = ("energy",),
                  system_changes: Sequence[str] = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        # The stress costs little next to the forces (one more input of the same backward),
        # so it is computed whenever defined: a later get_stress() (cell filters, the MD
        # log's pressure) then needs no second model call.
        want_stress = "stress" in properties or (
            self.supports_stress and bool(self.atoms.pbc.all()) and self.atoms.cell.volume > 1e-6)
        if want_stress and not self.supports_stress:
            raise PropertyNotImplementedError(
                f"stress needs an energy-centric SpinConv (force_estimator: grad); this model is "
                f"{type(self.model).__name__} with force_estimator={getattr(self.model, 'force_estimator', None)!r}")
        # the batched predictions' model call for this one structure (float64 models get
        # unrounded float64 positions; per-atom energies come free with the energy head's)
        (pred,) = predict_atoms(self.model, self.task, [self.atoms], batch_size=1, stress=want_stress,
                                device=self.device, names=[self.atoms.get_chemical_formula()])
        self.evaluations += 1
        energy = float(pred["energy"])
        self.results = {"energy": energy, "free_energy": energy, "forces": pred["forces"]}
        for key in ("stress", "energies"):
            if key in pred:
                self.results[key] = pred[key]


def load_force_model(path: str, device: torch.device, use_ema: bool = True,
                     cuda_graphs: bool = False) -> tuple[torch.nn.Module, Task]:
    """``(model, task)`` of a checkpoint, built from the config saved inside it; with
    ``cuda_graphs`` the model is wrapped in ``GraphedSpinConv`` (SpinConv on CUDA only)."""
    built = load(path, use_ema=use_ema)
    require_forces_task(built.task, built.config["trainer"], f"checkpoint {path!r}")
    model, task = built.eval_model, built.task
    model.to(device).eval()
    if cuda_graphs:
        from spinconv_train.models.spinconv.speed.graphed import GraphedSpinConv

        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, got device {str(device)!r}")
        try:
            model = GraphedSpinConv(model)
        except TypeError as err:
            raise ValueError(f"checkpoint {path!r}: {err}") from None
    return model, task
