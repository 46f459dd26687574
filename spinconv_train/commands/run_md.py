"""Molecular dynamics with a trained force model (ASE integrators, our calculator).

    spinconv-md --checkpoint runs/<run>/best_checkpoint.pt --structure POSCAR \\
        --ensemble nve --timestep 0.5 --steps 2000 --temperature 300 --output-dir md_out

``--structure`` is any file ASE reads (its last frame), or ``--molecule NAME`` one of ASE's
g2 molecules. Writes ``md.traj`` (every ``--interval``-th frame), ``md.csv`` (energies,
temperature, volume, conserved energy), ``md.png`` (energy drift and temperature against
step) and ``summary.json`` (steps, ms per step, energy errors) into ``--output-dir``, and
prints a progress line (step, time, temperature, energies) to stderr every ``--print-every``
steps (``--quiet``: none). Several ``--checkpoint`` files form a committee: the dynamics
follow their mean and ``md.csv`` logs their spread (``max_forces_std_ev_a``).
Energy-centric models conserve energy in NVE; see ``spinconv_train/md/dynamics.py`` for
the grid projection's caveat.

``spinconv-md`` is installed with the package; from a checkout ``python scripts/run_md.py`` is the same.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from spinconv_train.commands import add_model_arguments, check_model_arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, nargs="+",
                   help="checkpoint.pt of a `trainer: forces` run; several: a committee (their mean drives the "
                        "dynamics, their spread is logged as max_forces_std)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--structure", help="a structure file ASE can read (last frame used)")
    source.add_argument("--molecule", help="an ASE g2 molecule name, e.g. CH3CH2OH")
    p.add_argument("--ensemble", choices=("nve", "langevin", "nvt", "npt"), default="nve",
                   help="nvt: Nose-Hoover chain thermostat; npt: isotropic MTK barostat + thermostat (needs a "
                        "periodic cell and an energy-centric model)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--timestep", type=float, default=0.5, help="fs")
    p.add_argument("--temperature", type=float, default=300.0, help="K: initial velocities and thermostat")
    p.add_argument("--friction", type=float, default=0.01, help="Langevin friction per fs")
    p.add_argument("--pressure", type=float, default=1.0, help="bar (npt)")
    p.add_argument("--thermostat-fs", type=float, default=None,
                   help="nvt / npt thermostat damping time (default 100 steps)")
    p.add_argument("--barostat-fs", type=float, default=None, help="npt barostat damping time (default 1000 steps)")
    p.add_argument("--interval", type=int, default=10, help="log and trajectory every N steps")
    p.add_argument("--print-every", type=int, default=100,
                   help="print a progress line (step, time, T, energies) to stderr every N steps")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--max-force-std", type=float, default=None,
                   help="with several --checkpoint files: stop once the committee's largest per-atom force "
                        "spread exceeds this (eV/Å) and write that structure to uncertain.extxyz")
    p.add_argument("--seed", type=int, default=0)
    add_model_arguments(p, "the same forces, much less time per step for small systems")
    p.add_argument("--output-dir", default="md_out")
    args = p.parse_args(argv)
    if args.print_every < 1:
        p.error(f"--print-every must be >= 1, got {args.print_every}")
    check_model_arguments(p, args)
    return args


def progress_printer(steps: int, timestep_fs: float, stream=None) -> Callable[[int, Any], None]:
    """A ``run_md`` progress callback printing ``step s/N  t .. fs  T .. K  E_pot .. eV
    E_tot .. eV  .. ms/step`` lines (to stderr unless ``stream``)."""
    start = time.perf_counter()

    def show(step: int, atoms: Any) -> None:
        potential = float(atoms.get_potential_energy())
        total = potential + float(atoms.get_kinetic_energy())
        rate = 1000.0 * (time.perf_counter() - start) / step if step else float("nan")
        print(f"step {step}/{steps}  t {step * timestep_fs:.1f} fs  T {atoms.get_temperature():.1f} K  "
              f"E_pot {potential:.4f} eV  E_tot {total:.4f} eV" + (f"  {rate:.1f} ms/step" if step else ""),
              file=stream if stream is not None else sys.stderr, flush=True)

    return show


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ase.build import molecule
    from ase.io import read

    from spinconv_train.calculators import ModelCalculator
    from spinconv_train.calculators.committee import CommitteeCalculator
    from spinconv_train.checkpoints.store import CheckpointError
    from spinconv_train.md.dynamics import md_caveats, run_md

    try:
        atoms = read(args.structure, index=-1) if args.structure else molecule(args.molecule)
    except (OSError, KeyError, ValueError) as err:
        print(f"error: cannot read the structure {args.structure or args.molecule!r}: {err}", file=sys.stderr)
        return 2
    try:
        if len(args.checkpoint) == 1:
            atoms.calc = ModelCalculator.from_checkpoint(args.checkpoint[0], device=args.device,
                                                         use_ema=not args.no_ema, cuda_graphs=args.cuda_graphs)
        else:
            atoms.calc = CommitteeCalculator.from_checkpoints(args.checkpoint, device=args.device,
                                                              use_ema=not args.no_ema, cuda_graphs=args.cuda_graphs)
    except (CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    models = atoms.calc.models if len(args.checkpoint) > 1 else [atoms.calc.model]
    caveats = sorted({line for model in models for line in md_caveats(model, atoms)})
    for line in caveats:
        print(f"note: {line}", file=sys.stderr)
    os.makedirs(args.output_dir, exist_ok=True)
    try:
        log = run_md(atoms, args.steps, args.timestep, args.ensemble, args.temperature, args.friction, args.seed,
                     args.interval, trajectory=os.path.join(args.output_dir, "md.traj"), pressure_bar=args.pressure,
                     thermostat_fs=args.thermostat_fs, barostat_fs=args.barostat_fs,
                     max_forces_std=args.max_force_std,
                     progress=None if args.quiet else progress_printer(args.steps, args.timestep),
                     progress_every=args.print_every)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    log.write_csv(os.path.join(args.output_dir, "md.csv"))
    from spinconv_train.plots.md import write_md_plot

    write_md_plot(args.output_dir)
    if log.stopped_at is not None:
        from ase.io import write

        stopped = atoms.copy()
        stopped.info["md_step"] = log.stopped_at
        write(os.path.join(args.output_dir, "uncertain.extxyz"), stopped, format="extxyz")
        print(f"note: stopped early, {log.stop_reason}; structure in uncertain.extxyz", file=sys.stderr)
    summary = {
        "atoms": len(atoms), "ensemble": args.ensemble, "steps": args.steps, "timestep_fs": args.timestep,
        "ms_per_step": 1000.0 * log.seconds / max(args.steps if log.stopped_at is None else log.stopped_at, 1),
        "mean_temperature_k": float(sum(log.temperature) / len(log.temperature)),
        "max_total_energy_error_ev": log.max_energy_error(),
        "max_conserved_energy_error_ev": log.max_conserved_error(),
        "final_volume_a3": log.volume[-1] if log.volume else 0.0,
        "mean_pressure_bar": float(np.nanmean(log.pressure)) if log.pressure and not np.isnan(log.pressure).all()
        else None,
        "model_caveats": caveats,
        "committee_members": len(args.checkpoint),
        "cuda_graphs": bool(args.cuda_graphs),
        "max_forces_std_ev_a": float(np.nanmax(log.max_forces_std)) if len(args.checkpoint) > 1 else None,
        "stopped_at_step": log.stopped_at,
        "stop_reason": log.stop_reason,
    }
    from spinconv_train.atomic_files import write_text_atomic

    write_text_atomic(os.path.join(args.output_dir, "summary.json"), json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
