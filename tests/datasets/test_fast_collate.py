"""``collate`` builds exactly the batch ``Batch.from_data_list`` builds (fast path and
fallbacks), for every dataset of the package and for odd field types."""
from __future__ import annotations

import os

import pytest
import torch
from torch.utils.data import DataLoader
from torch_geometric.data import Batch, Data

from spinconv_train.datasets import LmdbDataset, MD17Dataset, QM9Dataset, RadiusGraph, collate
from spinconv_train.datasets.collate import uses_fast_collate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
S2EF = f"{ROOT}/data/oc20_mini/s2ef/val_id"


def _same_value(got, want, where: str) -> None:
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor), where
        assert got.dtype == want.dtype and got.shape == want.shape, where
        assert torch.equal(got, want), where
    else:
        assert got == want, where


def assert_same_batch(got: Batch, want: Batch) -> None:
    """Same class, fields (in order), values, dtypes, slices, increments and graph count."""
    assert type(got) is type(want)
    assert list(got._store._mapping) == list(want._store._mapping)
    for key, value in want._store._mapping.items():
        _same_value(got._store._mapping[key], value, key)
    assert got.num_graphs == want.num_graphs
    assert list(got._slice_dict) == list(want._slice_dict) and list(got._inc_dict) == list(want._inc_dict)
    for key in want._slice_dict:
        _same_value(got._slice_dict[key], want._slice_dict[key], f"slices of {key}")
        _same_value(got._inc_dict[key], want._inc_dict[key], f"increments of {key}")
    for got_item, want_item in zip(got.to_data_list(), want.to_data_list()):
        for key, value in want_item._store._mapping.items():
            _same_value(got_item._store._mapping[key], value, f"to_data_list {key}")


def check(items: list, fast: bool = True) -> Batch:
    assert uses_fast_collate(items) is fast
    want = Batch.from_data_list([item.clone() for item in items])
    got = collate(items)
    assert_same_batch(got, want)
    return got


@pytest.fixture(scope="module")
def slabs():
    ds = LmdbDataset({"src": S2EF, "required_fields": ["y", "force"]}, transform=RadiusGraph(6.0, 40))
    return [ds[i] for i in range(6)]


def test_oc20_batches_with_graphs(slabs):
    batch = check(slabs)
    assert batch.edge_index.max() >= slabs[0].pos.shape[0]  # increments were applied
    check(slabs[:1])  # one structure: nothing incremented


def test_md17_qm9_is2re_and_mixed_batches(slabs):
    md17 = MD17Dataset({"src": f"{ROOT}/data/md17/ethanol_xtb.npz", "split": "all"}, transform=RadiusGraph(5.0, 40))
    check([md17[i] for i in range(4)])
    qm9 = QM9Dataset({"src": f"{ROOT}/data/qm9/qm9_subset.npz", "split": "all", "target": ["U0", "gap"]})
    check([qm9[i] for i in range(5)])
    is2re = LmdbDataset({"src": f"{ROOT}/data/oc20_mini/is2re/val_id"})
    check([is2re[i] for i in range(3)])  # float targets become a float tensor
    mixed = [slabs[0].clone(), md17[0], slabs[1].clone()]
    for item in mixed:
        del item["y"], item["force"]
    check(mixed)


def test_zero_edge_structures_and_odd_fields():
    lone = Data(pos=torch.zeros(1, 3), edge_index=torch.zeros(2, 0, dtype=torch.long), sid="a", energy=torch.tensor(1.5))
    pair = Data(pos=torch.rand(2, 3), edge_index=torch.tensor([[0, 1], [1, 0]]), sid="b", energy=torch.tensor(2.0))
    check([lone, pair, lone.clone()])  # strings stay a list, 0-dim tensors are stacked
    # index-like fields of other dtypes are incremented with PyG's type promotion
    items = [Data(pos=torch.rand(n, 3), triplet_index=torch.arange(n, dtype=torch.int32).repeat(3, 1),
                  mask_index=torch.ones(n, dtype=torch.bool), face=torch.zeros(3, 1, dtype=torch.long))
             for n in (3, 4, 2)]
    batch = check(items)
    assert batch.triplet_index.dtype == torch.int32 and batch.mask_index.dtype == torch.long


def test_fallbacks_give_pyg_results(slabs):
    class Subclass(Data):
        def __inc__(self, key, value, *args, **kwargs):
            return 0 if key == "edge_index" else super().__inc__(key, value, *args, **kwargs)

    sub = [Subclass(**{k: v for k, v in slab._store._mapping.items()}) for slab in slabs[:3]]
    batch = check(sub, fast=False)
    assert torch.equal(batch.edge_index, torch.cat([s.edge_index for s in sub], dim=1))  # the override counted
    with_x = [Data(x=torch.rand(n, 2), pos=torch.rand(n, 3)) for n in (2, 3)]
    check(with_x, fast=False)
    other_keys = [slabs[0].clone(), slabs[1].clone()]
    other_keys[1].extra = torch.ones(1)
    assert not uses_fast_collate(other_keys)
    mixed_types = [Data(pos=torch.rand(2, 3), y=1.0), Data(pos=torch.rand(2, 3), y=torch.tensor(2.0))]
    assert not uses_fast_collate(mixed_types)


def test_batches_from_worker_processes_are_the_same(slabs):
    """In DataLoader workers the batch is written into shared memory (as PyG does)."""
    ds = LmdbDataset({"src": S2EF, "required_fields": ["y", "force"]}, transform=RadiusGraph(6.0, 40))
    main = list(DataLoader(ds, batch_size=5, collate_fn=collate, num_workers=0))
    workers = list(DataLoader(ds, batch_size=5, collate_fn=collate, num_workers=1))
    assert len(main) == len(workers)
    for got, want in zip(workers, main):
        assert_same_batch(got, want)
    assert workers[0].pos.is_shared()
