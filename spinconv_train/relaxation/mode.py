"""``--mode run-relaxations``: relax every structure of ``task.relax_dataset`` with the
checkpoint's force model and write ``relaxations.npz`` (+ ``relaxed_positions.npz`` in the
reference's IS2RS submission layout, ``relaxation_metrics.json``,
``relaxed.extxyz`` with the relaxed structures unless ``task.write_relaxed_structures: false``,
``relaxation_energies.png`` with each structure's energy against step,
+ ``trajectories/<sid>_<fid>.traj`` when
``task.write_trajectories``) in the run directory."""
from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from spinconv_train import distributed as dist
from spinconv_train.atomic_files import save_npz_atomic, write_text_atomic
from spinconv_train.calculators.batched import BatchEvaluator
from spinconv_train.calculators.calculator import ModelCalculator, require_forces_task
from spinconv_train.calculators.predict import predict_atoms
from spinconv_train.checkpoints import CheckpointError, build_model, load
from spinconv_train.config import Config, check_source_paths
from spinconv_train.datasets import DatasetError
from spinconv_train.graph import atoms_cut_by_cap, binding_cap_message
from spinconv_train.plots.relaxation import write_relaxation_plot
from spinconv_train.registry import DATASETS
from spinconv_train.relaxation.metrics import relaxation_metrics
from spinconv_train.relaxation.output import submission_arrays, write_relaxations, write_relaxed_structures
from spinconv_train.relaxation.runner import RelaxResult, relax_indices
from spinconv_train.relaxation.settings import RelaxSettings, relax_settings
from spinconv_train.rundir import RunOptions, open_run_dir, start_process
from spinconv_train.tables import format_table
from spinconv_train.tasks.build import task_class
from spinconv_train.tasks.data import check_embedding_covers
from spinconv_train.tasks.protocol import Task

logger = logging.getLogger(__name__)

RELAXATIONS = "relaxations.npz"
SUBMISSION = "relaxed_positions.npz"  # the reference's IS2RS submission file
METRICS = "relaxation_metrics.json"
STRUCTURES = "relaxed.extxyz"


def warn_binding_cap(model: torch.nn.Module, dataset: Dataset, indices: Sequence[int]) -> str | None:
    """An energy-centric model relaxes along -dE/dx, and a neighbour cap that binds makes that
    energy jump: warn once, naming the structures whose neighbour lists it cuts (and how many
    atoms), and return the message; None when no cap binds or the model is force-centric."""
    cap, cutoff = getattr(model, "max_num_neighbors", None), getattr(model, "cutoff", None)
    if cap is None or cutoff is None or getattr(model, "direct_forces", True):
        return None
    counts, names, natoms = [], [], []
    for index in indices:
        record = dataset[int(index)]
        counts.append(atoms_cut_by_cap(record.pos, record.natoms.reshape(-1), getattr(record, "cell", None),
                                       getattr(record, "pbc", None), float(cutoff), cap))
        sid = getattr(record, "sid", None)
        names.append(f"sid {sid}" if sid is not None else f"structure {index}")
        natoms.append(int(record.natoms))
    if not counts:
        return None
    message = binding_cap_message(np.concatenate(counts), names, np.array(natoms), float(cutoff), cap)
    if message:
        warnings.warn(message, UserWarning, stacklevel=2)
    return message


def build_relax_dataset(config: Config, settings: RelaxSettings) -> Dataset:
    """The dataset of ``task.relax_dataset`` (class ``name``, default ``lmdb``)."""
    section = dict(settings.dataset)
    name = section.pop("name", "lmdb")
    src = section["src"]
    check_source_paths(config, "task.relax_dataset.src", src)
    try:
        cls = DATASETS.get(name)
    except KeyError as err:
        raise config.fail("task.relax_dataset.name", str(err)) from None
    try:
        dataset = cls(section)
    except DatasetError:
        raise  # names the file and record already
    except (ValueError, KeyError, TypeError) as err:
        raise config.fail("task.relax_dataset", f"{type(err).__name__}: {err}") from None
    if len(dataset) == 0:
        raise config.fail("task.relax_dataset.src", f"{src!r} holds no structures")
    return dataset


def relax_calculator(model: torch.nn.Module, task: Task, device: torch.device,
                     batch_size: int) -> ModelCalculator | BatchEvaluator:
    """The model as one structure's calculator (``batch_size`` 1) or as the batched
    evaluator of ``batch_size`` structures relaxed together."""
    if batch_size <= 1:
        return ModelCalculator(model, task, device)

    def predict(frames: list[Any], stress: bool) -> list[dict[str, Any]]:
        return predict_atoms(model, task, frames, batch_size=len(frames), stress=stress, device=device)

    return BatchEvaluator(predict, supports_stress=bool(getattr(model, "supports_stress", False)))


def run_relaxations(config: Config, options: RunOptions) -> dict[str, float]:
    """Run the mode (``options``: the command line's run options); return the metrics."""
    settings = relax_settings(config)
    source = f"checkpoint {options.checkpoint!r}" if options.checkpoint else config.origin("trainer")
    require_forces_task(task_class(config), config["trainer"], source)
    dataset = build_relax_dataset(config, settings)
    if settings.options.relax_cell and not getattr(build_model(config), "supports_stress", False):
        raise config.fail("task.relax_opt.relax_cell", "relaxing the cell needs the stress, which only an "
                          "energy-centric SpinConv (force_estimator: grad, use_pbc: true) computes")
    device = start_process(config, options.cpu)
    if not options.checkpoint:
        raise CheckpointError("--mode run-relaxations needs --checkpoint (a checkpoint.pt of a trained run)")
    built = load(options.checkpoint, config).to(device)
    check_embedding_covers(built.model, dataset, "relax")
    run_dir, loggers = open_run_dir(config, options, "run-relaxations")
    logger.info("run directory %s", run_dir)
    try:
        calculator = relax_calculator(built.eval_model, built.task, device, settings.options.batch_size)
        traj_dir = os.path.join(run_dir, "trajectories") if settings.write_trajectories else None
        progress = bool(options.progress and config["logger"]["progress_bar"] and dist.is_main())
        indices = range(dist.get_rank(), len(dataset), dist.get_world_size())
        warn_binding_cap(built.eval_model, dataset, indices)
        mine = relax_indices(dataset, indices, calculator, settings.options, traj_dir, progress,
                             source=str(settings.dataset["src"]))
        results: list[RelaxResult] = sorted((r for part in dist.gather_objects(mine) for r in part),
                                            key=lambda r: r.index)
        metrics = relaxation_metrics(results)
        if dist.is_main():
            path = write_relaxations(os.path.join(run_dir, RELAXATIONS), results)
            save_npz_atomic(os.path.join(run_dir, SUBMISSION), **submission_arrays(results))
            if settings.write_relaxed_structures:  # off for very large sets (e.g. all of OC20's IS2RE val)
                write_relaxed_structures(os.path.join(run_dir, STRUCTURES), dataset, results)
            write_text_atomic(os.path.join(run_dir, METRICS), json.dumps(metrics, indent=2))
            write_relaxation_plot(run_dir, results)
            loggers.log(metrics, 0, "relax")
            print(f"relaxed {len(results)} structures ({settings.options.name}, fmax {settings.options.fmax}, "
                  f"at most {settings.options.steps} steps); written to {path}", flush=True)
            print("relaxation metrics:\n" + format_table({"relaxed": metrics}), flush=True)
    finally:
        loggers.close()
    return metrics
