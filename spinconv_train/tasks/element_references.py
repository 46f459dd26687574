"""Per-element reference energies as training state (fitted by the data package's
``fit_element_references`` on the training split, saved in checkpoints)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from spinconv_train.datasets.element_refs import fit_element_references


class ElementReferences:
    """``E_ref(structure) = Σ_atoms ref[Z]``; subtracted from energies before normalising."""

    def __init__(self, references: Any) -> None:
        self.references = torch.as_tensor(references, dtype=torch.float64).reshape(-1).clone()

    @classmethod
    def fit(cls, dataset: Any, field: str = "y", indices: Sequence[int] | None = None) -> ElementReferences:
        """Least-squares fit of ``field`` on element counts over ``dataset`` (the training split)."""
        return cls(fit_element_references(dataset, field=field, indices=indices))

    def energy(self, atomic_numbers: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
        """Reference energy per structure, shape (B,), float64."""
        out = torch.zeros(num_graphs, dtype=torch.float64, device=atomic_numbers.device)
        return out.index_add_(0, batch, self.atom_energies(atomic_numbers))

    def atom_energies(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """Each atom's reference energy, shape (N,), float64 (they sum to :meth:`energy`)."""
        z = atomic_numbers.long()
        if int(z.max()) >= self.references.numel():
            raise ValueError(f"element {int(z.max())} has no reference energy (fitted up to "
                             f"Z={self.references.numel() - 1})")
        return self.references.to(z.device)[z]

    def state_dict(self) -> dict[str, Any]:
        return {"references": self.references.tolist()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ElementReferences:
        return cls(state["references"])
