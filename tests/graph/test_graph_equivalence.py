"""The fast (numpy, per structure) graph code against the previous all-torch implementation.

``reference_radius_graph`` below is the implementation ``radius_graph`` had before it
was moved to numpy: a fresh vesin search per structure, then capping, ordering and the
reverse search in torch over the whole batch. The fast code must give the same edges in
the same order, including ties on perfect crystals. ``whole_shells=False`` is the cap of
before shells of tied distances were kept whole (the ``max_neighbors`` nearest, ties by
index): on structures without ties the fast code must still give exactly its edges.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule

from spinconv_train.graph import cap_neighbors, radius_graph, reverse_edges
from spinconv_train.graph.capping import (
    CAP_TIE_RTOL,
    cap_symmetric_np,
    cap_symmetric_paired_np,
    edge_keys_np,
    find_reverse_np,
)

rg_module = __import__("spinconv_train.graph.radius_graph", fromlist=["_cap_symmetric_torch"])


# ----------------------------------------------------------------- reference (old code)
def _ref_keys(src, dst, shifts, num_atoms):
    span = int(shifts.abs().max())
    base = 2 * span + 1
    s = shifts + span
    key = dst * num_atoms + src
    return ((key * base + s[:, 0]) * base + s[:, 1]) * base + s[:, 2]


def _ref_reverse(src, dst, shifts):
    n = src.numel()
    num_atoms = int(torch.maximum(src.max(), dst.max())) + 1
    keys = _ref_keys(src, dst, shifts, num_atoms)
    rev_keys = _ref_keys(dst, src, -shifts, num_atoms)
    sorted_keys, order = torch.sort(keys)
    at = torch.searchsorted(sorted_keys, rev_keys).clamp_(max=n - 1)
    return order[at], sorted_keys[at] == rev_keys


def _ref_cap(src, tgt, shifts, dist, num_atoms, max_neighbors, whole_shells=True):
    if src.numel() == 0:
        return torch.zeros(2, 0, dtype=torch.long), shifts
    order = torch.argsort(_ref_keys(src, tgt, shifts, num_atoms), stable=True)
    order = order[torch.argsort(dist[order], stable=True)]
    order = order[torch.argsort(tgt[order], stable=True)]
    src, tgt, shifts = src[order], tgt[order], shifts[order]
    counts = torch.bincount(tgt, minlength=num_atoms)
    rank = torch.arange(src.numel()) - (torch.cumsum(counts, 0) - counts)[tgt]
    near = rank < max_neighbors
    if whole_shells:  # plus every neighbour tied (CAP_TIE_RTOL) with the last one kept
        dist = dist[order]
        for atom in range(num_atoms):
            mine = tgt == atom
            if int(mine.sum()) > max_neighbors:
                last = float(dist[mine].sort().values[max_neighbors - 1])
                near |= mine & (dist <= last * (1 + CAP_TIE_RTOL))
    rev, found = _ref_reverse(src, tgt, shifts)
    keep = (near | near[rev]) & found
    return torch.stack([src[keep], tgt[keep]]), shifts[keep]


def reference_radius_graph(pos, natoms, cell, pbc, cutoff, max_neighbors, whole_shells=True):
    """The previous implementation (cell and pbc given explicitly per structure)."""
    from vesin import NeighborList

    ii, jj, ss, dd = [], [], [], []
    start = 0
    for b, n in enumerate(natoms.tolist()):
        p = pos[start : start + n].detach().double().numpy()
        periodic = pbc[b].tolist()
        box = cell[b].double().numpy() if any(periodic) else np.zeros((3, 3))
        nl = NeighborList(cutoff=float(cutoff), full_list=True)
        i, j, s, d = nl.compute(points=p, box=box, periodic=periodic if any(periodic) else False,
                                quantities="ijSd")
        ii.append(np.asarray(i, dtype=np.int64) + start)
        jj.append(np.asarray(j, dtype=np.int64) + start)
        ss.append(np.asarray(s, dtype=np.int64).reshape(-1, 3))
        dd.append(np.asarray(d, dtype=np.float64))
        start += n
    src, tgt, shifts, dist = (torch.from_numpy(np.concatenate(parts)) for parts in (jj, ii, ss, dd))
    ei, sh = _ref_cap(src, tgt, shifts, dist, pos.shape[0], max_neighbors, whole_shells)
    return ei, sh.to(pos.dtype)


# ----------------------------------------------------------------- structures
def random_structure(rng: np.random.Generator, kind: str) -> Atoms:
    n = int(rng.integers(1, 40))
    if kind == "molecule":
        return Atoms(numbers=[6] * n, positions=rng.uniform(0, 6, (n, 3)), pbc=False)
    cell = np.diag(rng.uniform(3.0, 9.0, 3)) + rng.uniform(-1.5, 1.5, (3, 3)) * (1 - np.eye(3))
    frac = rng.uniform(0, 1, (n, 3))
    pbc = [True, True, True] if kind == "periodic" else [True, True, False]
    return Atoms(numbers=[78] * n, scaled_positions=frac, cell=cell, pbc=pbc)


def perfect_crystals() -> list[Atoms]:
    fcc = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))  # many exactly equal distances
    bcc = bulk("Fe", "bcc", a=2.87)  # one atom, ties between its own images
    slab = fcc111("Pt", (3, 3, 3), vacuum=5.0, periodic=True)
    return [fcc, bcc, slab]


def pack(structures: list[Atoms], dtype=torch.float64):
    pos = torch.tensor(np.concatenate([a.positions for a in structures]), dtype=dtype)
    natoms = torch.tensor([len(a) for a in structures])
    batch = torch.repeat_interleave(torch.arange(len(structures)), natoms)
    cell = torch.tensor(np.stack([a.cell.array for a in structures]), dtype=dtype)
    pbc = torch.tensor(np.stack([a.pbc for a in structures]))
    return pos, batch, natoms, cell, pbc


def assert_same(got, want):
    assert torch.equal(got[0], want[0]), "edge_index differs from the reference"
    assert torch.equal(got[1], want[1]), "cell_offsets differ from the reference"
    assert got[0].dtype == want[0].dtype and got[1].dtype == want[1].dtype


# ----------------------------------------------------------------- tests
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_neighbors", [1, 7, 40, 10_000])
def test_random_batches_match_reference(seed, max_neighbors):
    rng = np.random.default_rng(seed)
    kinds = ["periodic", "slab", "molecule"]
    structures = [random_structure(rng, kinds[int(rng.integers(3))]) for _ in range(5)]
    pos, batch, natoms, cell, pbc = pack(structures)
    cutoff = float(rng.uniform(3.0, 6.0))
    got = radius_graph(pos, batch, natoms, cell, pbc, cutoff, max_neighbors)
    assert_same(got, reference_radius_graph(pos, natoms, cell, pbc, cutoff, max_neighbors))
    # no ties here: exactly the edges of the cap that ignored shells
    assert_same(got, reference_radius_graph(pos, natoms, cell, pbc, cutoff, max_neighbors, whole_shells=False))


@pytest.mark.parametrize("max_neighbors", [5, 12, 13, 40])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_perfect_crystals_with_ties_match_reference(max_neighbors, dtype):
    structures = perfect_crystals()
    pos, batch, natoms, cell, pbc = pack(structures, dtype)
    got = radius_graph(pos, batch, natoms, cell, pbc, 5.0, max_neighbors)
    assert_same(got, reference_radius_graph(pos, natoms, cell, pbc, 5.0, max_neighbors))
    # the cap really cut through shells of equal distances
    degree = torch.bincount(got[0][1], minlength=pos.shape[0])
    assert int(degree.min()) >= min(max_neighbors, 12)


def test_default_pbc_molecules_and_empty_structures_match_reference():
    mol = molecule("CH3CH2OH")
    lone = Atoms("H", positions=[[0.0, 0.0, 0.0]])  # no neighbours at all
    slab = fcc111("Pt", (2, 2, 3), vacuum=6.0, periodic=True)
    slab.rattle(0.05, seed=1)
    structures = [slab, mol, lone, slab]
    pos, batch, natoms, cell, _ = pack(structures)
    cell[1] = 0.0
    cell[2] = 0.0
    pbc = torch.tensor([[True] * 3, [False] * 3, [False] * 3, [True] * 3])
    got = radius_graph(pos, batch, natoms, cell, None, 4.5, 9)  # pbc from the cell
    assert_same(got, reference_radius_graph(pos, natoms, cell, pbc, 4.5, 9))
    got = radius_graph(pos, batch, natoms, None, None, 4.5, 9)  # no cell: all molecules
    assert_same(got, reference_radius_graph(pos, natoms, torch.zeros(4, 3, 3, dtype=pos.dtype),
                                            torch.zeros(4, 3, dtype=torch.bool), 4.5, 9))


def test_large_periodic_box_matches_reference():
    box = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((8, 8, 8))  # 2048 atoms
    box.rattle(0.05, seed=7)
    pos, batch, natoms, cell, pbc = pack([box])
    got = radius_graph(pos, batch, natoms, cell, pbc, 5.0, 20)
    assert_same(got, reference_radius_graph(pos, natoms, cell, pbc, 5.0, 20))


def _precomputed(seed: int):
    """A batch graph with a quarter of its edges removed (so some have no reverse) and
    distances from the positions."""
    rng = np.random.default_rng(seed)
    structures = [random_structure(rng, "periodic"), random_structure(rng, "slab"), perfect_crystals()[0]]
    pos, batch, natoms, cell, pbc = pack(structures)
    ei, co = radius_graph(pos, batch, natoms, cell, pbc, 5.0, 10_000)
    keep = torch.from_numpy(rng.uniform(size=ei.shape[1]) > 0.25)
    perm = torch.from_numpy(rng.permutation(int(keep.sum())))
    ei, co = ei[:, keep][:, perm], co[keep][perm]
    vec = pos[ei[0]] - pos[ei[1]] + torch.bmm(co.unsqueeze(1), cell[batch[ei[1]]]).squeeze(1)
    return ei, co, vec.norm(dim=-1), pos.shape[0]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("max_neighbors", [3, 16, 10_000])
def test_cap_neighbors_matches_reference_and_torch_path(seed, max_neighbors):
    ei, co, dist, num_atoms = _precomputed(seed)
    got = cap_neighbors(ei, co, dist, num_atoms, max_neighbors)
    shifts = co.round().long()
    want_ei, want_sh = _ref_cap(ei[0], ei[1], shifts, dist, num_atoms, max_neighbors)
    assert_same(got, (want_ei, want_sh.to(co.dtype)))
    # the accelerator (torch) path gives the same result as the numpy one
    torch_ei, torch_sh = rg_module._cap_symmetric_torch(ei[0], ei[1], shifts, dist, num_atoms, max_neighbors)
    assert_same((torch_ei, torch_sh.to(co.dtype)), got)
    # float32 distances: same order as float64 distances rounded to float32 by the reference
    got32 = cap_neighbors(ei, co.float(), dist.float(), num_atoms, max_neighbors)
    want32 = _ref_cap(ei[0], ei[1], shifts, dist.float(), num_atoms, max_neighbors)
    assert_same(got32, (want32[0], want32[1].float()))


@pytest.mark.parametrize("seed", range(3))
def test_reverse_search_matches_reference(seed):
    ei, co, dist, num_atoms = _precomputed(seed)
    shifts = co.round().long()
    rev_np, found_np = find_reverse_np(*edge_keys_np(ei[0].numpy(), ei[1].numpy(), shifts.numpy(), num_atoms))
    rev_ref, found_ref = _ref_reverse(ei[0], ei[1], shifts)
    assert np.array_equal(found_np, found_ref.numpy())
    assert not found_np.all() and found_np.any()  # the removed edges left some unpaired
    assert np.array_equal(rev_np[found_np], rev_ref.numpy()[found_np])
    torch_rev, torch_found = rg_module._find_reverse_torch(ei[0], ei[1], shifts, num_atoms)
    assert torch.equal(torch_found, found_ref) and torch.equal(torch_rev[torch_found], rev_ref[found_ref])
    # on a symmetric graph reverse_edges pairs every edge and agrees with the reference
    sym_ei, sym_co = cap_neighbors(ei, co, dist, num_atoms, 10_000)
    rev = reverse_edges(sym_ei, sym_co)
    ref, ok = _ref_reverse(sym_ei[0], sym_ei[1], sym_co.round().long())
    assert bool(ok.all()) and torch.equal(rev, ref)


def test_cap_symmetric_np_properties():
    """Kept set is symmetric, sorted by (target, distance), each atom keeps its nearest."""
    rng = np.random.default_rng(0)
    structures = [random_structure(rng, "periodic") for _ in range(2)]
    pos, batch, natoms, cell, pbc = pack(structures)
    ei, co = radius_graph(pos, batch, natoms, cell, pbc, 6.0, 10_000)
    src, tgt, sh = ei[0].numpy(), ei[1].numpy(), co.numpy().astype(np.int64)
    vec = pos[ei[0]] - pos[ei[1]] + torch.bmm(co.unsqueeze(1), cell[batch[ei[1]]]).squeeze(1)
    dist = vec.norm(dim=-1).numpy()
    kept = cap_symmetric_np(src, tgt, sh, dist, pos.shape[0], 4)
    edges = {(src[e], tgt[e], tuple(sh[e])) for e in kept}
    assert all((t, s, tuple(-x for x in v)) in edges for s, t, v in edges)
    t, d = tgt[kept], dist[kept]
    assert np.all((t[1:] > t[:-1]) | ((t[1:] == t[:-1]) & (d[1:] >= d[:-1])))
    for atom in range(pos.shape[0]):
        mine = np.sort(dist[tgt == atom])[:4]
        assert np.all(np.isin(mine, d[t == atom]))


@pytest.mark.parametrize("max_neighbors", [1, 5, 12, 13, 10_000])
def test_half_list_pairs_and_paired_cap_match_full_search(max_neighbors):
    """The edge list built from vesin's half list pairs every edge with its reverse (same
    distance bits), and capping it with the known reverses equals the searching cap,
    whatever the input order; perfect crystals (incl. one atom seeing its own images)
    give exact distance ties."""
    rng = np.random.default_rng(max_neighbors)
    structures = perfect_crystals() + [random_structure(rng, "periodic"), random_structure(rng, "molecule")]
    for atoms in structures:
        pos, _, _, cell, pbc = pack([atoms])
        i, j, sh, d, rev = rg_module._pairs_one_structure(pos.numpy(), cell[0].numpy(), pbc[0].numpy(), 5.0)
        n = len(atoms)
        assert i.size > 0 and np.array_equal(rev[rev], np.arange(i.size))
        assert np.array_equal(i[rev], j) and np.array_equal(sh[rev], -sh) and np.array_equal(d[rev], d)
        keys, _ = edge_keys_np(j, i, sh, n)
        assert np.unique(keys).size == keys.size  # no edge twice
        want = cap_symmetric_np(j, i, sh, d, n, max_neighbors)
        assert np.array_equal(cap_symmetric_paired_np(j, i, sh, d, rev, n, max_neighbors), want)
        perm = rng.permutation(i.size)
        inv = np.empty_like(perm)
        inv[perm] = np.arange(perm.size)
        got = cap_symmetric_paired_np(j[perm], i[perm], sh[perm], d[perm], inv[rev[perm]], n, max_neighbors)
        assert np.array_equal(perm[got], want)


def test_neighbor_list_is_reused_and_results_repeat():
    atoms = perfect_crystals()[2]
    atoms.rattle(0.02, seed=3)
    args = pack([atoms])
    first = radius_graph(*args, 4.0, 8)
    nl = rg_module._neighbor_list(4.0)
    assert rg_module._neighbor_list(4.0) is nl
    other = radius_graph(*pack([random_structure(np.random.default_rng(1), "slab")]), 4.0, 8)
    assert other[0].shape[1] > 0
    assert_same(radius_graph(*args, 4.0, 8), first)  # reuse does not leak state between calls


def test_cap_neighbors_rejects_out_of_range_atoms():
    ei = torch.tensor([[0, 3], [3, 0]])
    with pytest.raises(ValueError, match="num_atoms is 3"):
        cap_neighbors(ei, torch.zeros(2, 3), torch.ones(2), 3, 10)
