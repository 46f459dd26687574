"""From a validated config to the objects of a run: model, datasets, loaders, task,
optimiser, scheduler, EMA, fitted target state."""
from __future__ import annotations

import inspect
import logging
import warnings
from typing import Any, List

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from spinconv_train.config import Config, ConfigError, check_dataset_paths
from spinconv_train.tasks.element_references import ElementReferences
from spinconv_train.tasks.normalizer import Normalizer
from spinconv_train.registry import DATASETS, MODELS, TRAINERS
from spinconv_train import distributed as dist
from spinconv_train.tasks.targets import TargetState, require_labels

logger = logging.getLogger(__name__)

_NORMALIZER_KEYS = {"mean", "std", "force_std"}


def _collate(items: List[Any]) -> Any:
    from spinconv_train.datasets import collate

    return collate(items)


def build_model(config: Config) -> torch.nn.Module:
    """Instantiate ``model.name`` with the section's other keys; unknown keys name the file."""
    section = dict(config["model"])
    name = section.pop("name")
    try:
        cls = MODELS.get(name)
    except KeyError as err:
        raise config.fail("model.name", str(err)) from None
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not takes_any:
        known = [k for k in params if k != "self"]
        for key in section:
            if key not in params:
                raise config.fail(f"model.{key}", f"unknown argument of model {name!r}; known: {', '.join(known)}")
    task_cls = task_class(config)
    if "regress_forces" in params and "regress_forces" not in section:
        section["regress_forces"] = task_cls.regress_forces
    try:
        model = cls(**section)
    except (TypeError, ValueError) as err:
        raise config.fail("model", f"cannot build model {name!r}: {err}") from None
    if config["optim"]["stress_coefficient"] > 0:
        if not getattr(task_cls, "regress_forces", False):
            raise config.fail("optim.stress_coefficient", f"stress is trained by the forces trainer, not "
                              f"{config['trainer']!r}")
        if not getattr(model, "supports_stress", False):
            raise config.fail("optim.stress_coefficient", f"model {name!r} does not compute the stress; use "
                              "an energy-centric SpinConv (force_estimator: grad, use_pbc: true)")
    return model.to(model_dtype(config))


def model_dtype(config: Config) -> torch.dtype:
    """The torch dtype of ``precision`` (float32 or float64)."""
    return torch.float64 if config.get("precision", "float32") == "float64" else torch.float32


def build_dataset(config: Config, split: str) -> Dataset:
    """The dataset of ``dataset.<split>``: class ``dataset.<split>.name`` or ``task.dataset``."""
    check_dataset_paths(config, [split])
    section = dict(config["dataset"][split])
    name = section.pop("name", None) or config["task"]["dataset"]
    try:
        cls = DATASETS.get(name)
    except KeyError as err:
        raise config.fail("task.dataset", str(err)) from None
    try:
        dataset = cls(section)
    except (ValueError, KeyError, TypeError) as err:
        raise config.fail(f"dataset.{split}", f"{type(err).__name__}: {err}") from None
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


def train_loader(dataset: Dataset, batch_size: int, seed: int, num_workers: int) -> DataLoader:
    """A shuffled loader over this rank's share, balanced by atoms, with a resumable sampler."""
    from spinconv_train.datasets import BalancedBatchSampler

    sampler = BalancedBatchSampler(dataset, batch_size=batch_size, num_replicas=dist.get_world_size(),
                                   rank=dist.get_rank(), shuffle=True, seed=seed,
                                   natoms=dataset_natoms(dataset))
    # A private generator: creating loader iterators never draws from the global RNG.
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=_collate, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(seed), persistent_workers=False)


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int) -> DataLoader:
    """Sequential loader over this rank's share (indices rank, rank+W, ...): no padding,
    so sums over ranks count every structure exactly once."""
    indices = list(range(dist.get_rank(), len(dataset), dist.get_world_size()))
    return DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False,
                      collate_fn=_collate, num_workers=num_workers,
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
    state = TargetState()
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
    loader = DataLoader(Subset(dataset, indices.tolist()), batch_size=64, shuffle=False, collate_fn=_collate,
                        num_workers=config["optim"]["num_workers"])
    batches = tqdm(loader, desc="fitting normaliser", disable=not progress, leave=False)
    values = []
    for batch in batches:
        require_labels(probe, batch, "train")
        values.append(probe.referenced_target(batch))
    state.normalizer = Normalizer.fit(torch.cat(values, dim=0))
    logger.info("fitted %s on %d training structures", state.normalizer, take)
    return state


def task_class(config: Config) -> Any:
    """The trainer (task) class named by ``trainer``; an unknown name lists the known ones."""
    try:
        return TRAINERS.get(config["trainer"])
    except KeyError as err:
        raise config.fail("trainer", str(err)) from None


def build_task(config: Config, targets: TargetState) -> Any:
    return task_class(config)(config["task"], config["optim"], targets)


def monitored_metric(config: Config, task: Any) -> str:
    """``task.metric`` when set (it must be one the task computes), else the task's default."""
    metric = config["task"]["metric"] or task.default_metric
    if metric == "mae":  # the reference's configs say `metric: mae`
        metric = task.default_metric
    if metric not in task.metric_names():
        raise config.fail("task.metric", f"{metric!r} is not computed by trainer {config['trainer']!r}; "
                          f"choose one of {', '.join(task.metric_names())}")
    return metric


def resolve_device(cpu: bool) -> torch.device:
    return dist.local_device(prefer_cpu=cpu)


def warn_amp_on_cpu(amp: bool, device: torch.device) -> bool:
    """AMP runs on CUDA only; on CPU the flag is ignored with a warning."""
    if amp and device.type != "cuda":
        warnings.warn("--amp needs a CUDA device; training in float32 on CPU", RuntimeWarning, stacklevel=2)
        return False
    return amp


def require_split(config: Config, split: str) -> None:
    if split not in config["dataset"]:
        raise ConfigError(f"{config.origin('dataset')}: key 'dataset.{split}': this mode needs the "
                          f"split but the config has none")

