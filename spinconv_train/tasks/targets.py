"""Shared pieces of the task trainers: losses, free-atom masks, target state, ids."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from spinconv_train.datasets.coverage import ElementWatch, elements_of
from spinconv_train.datasets.errors import DatasetError
from spinconv_train.tasks.element_references import ElementReferences
from spinconv_train.tasks.normalizer import Normalizer


def scalar_loss(kind: str, pred: Tensor, target: Tensor) -> Tensor:
    """``mae`` / ``mse`` over all elements; ``l2mae`` is the mean L2 norm of the last axis
    (for a scalar per structure it equals ``mae``)."""
    diff = pred - target
    if kind == "mae":
        return diff.abs().mean()
    if kind == "mse":
        return diff.pow(2).mean()
    if kind == "l2mae":
        return diff.norm(dim=-1).mean() if diff.dim() > 1 else diff.abs().mean()
    raise ValueError(f"unknown loss {kind!r}; known: mae, mse, l2mae")


def free_mask(batch: Any, enabled: bool) -> Tensor:
    """Boolean (N,) mask of free atoms (``fixed == 0``); all atoms when disabled or unknown."""
    fixed = getattr(batch, "fixed", None)
    if not enabled or fixed is None:
        return torch.ones(batch.pos.shape[0], dtype=torch.bool, device=batch.pos.device)
    return fixed.reshape(-1) == 0


def structure_ids(batch: Any) -> list[str]:
    """``"{sid}_{fid}"`` per structure (``"{sid}"`` without fid; the index without sid)."""
    num = int(batch.natoms.numel())
    sids = _as_list(getattr(batch, "sid", None), num)
    fids = _as_list(getattr(batch, "fid", None), num)
    ids = []
    for k in range(num):
        sid = sids[k] if sids is not None else k
        ids.append(f"{sid}_{fids[k]}" if fids is not None else f"{sid}")
    return ids


def _as_list(value: Any, num: int) -> list[Any] | None:
    if value is None:
        return None
    if isinstance(value, Tensor):
        value = value.reshape(-1).tolist()
    value = list(value) if isinstance(value, (list, tuple)) else [value]
    return value if len(value) == num else None


def batch_sids(batch: Any) -> list[Any]:
    """The batch's ``sid`` values (for error messages)."""
    return _as_list(getattr(batch, "sid", None), int(batch.natoms.numel())) or ["(no sid)"]


def require_labels(task: Any, batch: Any, split: str) -> None:
    """Raise a DatasetError naming ``dataset.<split>`` and the field when ``batch`` lacks one
    of the labels ``task`` trains or evaluates on (e.g. an unlabelled test LMDB)."""
    missing = [f for f in task.label_fields() if getattr(batch, f, None) is None]
    if missing:
        raise DatasetError(f"the records of dataset.{split} carry no {', '.join(repr(m) for m in missing)} "
                           "labels, so they cannot be trained or evaluated on; predict unlabelled structures "
                           "with --mode predict", field=missing[0])


class TargetState:
    """Normaliser, optional element references and the elements of the training data of one
    task (saved in checkpoints and exported models).

    ``elements``: the atomic numbers the model was trained on (None: unknown, for checkpoints
    written before they were recorded); inference warns, naming the structure, when it meets
    others (:meth:`check_elements`). ``source`` names the model in those warnings.
    """

    def __init__(self, normalizer: Normalizer | None = None,
                 element_references: ElementReferences | None = None,
                 elements: Iterable[int] | None = None) -> None:
        self.normalizer = normalizer or Normalizer()
        self.element_references = element_references
        self.elements: set[int] | None = None if elements is None else {int(z) for z in elements}
        self.source = "this model"
        self._watch = ElementWatch()

    def record_elements(self, atomic_numbers: Tensor) -> None:
        """Add the elements of a training batch to those the model has seen."""
        if self.elements is not None:
            self.elements |= elements_of(atomic_numbers)

    def check_elements(self, atomic_numbers: Tensor, structure: str) -> list[int]:
        """The elements of one structure that the training data lacked; the first time a
        structure shows them, an ``UnseenElementWarning`` names them and the structure."""
        return self._watch.check(atomic_numbers, structure, self.elements, self.source)

    def check_batch_elements(self, batch: Any, names: list[str]) -> None:
        """:meth:`check_elements` for every structure of a collated batch."""
        self._watch.check_batch(batch.atomic_numbers, batch.batch, names, self.elements, self.source)

    def reference(self, batch: Any) -> Tensor | None:
        """Per-structure reference energy (B,) float64, or None."""
        if self.element_references is None:
            return None
        return self.element_references.energy(batch.atomic_numbers, batch.batch, int(batch.natoms.numel()))

    def state_dict(self) -> dict[str, Any]:
        refs = self.element_references
        return {"normalizer": self.normalizer.state_dict(),
                "element_references": None if refs is None else refs.state_dict(),
                "elements": None if self.elements is None else sorted(self.elements)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> TargetState:
        refs = state.get("element_references")
        return cls(Normalizer.from_state_dict(state["normalizer"]),
                   None if refs is None else ElementReferences.from_state_dict(refs),
                   state.get("elements"))
