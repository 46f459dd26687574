"""``RadiusGraph.apply_many`` and ``LmdbDataset.__getitems__`` (what a DataLoader uses)
give every record exactly the graph the one-at-a-time paths give."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset
from torch_geometric.data import Data

from spinconv_train.datasets import LmdbDataset, MD17Dataset, QM9Dataset, RadiusGraph, collate
from spinconv_train.datasets.records import _all_finite

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
S2EF = f"{ROOT}/data/oc20_mini/s2ef/val_id"


def assert_same_graph(got: Data, want: tuple) -> None:
    edge_index, cell_offsets = want
    assert torch.equal(got.edge_index, edge_index) and got.edge_index.dtype == torch.long
    assert torch.equal(got.cell_offsets, cell_offsets) and got.cell_offsets.dtype == cell_offsets.dtype
    assert got.edge_index.is_contiguous() and got.cell_offsets.is_contiguous()


def records() -> list:
    slabs = LmdbDataset({"src": S2EF})
    md17 = MD17Dataset({"src": f"{ROOT}/data/md17/ethanol_xtb.npz", "split": "all"})
    qm9 = QM9Dataset({"src": f"{ROOT}/data/qm9/qm9_subset.npz", "split": "all", "target": ["U0"]})
    items = [slabs[i] for i in range(5)] + [md17[0], md17[1], qm9[0], qm9[1], slabs[5]]
    no_pbc = slabs[6]
    del no_pbc["pbc"]  # periodic from the cell
    float64 = slabs[7]
    float64.pos, float64.cell = float64.pos.double(), float64.cell.double()
    grad = slabs[8]
    grad.pos.requires_grad_(True)
    return items + [no_pbc, float64, grad]


@pytest.mark.parametrize("cutoff,max_neighbors", [(6.0, 40), (4.0, 6), (6.0, 1000)])
def test_apply_many_equals_one_at_a_time_and_the_batch_api(cutoff, max_neighbors):
    transform = RadiusGraph(cutoff, max_neighbors)
    items = records()
    want = [transform._through_radius_graph(item) for item in items]  # radius_graph's batch API
    for item, expected in zip(transform.apply_many([item.clone() for item in items]), want):
        assert_same_graph(item, expected)
    for item, expected in zip(items, want):
        assert_same_graph(transform(item.clone()), expected)
    assert want[0][0].shape[1] > 0 and want[-2][1].dtype == torch.float64


def test_bad_pbc_is_reported_in_both_paths():
    item = LmdbDataset({"src": S2EF})[0]
    item.cell[0, 2] = 0.0  # pbc stays True along c
    with pytest.raises(ValueError, match="lattice vector 2"):
        RadiusGraph()(item)
    with pytest.raises(ValueError, match="lattice vector 2"):
        RadiusGraph()._through_radius_graph(item)


def test_getitems_equals_getitem():
    ds = LmdbDataset({"src": S2EF, "required_fields": ["y", "force"]}, transform=RadiusGraph(6.0, 40))
    indices = [3, 0, 7, 7, 2]
    for got, index in zip(ds.__getitems__(indices), indices):
        want = ds[index]
        assert list(got._store._mapping) == list(want._store._mapping)
        for key, value in want._store._mapping.items():
            other = got._store._mapping[key]
            assert torch.equal(other, value) if isinstance(value, torch.Tensor) else other == value, key
    # a transform without apply_many, and no transform
    plain = LmdbDataset({"src": S2EF}, transform=lambda data: data.update({"seen": True}) or data)
    assert all(item.seen for item in plain.__getitems__([1, 2]))
    bare = LmdbDataset({"src": S2EF})
    assert [float(d.y) for d in bare.__getitems__([4, 1])] == [float(bare[4].y), float(bare[1].y)]


class OneByOne(torch.utils.data.Dataset):
    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset[index]


def test_dataloader_batches_do_not_depend_on_the_fetch_path():
    ds = LmdbDataset({"src": S2EF, "required_fields": ["y", "force"]}, transform=RadiusGraph(6.0, 40))
    subset = Subset(ds, [5, 1, 9, 3, 2, 8, 0])  # Subset forwards __getitems__
    together = list(DataLoader(subset, batch_size=3, collate_fn=collate))
    alone = list(DataLoader(OneByOne(subset), batch_size=3, collate_fn=collate))
    for got, want in zip(together, alone):
        for key in ("edge_index", "cell_offsets", "pos", "batch", "ptr", "force"):
            assert torch.equal(got[key], want[key]), key


def test_all_finite_is_exact():
    assert _all_finite(np.full(8, 3e38, dtype=np.float32))  # the sum overflows, the values do not
    assert not _all_finite(np.array([1.0, np.nan], dtype=np.float32))
    assert not _all_finite(np.array([[1.0, -np.inf]]))
    assert _all_finite(np.arange(5))
