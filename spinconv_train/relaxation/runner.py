"""Relax structures with an ASE optimiser, each with its own optimiser history (unlike the
reference's batch-shared L-BFGS): one after another, or several at once with batched
model calls (``calculators/batched.py``).

``relax_indices`` is a plain function over a list of dataset indices, so that processes
can split the work (``indices[rank::world_size]``) and gather the results.
"""
from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ase.optimize
import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from tqdm import tqdm

from spinconv_train.atomic_files import atomic_path
from spinconv_train.calculators.batched import BatchEvaluator, run_batched
from spinconv_train.calculators.convert import free_atoms, record_to_atoms
from spinconv_train.relaxation.settings import OPTIMIZERS, RelaxOptions


@dataclass
class RelaxResult:
    """The outcome of one relaxation, with the reference fields of its record (if any)."""

    index: int
    sid: Any
    positions: np.ndarray  # (N, 3) relaxed, Å
    initial_positions: np.ndarray  # (N, 3) Å
    energy: float  # model energy at the relaxed positions, eV
    steps: int
    converged: bool
    fmax: float  # largest free-atom force norm at the relaxed positions, eV/Å
    free: np.ndarray  # (N,) bool
    cell: np.ndarray  # (3, 3)
    pbc: np.ndarray  # (3,) bool
    y_relaxed: float | None = None
    pos_relaxed: np.ndarray | None = None
    energies: list[float] | None = None  # model energy at the start and after each step, eV


def make_optimizer(atoms: Atoms, options: RelaxOptions, trajectory: str | None = None) -> ase.optimize.optimize.Optimizer:
    """The ASE optimiser named by ``options`` on ``atoms`` (no log output); with
    ``options.relax_cell`` it moves the cell too (ASE's ``FrechetCellFilter``: the
    convergence test then covers the stress times the volume as well)."""
    cls = getattr(ase.optimize, OPTIMIZERS[options.name][0])
    target = atoms
    if options.relax_cell:
        from ase.filters import FrechetCellFilter

        target = FrechetCellFilter(atoms)
    return cls(target, logfile=None, trajectory=trajectory, maxstep=options.maxstep, **options.extra)


def relax_atoms(atoms: Atoms, options: RelaxOptions, trajectory: str | None = None,
                energies: list[float] | None = None) -> tuple:
    """Relax ``atoms`` (its calculator attached) in place until the largest free-atom force
    norm is below ``options.fmax`` or ``options.steps`` steps were taken; returns
    ``(steps, converged)``. ``trajectory`` is written via a temporary file and renamed;
    ``energies``, if given, receives the energy of every visited structure (the start included)."""
    output = atomic_path(trajectory, suffix=".traj") if trajectory is not None else contextlib.nullcontext()
    with output as tmp, make_optimizer(atoms, options, tmp) as optimizer:
        if energies is not None:
            optimizer.attach(lambda: energies.append(float(atoms.get_potential_energy())))
        converged = bool(optimizer.run(fmax=options.fmax, steps=options.steps))
        steps = int(optimizer.nsteps)
    return steps, converged


def _scalar(value: Any) -> Any:
    """A record field as a plain Python number or string."""
    if value is None:
        return None
    if hasattr(value, "reshape") and hasattr(value, "tolist"):
        flat = value.reshape(-1).tolist()
        return flat[0] if len(flat) == 1 else flat
    return value


def trajectory_name(record: Any, sid: Any) -> str:
    """``<sid>_<fid>.traj`` (``<sid>.traj`` for a record without ``fid``), the ids of
    ``predictions.npz``: unique also when several frames of one system are relaxed."""
    fid = _scalar(getattr(record, "fid", None))
    return f"{sid}.traj" if fid is None else f"{sid}_{fid}.traj"


def relax_record(dataset: Any, index: int, calculator: Calculator, options: RelaxOptions,
                 trajectory_dir: str | None = None, source: str = "") -> RelaxResult:
    """Relax record ``index`` of ``dataset`` with ``calculator`` (see ``relax_indices``)."""
    record = dataset[int(index)]
    atoms = record_to_atoms(record, source, int(index))
    initial = atoms.get_positions().copy()
    atoms.calc = calculator
    sid = _scalar(getattr(record, "sid", None))
    sid = int(index) if sid is None else sid
    trajectory = None if trajectory_dir is None else os.path.join(trajectory_dir, trajectory_name(record, sid))
    energies: list[float] = []
    steps, converged = relax_atoms(atoms, options, trajectory, energies)
    free = free_atoms(atoms)
    forces = atoms.get_forces()  # constrained: fixed atoms at zero
    pos_relaxed = getattr(record, "pos_relaxed", None)
    return RelaxResult(
        index=int(index), sid=sid, positions=atoms.get_positions(), initial_positions=initial,
        energy=float(atoms.get_potential_energy()), steps=steps, converged=converged,
        fmax=float(np.linalg.norm(forces, axis=1).max()) if len(atoms) else 0.0,
        free=free, cell=np.asarray(atoms.get_cell(), dtype=np.float64), pbc=np.asarray(atoms.pbc, dtype=bool),
        y_relaxed=None if getattr(record, "y_relaxed", None) is None else float(_scalar(record.y_relaxed)),
        pos_relaxed=None if pos_relaxed is None else np.asarray(pos_relaxed, dtype=np.float64).reshape(-1, 3),
        energies=energies)


def relax_indices(dataset: Any, indices: Sequence[int], calculator: Calculator | BatchEvaluator,
                  options: RelaxOptions, trajectory_dir: str | None = None, progress: bool = False,
                  source: str = "") -> list[RelaxResult]:
    """Relax records ``indices`` of ``dataset``; one result per index, in ``indices`` order.

    ``calculator``: an ASE calculator (structures one after another), or a
    ``BatchEvaluator`` (``options.batch_size`` structures at a time, each with its own
    optimiser, sharing batched model calls: ``calculators/batched.py``). With ``trajectory_dir``
    each relaxation is written to ``trajectory_dir`` (see ``trajectory_name``).
    """
    indices = [int(i) for i in indices]
    bar = tqdm(total=len(indices), desc="relaxing", disable=not progress, unit="system")
    lock = threading.Lock()

    def relax_one(index: int, calc: Calculator) -> RelaxResult:
        result = relax_record(dataset, index, calc, options, trajectory_dir, source)
        with lock:
            bar.update(1)
        return result

    try:
        if isinstance(calculator, BatchEvaluator):
            return run_batched(indices, relax_one, calculator, options.batch_size)
        return [relax_one(index, calculator) for index in indices]
    finally:
        bar.close()
