"""The fast graph path: vesin called through its C function, the half-list cap over many
structures at once, and its fallbacks, against the plain implementations."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule

from spinconv_train.graph import capping, radius_graph, structures_graph_np, vesin_direct
from spinconv_train.graph.capping import cap_half_list_np, cap_symmetric_paired_np, full_from_half_np

rg_module = __import__("spinconv_train.graph.radius_graph", fromlist=["_neighbor_list"])


def structures() -> list[Atoms]:
    rng = np.random.default_rng(4)
    slab = fcc111("Cu", (3, 3, 4), vacuum=6.0, periodic=True)
    slab.positions[-9:] += rng.normal(0, 0.05, (9, 3))  # bottom layers stay on lattice sites: ties
    box = bulk("Pt", "fcc", a=3.9, cubic=True).repeat((2, 2, 2))  # many exactly equal distances
    one = bulk("Fe", "bcc", a=2.87)  # one atom pairing with its own images
    mol = molecule("CH3CH2OH")
    mixed = Atoms("Ni4", positions=rng.uniform(0, 5, (4, 3)), cell=np.diag([6.0, 6.5, 0.0]), pbc=[True, True, False])
    lone = Atoms("H", positions=[[0.0, 0.0, 0.0]])
    return [slab, box, one, mol, mixed, lone]


def vesin_inputs(atoms: Atoms) -> tuple:
    periodic = np.array(atoms.pbc, dtype=bool)
    box = atoms.cell.array.astype(np.float64) if periodic.any() else np.zeros((3, 3))
    return atoms.positions.astype(np.float64), box, periodic


def test_direct_vesin_call_equals_public_wrapper():
    from vesin import NeighborList

    direct = vesin_direct.HalfNeighborList(5.0, 1)
    public = NeighborList(cutoff=5.0, full_list=False, n_threads=1)
    for atoms in structures():
        pos, box, periodic = vesin_inputs(atoms)
        got = direct.compute(pos, box, periodic)
        want = public.compute(points=pos, box=box, periodic=periodic if periodic.any() else False,
                              quantities="PSd")
        assert got[0].shape[0] == want[0].shape[0]
        for g, w in zip(got, want):
            assert np.array_equal(g, w.reshape(g.shape))
    assert direct.compute(np.zeros((1, 3)), np.zeros((3, 3)), np.zeros(3, bool))[2].size == 0


def test_pair_sink_collects_many_searches_and_grows():
    direct = vesin_direct.HalfNeighborList(5.0, 1)
    sink = vesin_direct.PairSink(capacity=8)  # forces several reallocations
    expected = []
    for atoms in structures():
        pos, box, periodic = vesin_inputs(atoms)
        expected.append([a.copy() for a in direct.compute(pos, box, periodic)])
        count = direct.compute_into(pos, box, periodic, sink)
        assert count == expected[-1][2].size
    pairs, shifts, dist = sink.arrays()
    assert np.array_equal(pairs, np.concatenate([e[0] for e in expected]).astype(np.int64))
    assert np.array_equal(shifts, np.concatenate([e[1] for e in expected]))
    assert np.array_equal(dist, np.concatenate([e[2] for e in expected]))


@pytest.mark.parametrize("max_neighbors", [1, 6, 12, 40, 10_000])
def test_half_list_cap_equals_full_list_cap_over_several_structures(max_neighbors):
    """Global atom numbering over all structures, exact distance ties included."""
    direct = vesin_direct.HalfNeighborList(5.0, 1)
    parts, start = [], 0
    for atoms in structures():
        pairs, shifts, dist = (a.copy() for a in direct.compute(*vesin_inputs(atoms)))
        parts.append((pairs.astype(np.int64) + start, shifts.astype(np.int64), dist))
        start += len(atoms)
    pairs = np.concatenate([p[0] for p in parts])
    shifts = np.concatenate([p[1] for p in parts])
    dist = np.concatenate([p[2] for p in parts])
    i, j = pairs[:, 0], pairs[:, 1]
    edge_index, got_shifts = cap_half_list_np(i, j, shifts, dist, start, max_neighbors)
    src, tgt, full_shifts, full_dist, rev = full_from_half_np(i, j, shifts, dist)
    kept = cap_symmetric_paired_np(src, tgt, full_shifts, full_dist, rev, start, max_neighbors)
    assert np.array_equal(edge_index, np.stack([src[kept], tgt[kept]]))
    assert np.array_equal(got_shifts, full_shifts[kept])
    assert edge_index.flags.c_contiguous and got_shifts.flags.c_contiguous
    if max_neighbors == 12:  # the cap cut through shells of equal distances
        assert edge_index.shape[1] < 2 * i.size


def pack(atoms_list: list[Atoms]) -> tuple:
    pos = torch.tensor(np.concatenate([a.positions for a in atoms_list]))
    natoms = torch.tensor([len(a) for a in atoms_list])
    batch = torch.repeat_interleave(torch.arange(len(atoms_list)), natoms)
    cell = torch.tensor(np.stack([a.cell.array for a in atoms_list]))
    pbc = torch.tensor(np.stack([a.pbc for a in atoms_list]))
    return pos, batch, natoms, cell, pbc


def test_batches_too_large_for_one_key_are_split(monkeypatch):
    """When packed keys would overflow, structures are capped in smaller groups (and
    alone ones by the general cap): the same graph."""
    args = pack(structures() * 2)
    want = radius_graph(*args, 5.0, 12)
    calls = {"groups": 0, "general": 0}

    def counting(name, function):
        def wrapper(*a, **k):
            calls[name] += 1
            return function(*a, **k)
        return wrapper

    monkeypatch.setattr(capping, "_KEY_LIMIT", 2**24)
    monkeypatch.setattr(rg_module, "_cap_structures", counting("groups", rg_module._cap_structures))
    monkeypatch.setattr(capping, "cap_symmetric_paired_np", counting("general", capping.cap_symmetric_paired_np))
    got = radius_graph(*args, 5.0, 12)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert calls["groups"] > 1 and calls["general"] > 0


def test_structures_graph_edge_ranges():
    atoms_list = structures()
    positions = [a.positions for a in atoms_list]
    cells = np.stack([a.cell.array for a in atoms_list])
    periodic = rg_module.periodic_flags(cells, np.stack([a.pbc for a in atoms_list]))
    edge_index, shifts, edge_starts = structures_graph_np(positions, cells, periodic, 5.0, 40)
    start = 0
    for b, atoms in enumerate(atoms_list):
        block = edge_index[:, edge_starts[b]:edge_starts[b + 1]]
        assert block.size == 0 or (block.min() >= start and block.max() < start + len(atoms))
        alone, alone_shifts, _ = structures_graph_np(positions[b:b + 1], cells[b:b + 1], periodic[b:b + 1], 5.0, 40)
        assert np.array_equal(block - start, alone)
        assert np.array_equal(shifts[edge_starts[b]:edge_starts[b + 1]], alone_shifts)
        start += len(atoms)
    assert edge_starts[-1] == edge_index.shape[1]


def test_other_vesin_versions_use_the_public_wrapper(monkeypatch):
    import vesin

    args = pack(structures())
    want = radius_graph(*args, 5.0, 12)
    monkeypatch.setattr(vesin, "__version__", "9.9.9")
    monkeypatch.setattr(vesin_direct, "_WARNED", [])
    monkeypatch.setattr(rg_module, "_NEIGHBOR_LISTS", type(rg_module._NEIGHBOR_LISTS)())
    with pytest.warns(RuntimeWarning, match="vesin 9.9.9"):
        got = radius_graph(*args, 5.0, 12)
    assert isinstance(rg_module._neighbor_list(5.0), vesin_direct._PublicHalfNeighborList)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_vesin_threads_follow_torch():
    args = pack(structures())
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = radius_graph(*args, 5.0, 12)
        assert rg_module._neighbor_list(5.0)._options.n_threads == 1
        torch.set_num_threads(2)
        two = radius_graph(*args, 5.0, 12)
        assert rg_module._neighbor_list(5.0)._options.n_threads == 2
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        radius_graph(*args, 5.0, 12)  # the supported vesin: no warning
