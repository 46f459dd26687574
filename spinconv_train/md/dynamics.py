"""Molecular dynamics with a trained force model through ASE: NVE (velocity Verlet), NVT
(Langevin) or NPT (isotropic MTK; needs the stress), with a per-step energy log.

Energy-centric models (forces = -dE/dx) conserve the total energy in NVE; force-centric
models are not conservative and heat up or cool down, which the log shows
(``tests/relax/test_dynamics.py`` checks both). Caveat of the paper's grid projection
(``sphere_interpolation: bilinear``, also the reference's): the bilinear splat onto the
sphere grid is continuous but has kinks, so the energy is only piecewise smooth and forces
jump where a neighbour crosses a grid line (an untrained test model: 0.43 eV/Å within
1e-4 Å). Velocity Verlet then conserves energy to O(dt) rather than O(dt^2): about 0.3%
of the kinetic energy over 5 fs at 0.2 fs for ethanol at 300 K in that test, and halving
the step removes only 1.4-2x of the error. Models built with ``sphere_interpolation:
smooth`` (C1 weights on the same four grid corners) have C1 energies and continuous
forces: the same test gives 0.05% at 0.2 fs, and the error falls 3.8-4x per halving.
Use it, with ``envelope: true``, for models meant for MD.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from ase import Atoms, units

from spinconv_train.atomic_files import write_text_atomic
from spinconv_train.datasets.ase_convert import atoms_to_data
from spinconv_train.graph import atoms_cut_by_cap, binding_cap_message

ENSEMBLES = ("nve", "langevin", "nvt", "npt")


@dataclass
class MDLog:
    """Energies (eV), temperature (K), cell volume (Å^3, 0 without a cell) and pressure
    (bar, virial plus ideal-gas part; NaN where the calculator gives no stress) every
    ``interval`` steps, step 0 included; ``conserved``: the quantity the integrator
    conserves (NVE: the total energy; NVT / NPT: ASE's Nose-Hoover chain / MTK conserved
    energy; Langevin: the total energy, which it does not conserve)."""

    interval: int
    steps: list[int] = field(default_factory=list)
    potential: list[float] = field(default_factory=list)
    kinetic: list[float] = field(default_factory=list)
    temperature: list[float] = field(default_factory=list)
    volume: list[float] = field(default_factory=list)
    pressure: list[float] = field(default_factory=list)
    conserved: list[float] = field(default_factory=list)
    max_forces_std: list[float] = field(default_factory=list)  # committee spread (eV/Å); NaN for one model
    seconds: float = 0.0
    stop_reason: str | None = None  # why the run ended before its steps (uncertainty threshold)
    stopped_at: int | None = None

    @property
    def total(self) -> np.ndarray:
        return np.asarray(self.potential) + np.asarray(self.kinetic)

    def max_energy_error(self) -> float:
        """Largest |E_total(t) - E_total(0)| (eV): the NVE conservation error."""
        total = self.total
        return float(np.abs(total - total[0]).max()) if total.size else 0.0

    def max_conserved_error(self) -> float:
        """Largest drift (eV) of the integrator's conserved quantity (``conserved``)."""
        conserved = np.asarray(self.conserved)
        return float(np.abs(conserved - conserved[0]).max()) if conserved.size else 0.0

    def write_csv(self, path: str) -> None:
        """``step,potential_ev,kinetic_ev,total_ev,temperature_k,volume_a3,pressure_bar,
        conserved_ev,max_forces_std_ev_a`` rows, written atomically."""
        rows = ["step,potential_ev,kinetic_ev,total_ev,temperature_k,volume_a3,pressure_bar,conserved_ev,"
                "max_forces_std_ev_a"]
        rows += [f"{s},{p:.8f},{k:.8f},{p + k:.8f},{t:.3f},{v:.6f},{b:.3f},{c:.8f},{u:.6f}"
                 for s, p, k, t, v, b, c, u in zip(self.steps, self.potential, self.kinetic, self.temperature,
                                                   self.volume, self.pressure, self.conserved, self.max_forces_std)]
        write_text_atomic(path, "\n".join(rows) + "\n")


