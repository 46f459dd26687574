"""A batch sampler that balances atom counts across DDP ranks, with resumable position."""
from __future__ import annotations

import heapq
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


def _natoms_of(dataset) -> np.ndarray:
    if hasattr(dataset, "get_natoms"):
        return np.asarray(dataset.get_natoms(), dtype=np.int64)
    raise TypeError(f"{type(dataset).__name__} has no get_natoms(); pass natoms= explicitly")


def _partition(indices: Sequence[int], natoms: np.ndarray, parts: int, size: int) -> list[list[int]]:
    """Split ``indices`` into ``parts`` groups of ``size`` with near-equal atom totals.

    Largest structures first, each to the group with the fewest atoms that still has room
    (greedy LPT with a cardinality limit); ties go to the lower group index.
    """
    order = sorted(indices, key=lambda i: (-int(natoms[i]), int(i)))
    heap = [(0, g) for g in range(parts)]
    groups: list[list[int]] = [[] for _ in range(parts)]
    for i in order:
        load, g = heapq.heappop(heap)
        groups[g].append(int(i))
        if len(groups[g]) < size:
            heapq.heappush(heap, (load + int(natoms[i]), g))
    return groups


class BalancedBatchSampler(Sampler[list[int]]):
    """Yield batches of ``batch_size`` indices for one rank, balanced by atom count.

    Each epoch draws one seeded permutation of all indices (``seed + epoch``), pads it
    by wrapping around to a multiple of ``batch_size * num_replicas`` (unless
    ``drop_last``), cuts it into global steps and splits every step among the ranks so
    that their atom totals are as equal as possible. Every rank gets the same number of
    batches, and the ranks' batches of one epoch are disjoint (apart from padding).

    Atom counts come from ``natoms`` or ``dataset.get_natoms()`` (``metadata.npz`` for
    LMDB data; without it the dataset reads them and warns).

    ``state_dict()`` records the epoch and the batches already yielded in it;
    after ``load_state_dict`` the next iteration resumes mid-epoch.
    """

    def __init__(
        self,
        dataset=None,
        batch_size: int = 1,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        natoms: Sequence[int] | None = None,
    ) -> None:
        if natoms is None:
            if dataset is None:
                raise ValueError("BalancedBatchSampler needs a dataset or natoms")
            natoms = _natoms_of(dataset)
        self.natoms = np.asarray(natoms, dtype=np.int64)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in 0..{num_replicas - 1}")
        self.batch_size = int(batch_size)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self._resume_from = 0
        self._yielded = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's permutation (call before each epoch, as with DistributedSampler)."""
        if int(epoch) != self.epoch:
            self._resume_from = 0
        self.epoch = int(epoch)

    def __len__(self) -> int:
        step = self.batch_size * self.num_replicas
        n = len(self.natoms)
        return n // step if self.drop_last else math.ceil(n / step)

    def _order(self) -> np.ndarray:
        n = len(self.natoms)
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=gen).numpy()
        else:
            order = np.arange(n)
        step = self.batch_size * self.num_replicas
        total = len(self) * step
        if total > n:  # wrap around, as DistributedSampler pads
            order = np.concatenate([order, np.resize(order, total - n)])
        return order[:total]

    def __iter__(self) -> Iterator[list[int]]:
        order = self._order()
        step = self.batch_size * self.num_replicas
        start = self._resume_from
        self._resume_from = 0
        self._yielded = start
        for b in range(start, len(self)):
            chunk = order[b * step:(b + 1) * step]
            groups = _partition(chunk, self.natoms, self.num_replicas, self.batch_size)
            self._yielded = b + 1
            yield groups[self.rank]

    def state_dict(self, batches_consumed: int | None = None) -> dict:
        """Position for mid-epoch resume: epoch, batches yielded this epoch, seed.

        A DataLoader with workers prefetches, so the sampler may have yielded more batches
        than the loop has used: pass the count the loop consumed as ``batches_consumed``.
        """
        done = self._yielded if batches_consumed is None else int(batches_consumed)
        return {"epoch": self.epoch, "batches_yielded": done, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        """Restore a position saved by ``state_dict``; the next ``__iter__`` resumes there."""
        if int(state["seed"]) != self.seed:
            raise ValueError(f"sampler state has seed {state['seed']}, this sampler {self.seed}")
        self.epoch = int(state["epoch"])
        self._resume_from = int(state["batches_yielded"])
        self._yielded = self._resume_from


class WorldSizeChangeError(ValueError):
    """A resumed position cannot be continued exactly under the new global batch."""


def resume_position(state: dict, world_size: int, batch_size: int, allow_change: bool,
                    flag: str = "--allow-world-size-change") -> tuple[int, int]:
    """Batches already done in the epoch of a saved sampler ``state``, for ``world_size``
    processes of ``batch_size`` each; returns ``(batches, structures_replayed)``.

    The position is the number of structures of the epoch's permutation consumed
    (``structures``; older states: ``batches_yielded × batch_size × world_size`` when those
    are recorded). The epoch's permutation does not depend on the process count, and each
    global batch is the same run of ``world_size × batch_size`` structures however it is split
    over the ranks, so the same global batch continues exactly. Another global batch is
    refused with a :class:`WorldSizeChangeError` naming both, unless ``allow_change``: then the
    run restarts at the last whole new batch at or before the position, and the structures
    between it and the position are seen a second time this epoch (the count is returned).
    """
    batches = int(state["batches_yielded"])
    saved_world, saved_batch = state.get("world_size"), state.get("batch_size")
    if saved_world is None or saved_batch is None:  # an older checkpoint: the position is in batches
        return batches, 0
    old_global, new_global = int(saved_world) * int(saved_batch), int(world_size) * int(batch_size)
    consumed = int(state.get("structures", batches * old_global))
    if new_global == old_global:
        return consumed // new_global, consumed % new_global
    if not allow_change:
        hint = (f"run with --optim.batch_size={old_global // world_size}" if old_global % world_size == 0
                else f"no per-process batch_size gives {old_global} with {world_size} processes")
        raise WorldSizeChangeError(
            f"the checkpoint was written by {saved_world} process(es) x batch_size {saved_batch} = {old_global} "
            f"structures per batch; this run has {world_size} process(es) x batch_size {batch_size} = {new_global}. "
            f"An exact continuation needs processes x optim.batch_size = {old_global} ({hint}); pass {flag} to "
            f"continue with {new_global} per batch instead (not the same run: steps per epoch, the learning-rate "
            "schedule and the gradient noise change)")
    return consumed // new_global, consumed % new_global
