"""BalancedBatchSampler: DDP partitioning, balance, determinism, mid-epoch resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from spinconv_train.datasets import BalancedBatchSampler


class _Sizes(Dataset):
    def __init__(self, natoms):
        self.natoms = np.asarray(natoms)

    def __len__(self):
        return len(self.natoms)

    def __getitem__(self, i):
        return i

    def get_natoms(self):
        return self.natoms


NATOMS = np.random.default_rng(3).integers(5, 120, size=101)


def _epoch(replicas, **kw):
    return [list(BalancedBatchSampler(natoms=NATOMS, num_replicas=replicas, rank=r, **kw)) for r in range(replicas)]


def test_ranks_get_equal_batch_counts_and_cover_the_data():
    per_rank = _epoch(4, batch_size=3, seed=1)
    assert len({len(b) for b in per_rank}) == 1 == len({len(x) for b in per_rank for x in b})
    seen = [i for batches in per_rank for batch in batches for i in batch]
    assert set(seen) == set(range(len(NATOMS)))
    assert len(seen) == 4 * 3 * 9  # ceil(101 / 12) = 9 steps, padded by wrapping
    assert len(BalancedBatchSampler(natoms=NATOMS, batch_size=3, num_replicas=4)) == 9
    dropped = _epoch(4, batch_size=3, seed=1, drop_last=True)
    assert all(len(b) == 8 for b in dropped)


def test_balances_atoms_across_ranks():
    per_rank = _epoch(4, batch_size=4, seed=0)
    spread = []
    for step in range(len(per_rank[0])):
        totals = [NATOMS[per_rank[r][step]].sum() for r in range(4)]
        spread.append(max(totals) - min(totals))
    # the same steps cut in index order (an unbalanced split of the same 16 structures)
    naive = []
    for step in range(len(per_rank[0])):
        chunk = sorted(i for r in range(4) for i in per_rank[r][step])
        totals = [NATOMS[chunk[4 * r:4 * r + 4]].sum() for r in range(4)]
        naive.append(max(totals) - min(totals))
    assert np.mean(spread) < 0.5 * np.mean(naive)
    assert max(spread) <= NATOMS.max()  # greedy LPT bound


def test_deterministic_per_seed_and_epoch():
    a = BalancedBatchSampler(natoms=NATOMS, batch_size=5, seed=7)
    b = BalancedBatchSampler(natoms=NATOMS, batch_size=5, seed=7)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    assert list(BalancedBatchSampler(natoms=NATOMS, batch_size=5, seed=8)) != first
    ordered = list(BalancedBatchSampler(natoms=NATOMS, batch_size=5, shuffle=False))
    assert sorted(i for b in ordered[:2] for i in b) == list(range(10))


def test_resume_mid_epoch():
    sampler = BalancedBatchSampler(natoms=NATOMS, batch_size=4, num_replicas=2, rank=1, seed=5)
    sampler.set_epoch(3)
    full = list(sampler)
    it = iter(sampler)
    taken = [next(it) for _ in range(5)]
    state = sampler.state_dict()
    assert state == {"epoch": 3, "batches_yielded": 5, "seed": 5}
    assert sampler.state_dict(batches_consumed=4)["batches_yielded"] == 4
    fresh = BalancedBatchSampler(natoms=NATOMS, batch_size=4, num_replicas=2, rank=1, seed=5)
    fresh.load_state_dict(state)
    fresh.set_epoch(3)  # the trainer calls set_epoch again: the position is kept
    assert taken + list(fresh) == full
    assert list(fresh) == full  # the following pass starts from the beginning again
    with pytest.raises(ValueError, match="seed"):
        BalancedBatchSampler(natoms=NATOMS, seed=6).load_state_dict(state)


def test_works_as_dataloader_batch_sampler_with_dataset_natoms():
    ds = _Sizes(NATOMS)
    sampler = BalancedBatchSampler(ds, batch_size=8, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=lambda items: torch.tensor(items))
    got = torch.cat(list(loader)).tolist()
    assert sorted(set(got)) == list(range(len(NATOMS)))
    assert len(list(loader)) == len(sampler) == 13


def test_bad_arguments():
    with pytest.raises(ValueError, match="rank"):
        BalancedBatchSampler(natoms=NATOMS, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="batch_size"):
        BalancedBatchSampler(natoms=NATOMS, batch_size=0)
