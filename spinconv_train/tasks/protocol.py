"""The interface every task (``forces``, ``energy``) offers the loop, the checkpoints and
the calculators (docs/design.md, "Tasks")."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from spinconv_train.tasks.metrics import MetricAccumulator
from spinconv_train.tasks.targets import TargetState


@runtime_checkable
class Task(Protocol):
    """What a model is trained on: its labels, loss, metrics and units.

    A task is built from the config's ``task`` and ``optim`` sections and a
    :class:`TargetState` (normaliser, element references), and registered by name in
    ``registry.TRAINERS``. Models see normalised targets; ``denormalize`` turns their
    outputs back into the data's units.
    """

    default_metric: str  # the metric a run monitors unless task.metric names another
    regress_forces: bool  # whether the model must return forces
    num_targets: int  # scalar targets per structure
    energy_field: str  # the data field holding the (first) energy-like target
    targets: TargetState  # normaliser and element references (saved in checkpoints)

    def __init__(self, task: Mapping[str, Any], optim: Mapping[str, Any], targets: TargetState) -> None: ...

    def label_fields(self) -> list[str]:
        """Fields every trained or evaluated record must carry."""
        ...

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of every model call (e.g. ``stress=True``)."""
        ...

    def metric_names(self) -> list[str]:
        """The metrics :meth:`update_metrics` accumulates."""
        ...

    def referenced_target(self, batch: Any) -> Tensor:
        """The raw target minus element references, before normalising (fits the normaliser)."""
        ...

    def loss(self, out: Mapping[str, Tensor], batch: Any) -> Tensor:
        """The training loss of the model outputs ``out`` on normalised targets."""
        ...

    def denormalize(self, out: Mapping[str, Tensor], batch: Any) -> dict[str, Tensor]:
        """Model outputs in the data's units (eV, eV/Å), element references added back."""
        ...

    def update_metrics(self, acc: MetricAccumulator, pred: Mapping[str, Tensor], batch: Any) -> None:
        """Add one batch's errors of the denormalised predictions ``pred`` to ``acc``."""
        ...

    def prediction_arrays(self, pred: Mapping[str, Tensor], batch: Any) -> dict[str, Any]:
        """One batch's rows of ``predictions.npz``."""
        ...
