"""The radius graph against a brute-force periodic neighbour search."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc111, molecule

from spinconv_train.graph import edge_vectors, radius_graph, reverse_edges
from spinconv_train.graph.capping import CAP_TIE_RTOL


def brute_force_pairs(atoms: Atoms, cutoff: float):
    """All (i, j, S, d) with |pos[j] - pos[i] + S @ cell| < cutoff, by enumeration."""
    pos = atoms.positions
    cell = atoms.cell.array
    pbc = atoms.pbc
    reach = []
    for d in range(3):
        if not pbc[d]:
            reach.append(0)
            continue
        # distance between the lattice planes spanned by the two other vectors
        other = np.cross(cell[(d + 1) % 3], cell[(d + 2) % 3])
        if np.linalg.norm(other) > 0:
            height = abs(np.dot(cell[d], other)) / np.linalg.norm(other)
        else:  # the other two directions are non-periodic with zero rows
            height = np.linalg.norm(cell[d])
        reach.append(int(np.ceil(cutoff / height)) + 1)
    out = []
    for shift in itertools.product(*(range(-r, r + 1) for r in reach)):
        off = np.array(shift) @ cell
        vec = pos[None, :, :] - pos[:, None, :] + off  # [i, j] = pos[j] - pos[i] + off
        dist = np.linalg.norm(vec, axis=-1)
        for i, j in zip(*np.nonzero((dist < cutoff) & (dist > 0))):
            out.append((int(i), int(j), tuple(shift), float(dist[i, j])))
    return out


def capped_reference(pairs, max_neighbors: int):
    """Python reference of the symmetric cap: each centre keeps its ``max_neighbors``
    nearest and every pair tied with the last of them (within CAP_TIE_RTOL)."""
    by_centre = {}
    for i, j, s, d in pairs:
        by_centre.setdefault(i, []).append((d, j, s))
    near = set()
    for i, lst in by_centre.items():
        lst.sort()
        last = lst[min(max_neighbors, len(lst)) - 1][0]
        for d, j, s in lst:
            if d <= last * (1 + CAP_TIE_RTOL):
                near.add((i, j, s))
    keep = set()
    for i, j, s, d in pairs:
        rev = (j, i, tuple(-x for x in s))
        if (i, j, s) in near or rev in near:
            keep.add((i, j, s))
    return keep


def graph_set(atoms: Atoms, cutoff: float, max_neighbors: int, dtype=torch.float64):
    pos = torch.tensor(atoms.positions, dtype=dtype)
    cell = torch.tensor(atoms.cell.array, dtype=dtype)[None]
    pbc = torch.tensor(atoms.pbc)[None]
    n = len(atoms)
    ei, co = radius_graph(pos, torch.zeros(n, dtype=torch.long), torch.tensor([n]), cell, pbc, cutoff, max_neighbors)
    edges = {(int(i), int(j), tuple(round(x) for x in s)) for j, i, s in zip(ei[0], ei[1], co.tolist())}
    assert len(edges) == ei.shape[1], "duplicate edges"
    return ei, co, edges


def small_cells():
    slab = fcc111("Pt", (2, 2, 3), vacuum=6.0)
    add_adsorbate(slab, "O", 1.8, "fcc")
    slab.pbc = True
    slab.rattle(0.05, seed=3)
    tiny = bulk("Cu", "fcc", a=3.6)  # one atom: sees only its own images
    tiny.rattle(0.0)
    tri = Atoms("CuAu", positions=[[0, 0, 0], [1.1, 0.7, 0.9]], cell=[[3.0, 0, 0], [1.2, 3.1, 0], [0.4, 0.8, 2.9]], pbc=True)
    zonly = Atoms("H2O", positions=[[0, 0, 0], [0.9, 0.3, 0.2], [0.2, 0.95, 0.4]], cell=[[0, 0, 0], [0, 0, 0], [0, 0, 3.5]], pbc=[False, False, True])
    return {"slab": slab, "own_images": tiny, "triclinic": tri, "periodic_z": zonly}


@pytest.mark.parametrize("name", ["slab", "own_images", "triclinic", "periodic_z"])
@pytest.mark.parametrize("max_neighbors", [5, 1000])
def test_matches_brute_force(name, max_neighbors):
    atoms = small_cells()[name]
    cutoff = 4.0
    ei, co, edges = graph_set(atoms, cutoff, max_neighbors)
    expected = capped_reference(brute_force_pairs(atoms, cutoff), max_neighbors)
    assert edges == expected
    # sorted by target, and edge vectors have the right lengths
    assert bool((ei[1][1:] >= ei[1][:-1]).all())
    pos = torch.tensor(atoms.positions)
    cell = torch.tensor(atoms.cell.array)[None]
    vec = edge_vectors(pos, ei, co, cell, torch.zeros(len(atoms), dtype=torch.long))
    assert float(vec.norm(dim=-1).max()) < cutoff


def test_own_images_present():
    atoms = small_cells()["own_images"]
    ei, _co, edges = graph_set(atoms, 4.0, 1000)
    assert len(edges) == 12 + 6  # 12 nearest and 6 second neighbours of fcc, a = 3.6
    assert bool((ei[0] == ei[1]).all())


def test_reverse_edges_involution_and_vectors():
    atoms = small_cells()["slab"]
    ei, co, _ = graph_set(atoms, 5.0, 8)
    rev = reverse_edges(ei, co)
    assert torch.equal(rev[rev], torch.arange(ei.shape[1]))
    assert torch.equal(ei[0][rev], ei[1]) and torch.equal(ei[1][rev], ei[0])
    assert torch.equal(co[rev], -co)
    pos = torch.tensor(atoms.positions)
    vec = edge_vectors(pos, ei, co, torch.tensor(atoms.cell.array)[None], torch.zeros(len(atoms), dtype=torch.long))
    assert torch.equal(vec[rev], -vec)  # exact, not approximate


def test_reverse_edges_rejects_asymmetric_graph():
    ei = torch.tensor([[0, 1], [1, 2]])
    with pytest.raises(ValueError, match="no reverse"):
        reverse_edges(ei, torch.zeros(2, 3))


def test_batch_equals_per_structure_and_molecules():
    mol = molecule("CH3CH2OH")
    slab = small_cells()["slab"]
    structures = [slab, mol, slab]
    pos = torch.tensor(np.concatenate([a.positions for a in structures]))
    natoms = torch.tensor([len(a) for a in structures])
    batch = torch.repeat_interleave(torch.arange(3), natoms)
    cell = torch.stack([torch.tensor(slab.cell.array), torch.zeros(3, 3), torch.tensor(slab.cell.array)])
    ei, co = radius_graph(pos, batch, natoms, cell, None, 4.0, 6)
    starts = torch.cumsum(natoms, 0) - natoms
    for b, atoms in enumerate(structures):
        mask = batch[ei[1]] == b
        assert bool((batch[ei[0]][mask] == b).all())
        got = {(int(i) - int(starts[b]), int(j) - int(starts[b]), tuple(int(x) for x in s))
               for j, i, s in zip(ei[0][mask], ei[1][mask], co[mask].tolist())}
        atoms_pbc = atoms.copy()
        if b == 1:
            atoms_pbc.pbc = False
        assert got == capped_reference(brute_force_pairs(atoms_pbc, 4.0), 6)
    assert co.dtype == pos.dtype


def test_pbc_flag_on_zero_cell_row_is_an_error():
    pos = torch.zeros(1, 3)
    with pytest.raises(ValueError, match="lattice vector 2"):
        radius_graph(pos, torch.zeros(1, dtype=torch.long), torch.tensor([1]), torch.zeros(1, 3, 3),
                     torch.tensor([[False, False, True]]), 3.0, 10)
