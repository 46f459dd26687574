"""ML relaxations (OC20 IS2RS / IS2RE by relaxation) with a trained force model.

``ModelCalculator`` (an ASE calculator around a model and its target state;
``CommitteeCalculator``: several of them, their mean and spread),
``relax_indices`` (ASE optimiser per structure; with a ``BatchEvaluator`` several at
once sharing batched model calls), ``predict_atoms`` (batched predictions on ASE
structures), ``relaxation_metrics`` (ADwT, energy MAE), ``run_relaxations``
(``--mode run-relaxations``) and ``run_md`` (molecular dynamics, ``scripts/run_md.py``). Importing the package has no
side effects; the ``task.relax_*`` config keys are part of ``spinconv_train.config.SCHEMA``.
"""
from .batched import BatchEvaluator
from .calculator import ModelCalculator, NotAForceModelError, load_force_model, require_forces_task
from .committee import CommitteeCalculator
from .convert import atoms_to_batch, free_atoms, record_to_atoms
from .dynamics import MDLog, run_md
from .evaluate import predict_atoms
from .metrics import relaxation_metrics
from .mode import run_relaxations
from .runner import RelaxResult, make_optimizer, relax_atoms, relax_indices
from .settings import RelaxOptions, RelaxSettings, relax_settings

__all__ = [
    "BatchEvaluator", "CommitteeCalculator", "MDLog", "ModelCalculator", "NotAForceModelError", "RelaxOptions", "RelaxResult", "RelaxSettings",
    "atoms_to_batch", "free_atoms", "load_force_model", "make_optimizer", "predict_atoms", "record_to_atoms",
    "relax_atoms", "relax_indices", "relax_settings", "relaxation_metrics",
    "require_forces_task", "run_md", "run_relaxations",
]
