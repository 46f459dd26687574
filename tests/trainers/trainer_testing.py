"""Helpers shared by the training tests: tiny EMT LMDBs, tiny configs, run folders.

Imported as ``trainers.trainer_testing`` (the tests folder is on ``sys.path`` through its
conftest), a name that no other test package uses.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np


def emt_slabs(count: int, seed: int, relaxed: bool = False, labelled: bool = True) -> list[Any]:
    """Rattled Cu(111) 2x2x3 slabs with an O or H adatom; EMT energy and forces.

    The bottom layer is fixed. ``relaxed`` adds IS2RE fields (``y_relaxed``, ``y_init``,
    ``pos_relaxed``) instead of ``y``/``force``; ``labelled=False`` leaves both out.
    """
    from ase.build import add_adsorbate, fcc111
    from ase.calculators.emt import EMT
    from ase.constraints import FixAtoms

    from spinconv_train.datasets.ase_convert import atoms_to_data

    rng = np.random.default_rng(seed)
    records = []
    for k in range(count):
        slab = fcc111("Cu", size=(2, 2, 3), vacuum=6.0)
        slab.set_tags([1 if atom.position[2] > slab.positions[:, 2].max() - 0.1 else 0 for atom in slab])
        add_adsorbate(slab, "O" if k % 2 == 0 else "H", 1.6 + 0.3 * rng.random(), "fcc")
        tags = slab.get_tags()
        tags[-1] = 2
        slab.set_tags(tags)
        bottom = slab.positions[:, 2] < slab.positions[:, 2].min() + 0.1
        slab.set_constraint(FixAtoms(mask=bottom))
        slab.positions += rng.normal(scale=0.08, size=slab.positions.shape) * (~bottom)[:, None]
        slab.calc = EMT()
        energy, forces = slab.get_potential_energy(), slab.get_forces()
        if relaxed:
            data = atoms_to_data(slab, sid=1000 + k, fid=0)
            data.y_init = float(energy)
            data.y_relaxed = float(energy) - 0.3 - 0.05 * k
            data.pos_relaxed = data.pos.clone()
            del data.fid
        elif labelled:
            data = atoms_to_data(slab, energy=energy, forces=forces, sid=k // 2, fid=k % 2)
        else:
            data = atoms_to_data(slab, sid=k // 2, fid=k % 2)
        records.append(data)
    return records


def emt_frames(seed: int, n: int = 3, labelled: bool = True) -> list[Any]:
    """A Cu(111)+O slab (bottom layer fixed, OC20 tags) rattled ``n`` times as ASE Atoms,
    with EMT energy and forces stored as calculator results unless ``labelled`` is False."""
    from ase.build import add_adsorbate, fcc111
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.constraints import FixAtoms

    rng = np.random.default_rng(seed)
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=6.0)
    slab.set_constraint(FixAtoms(mask=slab.get_tags() == 3))
    add_adsorbate(slab, "O", 1.6, "fcc")
    slab.set_tags([0] * 4 + [1] * 8 + [2])
    frames = []
    for _ in range(n):
        atoms = slab.copy()
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        if labelled:
            atoms.calc = EMT()
            e, f = atoms.get_potential_energy(), atoms.get_forces(apply_constraint=False)
            atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f)
        frames.append(atoms)
    return frames


def write_ase_inputs(folder, frames_per_file: int = 3) -> list[Any]:
    """``in0.traj``, ``in1.extxyz`` and ``in2.db`` of ``emt_frames(k)`` in ``folder``;
    returns ``[(path, frames), ...]``."""
    from ase.io import write

    files = []
    for k, ext in enumerate(("traj", "extxyz", "db")):
        path = os.path.join(str(folder), f"in{k}.{ext}")
        frames = emt_frames(k, frames_per_file)
        if ext == "db":
            for atoms in frames:
                write(path, atoms, format="db", append=True)
        else:
            write(path, frames)
        files.append((path, frames))
    return files


def write_split(folder: str, records: list[Any]) -> str:
    from spinconv_train.atomic_files import save_npz_atomic
    from spinconv_train.datasets.lmdb_io import write_lmdb

    os.makedirs(folder, exist_ok=True)
    write_lmdb(os.path.join(folder, "data.lmdb"), records)
    save_npz_atomic(os.path.join(folder, "metadata.npz"),
                    natoms=np.array([int(r.natoms) for r in records], dtype=np.int64))
    return folder


TINY_SCHNET = {"name": "schnet", "hidden_channels": 16, "num_filters": 16, "num_interactions": 2,
               "num_gaussians": 16, "cutoff": 5.0, "max_neighbors": 20}


def tiny_config(data: dict[str, str], trainer: str = "forces", **optim: Any) -> dict[str, Any]:
    """A small config dict for ``trainer`` on the fixture splits."""
    base_optim = {"batch_size": 2, "eval_batch_size": 4, "lr_initial": 1e-3, "max_epochs": 1,
                  "optimizer": "Adam", "optimizer_params": {"amsgrad": True}, "force_coefficient": 10}
    base_optim.update(optim)
    return {
        "trainer": trainer,
        "seed": 0,
        "dataset": {split: {"src": path} for split, path in data.items()},
        "task": {"dataset": "lmdb"},
        "model": dict(TINY_SCHNET, regress_forces=(trainer == "forces")),
        "optim": base_optim,
        "logger": {"backends": [], "print_every": 2, "progress_bar": False},
    }


def write_config(folder, config: dict[str, Any], name: str = "config.yml") -> str:
    """Write ``config`` as YAML into ``folder``; return the path."""
    import yaml

    path = os.path.join(str(folder), name)
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle)
    return path


def read_jsonl(run_dir: str, split: str) -> list[dict[str, Any]]:
    """The rows of ``run_dir/metrics.jsonl`` for ``split``."""
    import json

    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        return [row for row in map(json.loads, handle) if row["split"] == split]


def only_run_dir(parent) -> str:
    """The single run folder created under ``parent``."""
    runs = sorted(os.listdir(str(parent)))
    assert len(runs) == 1, runs
    return os.path.join(str(parent), runs[0])


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_script(name: str) -> Any:
    """``scripts/<name>.py`` imported as a module (its ``main`` callable in-process)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"script_{name}", os.path.join(ROOT, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
