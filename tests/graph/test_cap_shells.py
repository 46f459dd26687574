"""The neighbour cap is a function of the geometry: shells of equal distances are kept or
dropped whole, so the graph does not depend on the numbering, orientation, position or
periodic images of the atoms, and a displacement below the tie tolerance changes nothing."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import add_adsorbate, bulk, fcc110, fcc211

from spinconv_train.graph import radius_graph, reverse_edges
from spinconv_train.graph.capping import CAP_TIE_RTOL


def _graph(atoms, cutoff: float, cap: int, dtype=torch.float64):
    n = len(atoms)
    pos = torch.tensor(atoms.positions, dtype=dtype)
    cell = torch.tensor(atoms.cell.array, dtype=dtype)[None]
    ei, co = radius_graph(pos, torch.zeros(n, dtype=torch.long), torch.tensor([n]), cell, None, cutoff, cap)
    vec = pos[ei[0]] - pos[ei[1]] + co.to(dtype) @ cell[0]
    return ei, co, vec


def _edge_multiset(ei, vec, labels, rot_back):
    """Edges as (label of source, label of target, edge vector in the original frame)."""
    back = vec.double().numpy() @ rot_back
    return sorted((int(labels[j]), int(labels[i]), *np.round(v, 4)) for j, i, v in zip(ei[0], ei[1], back))


def _ideal_slabs():
    s110 = fcc110("Pt", (2, 3, 8), vacuum=6.0)
    add_adsorbate(s110, "O", 1.8, "ontop")
    s211 = fcc211("Cu", (6, 3, 3), vacuum=6.0)
    for slab in (s110, s211):
        slab.pbc = True
    return {"fcc110+O": s110, "fcc211": s211}


def _rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_bulk_keeps_the_whole_third_shell():
    """fcc at 6 Å: shells of 12, 6, 24 and 12. A cap of 40 cuts the third shell; every
    atom keeps all 42 atoms of the first three shells, none of the fourth."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((3, 3, 3))
    ei, _, vec = _graph(atoms, 6.0, 40)
    degree = torch.bincount(ei[1], minlength=len(atoms))
    assert bool((degree == 42).all())
    assert float(vec.norm(dim=-1).max()) < 3.6 * 1.5**0.5 + 1e-6


@pytest.mark.parametrize("name", ["fcc110+O", "fcc211"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_capped_graph_is_invariant(name, dtype):
    atoms = _ideal_slabs()[name]
    ei, co, vec = _graph(atoms, 6.0, 40, dtype)
    degree = torch.bincount(ei[1], minlength=len(atoms))
    assert int(degree.max()) > 40  # the cap cut through a shell, which was kept whole
    reverse_edges(ei, co)  # symmetric: raises if an edge lacks its reverse
    want = _edge_multiset(ei, vec, np.arange(len(atoms)), np.eye(3))
    rng = np.random.default_rng(0)
    for seed in range(3):
        rot = _rotation(seed)
        perm = rng.permutation(len(atoms))
        other = atoms[perm]
        other.set_cell(atoms.cell.array @ rot.T)
        other.positions = atoms.positions[perm] @ rot.T + rng.normal(size=3) * 4.0
        other.wrap()
        ei2, co2, vec2 = _graph(other, 6.0, 40, dtype)
        reverse_edges(ei2, co2)
        assert _edge_multiset(ei2, vec2, perm, rot) == want


def test_every_tied_neighbour_of_the_last_kept_one_is_kept():
    atoms = _ideal_slabs()["fcc110+O"]
    ei, _, vec = _graph(atoms, 6.0, 40)
    full, _, full_vec = _graph(atoms, 6.0, 10_000)
    kept = {(int(j), int(i), tuple(np.round(v, 6))) for j, i, v in zip(ei[0], ei[1], vec.numpy())}
    dist = full_vec.norm(dim=-1).numpy()
    for atom in range(len(atoms)):
        mine = np.nonzero(full[1].numpy() == atom)[0]
        if mine.size <= 40:
            continue
        last = np.sort(dist[mine])[39]
        for e in mine[dist[mine] <= last * (1 + CAP_TIE_RTOL)]:
            assert (int(full[0, e]), atom, tuple(np.round(full_vec[e].numpy(), 6))) in kept


def test_displacement_below_tolerance_keeps_the_graph():
    """1e-7 Å moves no distance across the tolerance: the graph of an ideal slab stays
    (with a cap that broke ties by index, such a move could swap neighbours)."""
    atoms = _ideal_slabs()["fcc211"]
    ei, co, _ = _graph(atoms, 6.0, 40)
    rng = np.random.default_rng(1)
    moved = atoms.copy()
    moved.positions += rng.normal(scale=1e-7, size=moved.positions.shape)
    ei2, co2, _ = _graph(moved, 6.0, 40)
    assert _edge_set(ei, co) == _edge_set(ei2, co2)  # (the order within a shell may change)


def _edge_set(ei, co):
    return {(int(j), int(i), tuple(int(x) for x in s)) for j, i, s in zip(ei[0], ei[1], co.round().long())}


def test_no_cap_keeps_every_neighbour_and_reports_no_cut():
    from spinconv_train.graph import atoms_cut_by_cap

    atoms = _ideal_slabs()["fcc110+O"]
    ei, _, _ = _graph(atoms, 6.0, None)
    assert ei.shape[1] == _graph(atoms, 6.0, 10_000)[0].shape[1]
    n = len(atoms)
    args = (torch.tensor(atoms.positions), torch.tensor([n, n]), torch.tensor(atoms.cell.array)[None].repeat(2, 1, 1),
            None, 6.0)
    assert atoms_cut_by_cap(*args, None).tolist() == [0, 0]


def test_atoms_cut_by_cap_counts_per_structure():
    """Per structure, the atoms whose kept neighbour list is shorter than their full one;
    the message names the structures and counts."""
    from spinconv_train.graph import atoms_cut_by_cap, binding_cap_message

    slab = _ideal_slabs()["fcc110+O"]
    small = bulk("Cu", "fcc", a=3.6, cubic=True)
    pos = torch.tensor(np.concatenate([slab.positions, small.positions]))
    natoms = torch.tensor([len(slab), len(small)])
    cell = torch.tensor(np.stack([slab.cell.array, small.cell.array]))
    counts = atoms_cut_by_cap(pos, natoms, cell, None, 6.0, 40)
    full, _, _ = _graph(slab, 6.0, None)
    capped, _, _ = _graph(slab, 6.0, 40)
    want = int((torch.bincount(full[1], minlength=len(slab)) > torch.bincount(capped[1], minlength=len(slab))).sum())
    assert want > 0 and counts.tolist() == [want, 4]  # bulk fcc: 54 neighbours, 42 kept, every atom cut
    message = binding_cap_message(counts, ["slab", "bulk"], natoms.numpy(), 6.0, 40)
    assert f"slab ({want} of {len(slab)} atoms)" in message and "bulk (4 of 4 atoms)" in message
    assert binding_cap_message(np.zeros(2), ["a", "b"], natoms.numpy(), 6.0, 40) is None


def test_bad_cap_is_named():
    with pytest.raises(ValueError, match="max_neighbors must be a positive integer or None"):
        _graph(bulk("Cu"), 6.0, 0)
