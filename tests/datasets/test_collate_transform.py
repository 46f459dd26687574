"""Batching periodic and molecular structures, and the radius-graph transform."""
from __future__ import annotations

import os

import pytest
import torch

from spinconv_train.datasets import LmdbDataset, MD17Dataset, QM9Dataset, RadiusGraph, collate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_batches_periodic_and_molecules_together():
    slab = LmdbDataset({"src": f"{ROOT}/data/oc20_mini/s2ef/val_id"})
    mol = MD17Dataset({"src": f"{ROOT}/data/md17/ethanol_xtb.npz", "split": "all"})
    items = [slab[0], mol[0], slab[1]]
    for item in items:
        for key in ("y", "force"):
            del item[key]
    batch = collate(items)
    assert batch.cell.shape == (3, 3, 3) and batch.natoms.tolist() == [38, 9, 38]
    assert batch.pbc.tolist() == [[True] * 3, [False] * 3, [True] * 3]
    assert not batch.cell[1].any() and batch.cell[0].any()
    assert batch.batch.bincount().tolist() == [38, 9, 38]


def test_target_shapes_in_batches():
    slab = LmdbDataset({"src": f"{ROOT}/data/oc20_mini/s2ef/val_id"})
    assert collate([slab[0], slab[1]]).y.shape == (2,)
    mol = MD17Dataset({"src": f"{ROOT}/data/md17/ethanol_xtb.npz", "split": "all"})
    b = collate([mol[0], mol[1], mol[2]])
    assert b.y.shape == (3,) and b.y.dtype == torch.float64 and b.force.shape == (27, 3) and b.pbc.shape == (3, 3)
    qm9 = QM9Dataset({"src": f"{ROOT}/data/qm9/qm9_subset.npz", "split": "all", "target": ["U0", "gap"]})
    assert collate([qm9[0], qm9[1]]).y.shape == (2, 2)


def test_radius_graph_transform_matches_brute_force():
    pytest.importorskip("spinconv_train.graph")
    slab = LmdbDataset({"src": f"{ROOT}/data/oc20_mini/s2ef/val_id"}, transform=RadiusGraph(6.0, 1000))
    data = slab[5]
    src, dst = data.edge_index
    vec = data.pos[src] - data.pos[dst] + data.cell_offsets @ data.cell[0]
    assert vec.norm(dim=1).max() <= 6.0 + 1e-4
    # brute force over lattice shifts -2..2 (the cell is > 7 Å in x, y and > 20 Å in z)
    shifts = torch.tensor([[a, b, c] for a in range(-2, 3) for b in range(-2, 3) for c in range(-1, 2)],
                          dtype=torch.float32)
    d = (data.pos[None, :, None] - data.pos[:, None, None] + (shifts @ data.cell[0])[None, None]).norm(dim=-1)
    expected = int(((d < 6.0) & (d > 1e-6)).sum())
    assert data.edge_index.shape[1] == expected
    mol = MD17Dataset({"src": f"{ROOT}/data/md17/ethanol_xtb.npz", "split": "all"}, transform=RadiusGraph(6.0, 40))
    assert mol[0].edge_index.shape[1] == 9 * 8 and not mol[0].cell_offsets.any()