def md_caveats(model: object, atoms: Atoms | None = None) -> list[str]:
    """What keeps ``model``'s forces from conserving energy smoothly in NVE, one line each
    (empty for an energy-centric SpinConv with the envelope and smooth interpolation, and,
    given ``atoms``, a neighbour cap that does not bind on them)."""
    caveats = []
    if getattr(model, "direct_forces", False):
        caveats.append("force-centric model: its forces are not the gradient of its energy, so NVE "
                       "does not conserve energy")
    if getattr(model, "envelope", True) is False:
        caveats.append("no cutoff envelope (envelope: false): the energy jumps when a neighbour "
                       "crosses the cutoff")
    if getattr(model, "sphere_interpolation", "smooth") == "bilinear":
        caveats.append("bilinear sphere interpolation: forces jump where a neighbour crosses a grid "
                       "line, NVE energy error O(dt) (train with sphere_interpolation: smooth)")
    cap, cutoff = getattr(model, "max_num_neighbors", None), getattr(model, "cutoff", None)
    if atoms is not None and cap is not None and cutoff is not None and len(atoms) > 1:
        record = atoms_to_data(atoms, dtype=torch.float64)
        cut = atoms_cut_by_cap(record.pos, record.natoms, record.cell, record.pbc, float(cutoff), cap)
        message = binding_cap_message(cut, [atoms.get_chemical_formula()], np.array([len(atoms)]), float(cutoff), cap)
        if message:
            caveats.append(message)
    return caveats


def _pressure_bar(atoms: Atoms, with_stress: bool) -> float:
    """-trace(stress)/3 in bar, the ideal-gas (kinetic) part included; NaN without a stress."""
    if not with_stress:
        return float("nan")
    stress = atoms.get_stress(voigt=True, include_ideal_gas=True)
    return float(-stress[:3].mean() / units.bar)


def _probe_results(atoms: Atoms) -> dict:
    """The calculator's results for the current structure (computing them if needed)."""
    atoms.get_forces()
    return atoms.calc.results


