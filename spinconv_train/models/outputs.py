"""From an energy to the other outputs of the model contract (docs/design.md, "Model
output"), for every energy model: per-structure energies from per-atom terms, forces
-dE/dx and the stress dE/de / V by autograd, and the strain that defines the stress.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["apply_strain", "energy_derivatives", "structure_energies"]


def apply_strain(pos: Tensor, cell: Tensor, strain: Tensor, batch: Tensor) -> tuple[Tensor, Tensor]:
    """Positions and cells deformed by the symmetric part of ``strain`` (B,3,3):
    r -> r (1 + e), cell rows a -> a (1 + e). At strain 0 both are unchanged, and the
    gradient of an energy with respect to ``strain`` is its strain derivative."""
    sym = 0.5 * (strain + strain.transpose(1, 2))
    pos = pos + torch.bmm(pos.unsqueeze(1), sym.index_select(0, batch)).squeeze(1)
    return pos, cell + torch.bmm(cell, sym)


def structure_energies(per_atom: Tensor, batch: Tensor, num_structures: int,
                       dtype: torch.dtype | None = None) -> Tensor:
    """(B,) sums of the (N,) per-atom energies over each structure's atoms, accumulated in
    ``dtype`` (default: that of ``per_atom``)."""
    dtype = per_atom.dtype if dtype is None else dtype
    total = torch.zeros(num_structures, dtype=dtype, device=per_atom.device)
    return total.index_add(0, batch, per_atom.reshape(-1).to(dtype))


def energy_derivatives(energy: Tensor, pos: Tensor, strain: Tensor | None = None, volume: Tensor | None = None,
                       create_graph: bool = False) -> dict[str, Tensor]:
    """``{"forces": -dE/dpos}`` and, given the ``strain`` that ``apply_strain`` applied and
    the (B,) cell ``volume``, ``"stress": dE/dstrain / V`` (B,3,3), by one autograd pass
    over the summed energies. ``create_graph``: keep the graph (training on forces)."""
    inputs = (pos,) if strain is None else (pos, strain)
    grads = torch.autograd.grad(energy.sum(), inputs, create_graph=create_graph)
    out = {"forces": -grads[0]}
    if strain is not None:
        if volume is None:
            raise ValueError("the stress needs the cells' volumes")
        out["stress"] = grads[1] / volume.view(-1, 1, 1)
    return out
