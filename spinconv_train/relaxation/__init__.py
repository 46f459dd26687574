"""ML relaxations (OC20 IS2RS / IS2RE by relaxation) with a trained force model.

``relax_indices`` (an ASE optimiser per structure; with a ``BatchEvaluator`` several at
once sharing batched model calls), ``relaxation_metrics`` (ADwT, energy MAE) and
``run_relaxations`` (``--mode run-relaxations``). The ``task.relax_*`` config keys are part
of ``spinconv_train.config.SCHEMA``. Importing the package has no side effects.
"""
from .metrics import relaxation_metrics
from .mode import run_relaxations
from .runner import RelaxResult, make_optimizer, relax_atoms, relax_indices
from .settings import RelaxOptions, RelaxSettings, relax_settings

__all__ = [
    "RelaxOptions", "RelaxResult", "RelaxSettings", "make_optimizer", "relax_atoms", "relax_indices",
    "relax_settings", "relaxation_metrics", "run_relaxations",
]