def run_md(
    atoms: Atoms,
    steps: int,
    timestep_fs: float,
    ensemble: str = "nve",
    temperature_k: float | None = 300.0,
    friction_per_fs: float = 0.01,
    seed: int = 0,
    interval: int = 1,
    trajectory: str | None = None,
    pressure_bar: float = 1.0,
    thermostat_fs: float | None = None,
    barostat_fs: float | None = None,
    max_forces_std: float | None = None,
    progress: Callable[[int, Atoms], None] | None = None,
    progress_every: int = 100,
) -> MDLog:
    """Integrate ``atoms`` (with a calculator attached) for ``steps`` steps.

    Velocities are drawn from Maxwell-Boltzmann at ``temperature_k`` (``None``: keep the
    atoms' momenta). ``trajectory``: an ASE ``.traj`` file of every ``interval``-th frame.
    ``nvt``: ASE's Nose-Hoover chain thermostat (damping time ``thermostat_fs``, default 100
    steps; deterministic, with a conserved extended energy, unlike ``langevin``).
    ``npt``: ASE's isotropic MTK integrator (Nose-Hoover chains for the temperature and the
    cell volume) at ``pressure_bar``, damping times ``thermostat_fs`` (default 100 steps)
    and ``barostat_fs`` (default 1000 steps); it needs a periodic cell and a calculator with
    the stress (an energy-centric SpinConv). ``max_forces_std`` (eV/Å, a committee
    calculator): stop after the first step whose largest per-atom force spread exceeds it,
    leaving ``atoms`` at that structure (for active learning: label it, retrain).
    ``progress(step, atoms)`` is called at step 0 and every ``progress_every`` steps (its
    energies and forces are already computed then: it costs no model call).
    """
    from ase.md.langevin import Langevin
    from ase.md.nose_hoover_chain import IsotropicMTKNPT, NoseHooverChainNVT
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.md.verlet import VelocityVerlet

    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {ensemble!r}")
    if steps < 0 or timestep_fs <= 0 or interval < 1:
        raise ValueError(f"need steps >= 0, timestep_fs > 0 and interval >= 1; got {steps}, {timestep_fs}, {interval}")
    if progress is not None and progress_every < 1:
        raise ValueError(f"progress_every must be >= 1, got {progress_every}")
    if atoms.calc is None:
        raise ValueError("atoms have no calculator (attach a ModelCalculator)")
    if max_forces_std is not None and "max_forces_std" not in _probe_results(atoms):
        raise ValueError("max_forces_std needs a committee calculator (CommitteeCalculator: several checkpoints)")
    calc_stress = "stress" in getattr(atoms.calc, "implemented_properties", ())
    if ensemble == "npt":
        if not atoms.pbc.all() or atoms.cell.volume < 1e-6:
            raise ValueError("the npt ensemble needs a structure periodic in all three directions with a cell")
        if temperature_k is None:
            raise ValueError("the npt ensemble needs temperature_k")
        if not calc_stress:
            raise ValueError("the npt ensemble needs a calculator that computes the stress (an energy-centric "
                             "SpinConv, force_estimator: grad)")
    if temperature_k is not None:
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_k, rng=np.random.default_rng(seed))
        Stationary(atoms)  # no drift of the centre of mass
    dt = timestep_fs * units.fs
    if ensemble == "nve":
        dyn = VelocityVerlet(atoms, timestep=dt)
    elif ensemble == "nvt":
        if temperature_k is None:
            raise ValueError("the nvt ensemble needs temperature_k")
        tdamp = (100 * timestep_fs if thermostat_fs is None else thermostat_fs) * units.fs
        dyn = NoseHooverChainNVT(atoms, timestep=dt, temperature_K=temperature_k, tdamp=tdamp)
    elif ensemble == "npt":
        tdamp = (100 * timestep_fs if thermostat_fs is None else thermostat_fs) * units.fs
        pdamp = (1000 * timestep_fs if barostat_fs is None else barostat_fs) * units.fs
        dyn = IsotropicMTKNPT(atoms, timestep=dt, temperature_K=temperature_k, pressure_au=pressure_bar * units.bar,
                              tdamp=tdamp, pdamp=pdamp)
    else:
        if temperature_k is None:
            raise ValueError("the langevin ensemble needs temperature_k")
        dyn = Langevin(atoms, timestep=dt, temperature_K=temperature_k, friction=friction_per_fs / units.fs,
                       fixcm=False, rng=np.random.default_rng(seed + 1))
    log = MDLog(interval)
    with_stress = bool(atoms.pbc.all()) and calc_stress

    def record() -> None:
        log.steps.append(dyn.nsteps)
        log.potential.append(float(atoms.get_potential_energy()))
        log.kinetic.append(float(atoms.get_kinetic_energy()))
        log.temperature.append(float(atoms.get_temperature()))
        log.volume.append(float(atoms.cell.volume) if atoms.pbc.any() else 0.0)
        log.pressure.append(_pressure_bar(atoms, with_stress))
        conserved = (dyn.get_conserved_energy() if ensemble in ("nvt", "npt")
                     else log.potential[-1] + log.kinetic[-1])
        log.conserved.append(float(conserved))
        log.max_forces_std.append(float(atoms.calc.results.get("max_forces_std", float("nan"))))

    dyn.attach(record, interval=interval)
    if progress is not None:
        dyn.attach(lambda: progress(int(dyn.nsteps), atoms), interval=progress_every)
    writer = None
    if trajectory:
        from ase.io.trajectory import Trajectory

        writer = Trajectory(trajectory, "w", atoms)
        dyn.attach(writer.write, interval=interval)
    start = time.perf_counter()
    try:
        for _ in dyn.irun(steps):
            spread = atoms.calc.results.get("max_forces_std")
            if max_forces_std is not None and spread is not None and spread > max_forces_std:
                log.stopped_at = int(dyn.nsteps)
                log.stop_reason = (f"max_forces_std {spread:.4g} eV/Å > {max_forces_std:g} at step "
                                   f"{dyn.nsteps}")
                if log.steps[-1:] != [dyn.nsteps]:
                    record()  # the log ends at the structure the run stopped on
                break
    finally:
        log.seconds = time.perf_counter() - start
        if writer is not None:
            writer.close()
    return log
