"""Generate MD17-style data with GFN2-xTB (tblite): Langevin MD, original MD17 npz format.

The molecule is pre-relaxed with xTB, given Maxwell-Boltzmann velocities at the target
temperature, equilibrated, then run with a Langevin thermostat; every ``--every``-th
step is kept. Output keys as the original MD17 release: ``z`` (n_atoms,), ``R``
(frames, n_atoms, 3) Å, ``E`` (frames, 1) kcal/mol, ``F`` (frames, n_atoms, 3)
kcal/mol/Å, plus ``name``, ``theory``, ``temperature_K``, ``timestep_fs``, ``every``,
``seed``. Deterministic for a seed (OMP_NUM_THREADS=1 is set before tblite loads;
with more threads tblite is also ~40x slower on these machines).
"""
from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402
from ase import Atoms, units  # noqa: E402
from ase.build import molecule  # noqa: E402
from ase.constraints import FixCom  # noqa: E402
from ase.md.langevin import Langevin  # noqa: E402
from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta  # noqa: E402
from ase.optimize import BFGS  # noqa: E402
from tqdm import tqdm  # noqa: E402

from spinconv_train.datasets.lmdb_io import save_npz_atomic  # noqa: E402

KCAL_PER_MOL = units.kcal / units.mol  # eV


def aspirin() -> Atoms:
    """A rough aspirin (C9H8O4) geometry with the right bonding, to be relaxed with xTB."""
    ring = [(1.40 * np.cos(np.radians(a)), 1.40 * np.sin(np.radians(a)), 0.0) for a in range(0, 360, 60)]
    ring_h = [(2.48 * np.cos(np.radians(a)), 2.48 * np.sin(np.radians(a)), 0.0) for a in (120, 180, 240, 300)]
    acid = [(2.88, 0.0, 0.0), (3.49, -1.05, 0.0), (3.56, 1.17, 0.0), (4.53, 1.17, 0.0)]  # C, =O, O, H
    ester = [(1.39, 2.40, 0.0), (1.39, 3.10, 1.17), (1.39, 4.30, 1.17), (1.39, 2.35, 2.47)]  # O, C, =O, CH3 C
    methyl_h = [(2.29, 2.35, 3.07), (0.49, 2.35, 3.07), (1.39, 1.33, 2.85)]
    symbols = "C6" + "H4" + "COOH" + "OCOC" + "H3"
    return Atoms(symbols, positions=ring + ring_h + acid + ester + methyl_h)


def initial_geometry(name: str) -> Atoms:
    """Starting geometry: ASE's g2 ethanol or the hand-built aspirin."""
    if name == "ethanol":
        return molecule("CH3CH2OH")
    if name == "aspirin":
        return aspirin()
    raise SystemExit(f"unknown molecule {name!r}: choose ethanol or aspirin")


def xtb_calculator():
    """GFN2-xTB from tblite, quiet."""
    from tblite.ase import TBLite

    return TBLite(method="GFN2-xTB", verbosity=0)


def run_md(name: str, frames: int, every: int = 10, temperature: float = 500.0, timestep: float = 0.5,
           friction: float = 0.01, equilibration: int = 1000, seed: int = 0, progress: bool = True) -> dict:
    """Run the MD and return the MD17 arrays (kcal/mol units)."""
    atoms = initial_geometry(name)
    atoms.calc = xtb_calculator()
    BFGS(atoms, logfile=None).run(fmax=0.01, steps=500)
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    ZeroRotation(atoms)
    atoms.set_constraint(FixCom())
    dyn = Langevin(atoms, timestep * units.fs, temperature_K=temperature, friction=friction / units.fs,
                   fixcm=False, rng=rng)
    dyn.run(equilibration)
    n = len(atoms)
    R = np.empty((frames, n, 3))
    E = np.empty((frames, 1))
    F = np.empty((frames, n, 3))
    for k in tqdm(range(frames), desc=f"{name} MD", disable=not progress):
        dyn.run(every)
        R[k] = atoms.get_positions()
        E[k, 0] = atoms.get_potential_energy() / KCAL_PER_MOL
        # the calculator's forces: with apply_constraint, FixCom's adjustment would give
        # them a net force that no translation-invariant energy has
        F[k] = atoms.get_forces(apply_constraint=False) / KCAL_PER_MOL
    return {
        "z": atoms.get_atomic_numbers().astype(np.int64), "R": R, "E": E, "F": F,
        "name": np.array(name), "theory": np.array("GFN2-xTB (tblite), Langevin MD"),
        "temperature_K": np.array(temperature), "timestep_fs": np.array(timestep),
        "every": np.array(every), "seed": np.array(seed),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--molecule", default="ethanol", choices=["ethanol", "aspirin"])
    parser.add_argument("--frames", type=int, default=2000, help="frames kept")
    parser.add_argument("--every", type=int, default=10, help="keep every N-th MD step")
    parser.add_argument("--temperature", type=float, default=500.0, help="K")
    parser.add_argument("--timestep", type=float, default=0.5, help="fs")
    parser.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs")
    parser.add_argument("--equilibration", type=int, default=1000, help="MD steps discarded first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="output npz (default data/md17/<molecule>_xtb.npz)")
    args = parser.parse_args(argv)
    out = args.out or os.path.join("data", "md17", f"{args.molecule}_xtb.npz")
    arrays = run_md(args.molecule, args.frames, args.every, args.temperature, args.timestep, args.friction,
                    args.equilibration, args.seed)
    save_npz_atomic(out, **arrays)
    print(json.dumps({"out": out, "frames": args.frames, "atoms": int(len(arrays["z"]))}))


if __name__ == "__main__":
    main()
