"""A task's data: the datasets of the config's splits, their loaders, and the target state
(element references, normaliser) fitted on the training split."""
from __future__ import annotations

import logging
import signal
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from spinconv_train import distributed as dist
from spinconv_train.config import Config, ConfigError, check_dataset_paths
from spinconv_train.datasets import BalancedBatchSampler, check_atomic_numbers, collate
from spinconv_train.datasets.coverage import dataset_elements
from spinconv_train.datasets.strided import EveryKth
from spinconv_train.models.element_capacity import max_atomic_number
from spinconv_train.registry import DATASETS
from spinconv_train.tasks.element_references import ElementReferences
from spinconv_train.tasks.normalizer import Normalizer
from spinconv_train.tasks.targets import TargetState, require_labels

logger = logging.getLogger(__name__)

_NORMALIZER_KEYS = {"mean", "std", "force_std"}


def build_dataset(config: Config, split: str) -> Dataset:
    """The dataset of ``dataset.<split>``: class ``dataset.<split>.name`` or ``task.dataset``."""
    check_dataset_paths(config, [split])
    section = dict(config["dataset"][split])
    name = section.pop("name", None) or config["task"]["dataset"]
    every = section.pop("every", None)
    try:
        cls = DATASETS.get(name)
    except KeyError as err:
        raise config.fail("task.dataset", str(err)) from None
    try:
        dataset = cls(section)
    except (ValueError, KeyError, TypeError) as err:
        raise config.fail(f"dataset.{split}", f"{type(err).__name__}: {err}") from None
    if every is not None:
        try:
            dataset = EveryKth(dataset, every)
        except ValueError as err:
            raise config.fail(f"dataset.{split}.every", str(err)) from None
    if split != "test" and config["optim"]["stress_coefficient"] > 0 and len(dataset) > 0 \
            and getattr(dataset[0], "stress", None) is None:
        raise config.fail(f"dataset.{split}", f"optim.stress_coefficient > 0 needs records with a 'stress' "
                          f"field, and the first record of {section.get('src')!r} has none (write the LMDB "
                          "with scripts/preprocess_ef.py --stress)")
    return dataset


def dataset_natoms(dataset: Dataset) -> np.ndarray:
    """Atoms per structure (``get_natoms`` when the dataset has it, else a read pass)."""
    if hasattr(dataset, "get_natoms"):
        return np.asarray(dataset.get_natoms(), dtype=np.int64)
    return np.array([int(dataset[i].pos.shape[0]) for i in range(len(dataset))], dtype=np.int64)


def ignore_stop_signals(worker_id: int) -> None:
    """In a loader worker: ignore SIGTERM, SIGINT, SIGUSR1 and SIGUSR2. SLURM and a terminal
    signal every process of a job, and a worker that died of the signal would fail the
    training process before it could write its checkpoint; the training process ends its
    workers itself."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_IGN)


def train_loader(dataset: Dataset, batch_size: int, seed: int, num_workers: int) -> DataLoader:
    """A shuffled loader over this rank's share, balanced by atoms, with a resumable sampler."""
    sampler = BalancedBatchSampler(dataset, batch_size=batch_size, num_replicas=dist.get_world_size(),
                                   rank=dist.get_rank(), shuffle=True, seed=seed,
                                   natoms=dataset_natoms(dataset))
    # A private generator: creating loader iterators never draws from the global RNG.
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
                      worker_init_fn=ignore_stop_signals, generator=torch.Generator().manual_seed(seed), persistent_workers=False)


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int) -> DataLoader:
    """Sequential loader over this rank's share (indices rank, rank+W, ...): no padding,
    so sums over ranks count every structure exactly once."""
    indices = list(range(dist.get_rank(), len(dataset), dist.get_world_size()))
    return DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False,
                      collate_fn=collate, num_workers=num_workers, worker_init_fn=ignore_stop_signals,
                      generator=torch.Generator().manual_seed(0))


def fit_target_state(task_cls: Any, config: Config, dataset: Dataset, progress: bool) -> TargetState:
    """Element references and normaliser fitted on (a seeded subsample of) the training split,
    unless ``task.normalizer`` gives the statistics explicitly."""
    task_cfg = config["task"]
    n = len(dataset)
    if n == 0:
        raise config.fail("dataset.train.src", "the training split is empty")
    take = min(n, int(task_cfg["normalizer_fit_samples"]))
    indices = np.sort(np.random.default_rng(config["seed"]).choice(n, size=take, replace=False))
    state = TargetState(elements=dataset_elements(dataset, indices.tolist()))
    probe = task_cls(task_cfg, config["optim"], state)
    if task_cfg["element_references"]:
        if probe.num_targets > 1:
            raise config.fail("task.element_references", "element references need a single target")
        state.element_references = ElementReferences.fit(dataset, field=probe.energy_field, indices=indices.tolist())
    override = task_cfg["normalizer"]
    if not task_cfg["normalize_labels"]:
        return state
    if override:
        unknown = set(override) - _NORMALIZER_KEYS
        if unknown or not {"mean", "std"} <= set(override):
            raise config.fail("task.normalizer",
                              f"needs keys mean and std (optional force_std); got {sorted(override)}")
        state.normalizer = Normalizer(override["mean"], override["std"], override.get("force_std"))
        return state
    loader = DataLoader(Subset(dataset, indices.tolist()), batch_size=64, shuffle=False, collate_fn=collate,
                        num_workers=config["optim"]["num_workers"])
    batches = tqdm(loader, desc="fitting normaliser", disable=not progress, leave=False)
    values = []
    for batch in batches:
        require_labels(probe, batch, "train")
        values.append(probe.referenced_target(batch))
    state.normalizer = Normalizer.fit(torch.cat(values, dim=0))
    logger.info("fitted %s on %d training structures", state.normalizer, take)
    return state


def check_embedding_covers(model: torch.nn.Module, dataset: Dataset, split: str) -> None:
    """A ``DatasetError`` naming file and record when ``dataset`` holds an atomic number that
    ``model``'s element embedding has no row for (models without a known embedding: no check)."""
    max_z = max_atomic_number(model)
    if max_z is not None:
        check_atomic_numbers(dataset, max_z, split)


def require_split(config: Config, split: str) -> None:
    if split not in config["dataset"]:
        raise ConfigError(f"{config.origin('dataset')}: key 'dataset.{split}': this mode needs the "
                          f"split but the config has none")

