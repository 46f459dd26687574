"""Parity plots: predicted against reference energies and force components, MAE in the legend.

``predictions.npz`` of ``--mode predict`` holds predictions only (ids, energies, free-atom
forces, free-atom counts); the references come from the labelled dataset the predictions
were made on: the run's ``config.yml`` ``dataset.<split>`` (``test`` unless another split
was predicted), or another source given, matched
by structure id (``"{sid}_{fid}"``) and checked by structure count and free-atom count
(predictions hold no positions, so a different split with the same ids and sizes cannot be
told apart: give the split that was predicted on).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from spinconv_train.plots.figure import new_figure, save_png

PREDICTIONS = "predictions.npz"
FILE_NAME = "parity.png"
UNITS = {"energy": "eV", "forces": "eV/Å"}

Pair = tuple[np.ndarray, np.ndarray]  # (predicted, reference), same shape


class ParityError(ValueError):
    """Predictions that cannot be paired with references: names the file and what is missing."""


def parity_figure(pairs: Mapping[str, Pair], title: str = "") -> Any:
    """One axes per quantity of ``pairs`` (``energy``: one point per structure; ``forces``:
    one point per free-atom force component), the line y = x, MAE and count in the legend."""
    fig = new_figure(1, len(pairs), width=4.2, height=4.0)
    for ax, (name, (pred, ref)) in zip(fig.axes, pairs.items()):
        pred, ref = np.asarray(pred, dtype=np.float64).ravel(), np.asarray(ref, dtype=np.float64).ravel()
        unit = UNITS.get(name, "")
        mae = float(np.abs(pred - ref).mean()) if len(pred) else float("nan")
        ax.scatter(ref, pred, s=6, alpha=0.5, label=f"MAE {mae:.4g} {unit} (n={len(pred)})")
        if len(pred):
            low, high = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
            ax.plot([low, high], [low, high], color="black", linewidth=0.8, label="_y=x")
        ax.set_xlabel(f"reference {name} ({unit})")
        ax.set_ylabel(f"predicted {name} ({unit})")
        ax.set_title(f"{title} {name}".strip())
        ax.legend(loc="upper left", fontsize="small")
    return fig


def _record_id(record: Any, index: int) -> str:
    """The id ``predictions.npz`` gives a record (``trainers/targets.structure_ids``)."""
    def scalar(value: Any) -> Any:
        return value.reshape(-1).tolist()[0] if hasattr(value, "reshape") else value

    sid, fid = getattr(record, "sid", None), getattr(record, "fid", None)
    sid = index if sid is None else scalar(sid)
    return f"{sid}" if fid is None else f"{sid}_{scalar(fid)}"


def _run_dataset(run_dir: str, labels_src: str | None, split: str) -> tuple[Any, Any, str]:
    """(dataset, config, source description) holding the references of ``run_dir``'s predictions."""
    from spinconv_train.config import load_config
    from spinconv_train.datasets import LmdbDataset
    from spinconv_train.registry import DATASETS

    config_path = os.path.join(run_dir, "config.yml")
    if not os.path.exists(config_path):
        raise ParityError(f"{run_dir}: no config.yml (is this a run folder of main.py?)")
    config = load_config(config_path)
    if labels_src is not None:
        if not os.path.exists(labels_src):
            raise ParityError(f"--labels {labels_src!r} does not exist")
        return LmdbDataset({"src": labels_src}), config, labels_src
    section = dict((config.get("dataset") or {}).get(split) or {})
    if "src" not in section:
        raise ParityError(f"{config_path}: no dataset.{split}.src to take references from; give the labelled source")
    name = section.pop("name", None) or config["task"]["dataset"]
    src = section["src"]
    if isinstance(src, str) and not os.path.exists(src):
        raise ParityError(f"{config_path}: dataset.{split}.src {src!r} does not exist here (run from the folder "
                          "the run was started in, or give the labelled source)")
    return DATASETS.get(name)(section), config, f"dataset.{split}.src {src!r}"


def prediction_pairs(run_dir: str, labels_src: str | None = None, split: str = "test") -> dict[str, Pair]:
    """``{"energy": (pred, ref)[, "forces": (pred, ref)]}`` for ``run_dir/predictions.npz``,
    the references read from ``labels_src`` (an LMDB folder or file) or the run config's
    ``dataset.<split>`` (the split predicted: ``test`` unless ``--mode predict --split`` chose another)."""
    path = os.path.join(run_dir, PREDICTIONS)
    if not os.path.exists(path):
        raise ParityError(f"{run_dir}: no {PREDICTIONS} (run `main.py --mode predict` first)")
    with np.load(path) as npz:
        pred = {key: npz[key] for key in npz.files}
    dataset, config, source = _run_dataset(run_dir, labels_src, split)
    forces_task = config["trainer"] == "forces"
    energy_field = "y" if forces_task else (config["task"].get("target") or "y_relaxed")
    if pred["energy"].ndim != 1:
        raise ParityError(f"{path}: energy has {pred['energy'].shape[1]} targets per structure; parity plots "
                          "cover single-target runs")
    if len(dataset) != len(pred["ids"]):
        raise ParityError(f"{path} covers {len(pred['ids'])} structures but {source} holds {len(dataset)}: not "
                          "the split the predictions were made on")
    eval_free = bool(config["task"].get("eval_on_free_atoms", True))
    position = {}
    for index in range(len(dataset)):
        position.setdefault(_record_id(dataset[index], index), index)
    ref_energy = np.empty(len(pred["ids"]))
    ref_forces = []
    for k, ident in enumerate(pred["ids"].tolist()):
        if ident not in position:
            raise ParityError(f"{path}: structure id {ident!r} is not in {source}")
        record = dataset[position[ident]]
        value = getattr(record, energy_field, None)
        if value is None:
            raise ParityError(f"{source}, record {position[ident]}: no {energy_field!r} label; parity needs the "
                              "labelled split the predictions were made on")
        ref_energy[k] = float(np.asarray(value, dtype=np.float64).reshape(-1)[0])
        if forces_task and "forces" in pred:
            force = getattr(record, "force", None)
            if force is None:
                raise ParityError(f"{source}, record {position[ident]}: no 'force' label")
            force = np.asarray(force, dtype=np.float64)
            fixed = getattr(record, "fixed", None)
            if eval_free and fixed is not None:
                force = force[np.asarray(fixed).reshape(-1) == 0]
            if len(force) != int(pred["natoms"][k]):
                raise ParityError(f"{path}: structure {ident!r} has {int(pred['natoms'][k])} predicted atom "
                                  f"forces but {len(force)} in {source}")
            ref_forces.append(force)
    pairs = {"energy": (pred["energy"].astype(np.float64), ref_energy)}
    if ref_forces:
        pairs["forces"] = (pred["forces"].astype(np.float64), np.concatenate(ref_forces))
    return pairs


def write_parity(run_dir: str, path: str, labels_src: str | None = None, split: str = "test") -> str:
    """Write the parity plot of ``run_dir``'s predictions to ``path`` (PNG)."""
    title = os.path.basename(os.path.normpath(run_dir))
    return save_png(parity_figure(prediction_pairs(run_dir, labels_src, split), title), path)
