"""ASE calculators backed by a trained force model, and batched predictions.

``ModelCalculator`` (an ASE calculator around a model and its target state),
``CommitteeCalculator`` (several of them: their mean and spread), ``BatchEvaluator``
(several structures' model calls batched together), ``predict_atoms`` (batched predictions
on ASE structures) and the conversions between ASE ``Atoms`` and graph batches. Importing
the package has no side effects.
"""
from .batched import BatchEvaluator
from .calculator import ModelCalculator, NotAForceModelError, load_force_model, require_forces_task
from .committee import CommitteeCalculator
from .convert import atoms_to_batch, free_atoms, record_to_atoms
from .predict import predict_atoms

__all__ = [
    "BatchEvaluator", "CommitteeCalculator", "ModelCalculator", "NotAForceModelError", "atoms_to_batch",
    "free_atoms", "load_force_model", "predict_atoms", "record_to_atoms", "require_forces_task",
]
