"""Which atoms a neighbour cap cut: the check behind the warning that relaxations and
molecular dynamics give when an energy-centric model's cap binds.

A binding cap makes the energy discontinuous: when an atom moves past the last shell the
cap keeps, the kept neighbours change and the energy jumps (the cutoff envelope smooths
only the cutoff radius). Relaxation and MD drivers should call ``atoms_cut_by_cap`` (or
``SpinConv.atoms_cut_by_cap``) once on their starting structures and warn, naming each
structure with a non-zero count.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .radius_graph import _structure_pbc, structures_graph_np

__all__ = ["atoms_cut_by_cap", "binding_cap_message"]


def atoms_cut_by_cap(
    pos: Tensor, natoms: Tensor, cell: Tensor | None, pbc: Tensor | None, cutoff: float, max_neighbors: int | None
) -> np.ndarray:
    """(B,) int64: per structure, the number of atoms that keep fewer neighbours under the
    cap ``max_neighbors`` than there are within ``cutoff`` (zeros when ``max_neighbors`` is
    None). Arguments as for ``radius_graph``."""
    natoms_np = natoms.detach().to("cpu").numpy().astype(np.int64).reshape(-1)
    num_structures = natoms_np.size
    if max_neighbors is None:
        return np.zeros(num_structures, dtype=np.int64)
    cell64, periodic = _structure_pbc(cell, pbc, num_structures)
    pos_np = pos.detach().to("cpu", torch.float64).numpy()
    starts = np.concatenate([[0], np.cumsum(natoms_np)])
    positions = [pos_np[starts[b]:starts[b + 1]] for b in range(num_structures)]
    total = int(starts[-1])
    capped, _, _ = structures_graph_np(positions, cell64, periodic, cutoff, max_neighbors)
    full, _, _ = structures_graph_np(positions, cell64, periodic, cutoff, None)
    cut = np.bincount(full[1], minlength=total) > np.bincount(capped[1], minlength=total)
    structure = np.repeat(np.arange(num_structures), natoms_np)
    return np.bincount(structure[cut], minlength=num_structures).astype(np.int64)


def binding_cap_message(counts: np.ndarray, names: list[str], natoms: np.ndarray, cutoff: float,
                        max_neighbors: int | None, limit: int = 5) -> str | None:
    """One warning line for the structures whose cap binds (``counts`` from
    ``atoms_cut_by_cap``), the first ``limit`` named; None when none binds."""
    hit = np.nonzero(np.asarray(counts) > 0)[0]
    if hit.size == 0:
        return None
    listed = ", ".join(f"{names[b]} ({int(counts[b])} of {int(natoms[b])} atoms)" for b in hit[:limit])
    more = f" and {hit.size - limit} more" if hit.size > limit else ""
    return (f"the neighbour cap (max_num_neighbors: {max_neighbors}) cuts the neighbour lists within "
            f"{cutoff:g} Å of {hit.size} structure(s): {listed}{more}. The energy then jumps when an atom "
            "moves past the last kept shell, so forces are not those of a smooth energy; use a model "
            "trained with max_num_neighbors: null (no cap) for relaxations and MD")
