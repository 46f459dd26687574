"""Molecular dynamics through the calculator: an energy-centric model conserves the total
energy in NVE; a force-centric one does not."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units
from models.spinconv_testkit import distorted_crystal, make_model, rattled_molecule
from trainers.trainer_testing import load_script

from spinconv_train.calculators import ModelCalculator
from spinconv_train.md.dynamics import md_caveats, run_md
from spinconv_train.tasks.targets import TargetState


class _RawOutputs:
    """A task whose model outputs are already in eV and eV/Å."""
    targets = TargetState()  # no normaliser; elements unknown

    def denormalize(self, out, batch):
        return out


def _nve_error(estimator: str, timestep_fs: float, duration_fs: float = 5.0, interpolation: str = "bilinear") -> tuple:
    torch.manual_seed(0)
    model = make_model(torch.float64, force_estimator=estimator, envelope=True, cutoff=5.0,
                       sphere_interpolation=interpolation).eval()
    atoms = rattled_molecule("CH3CH2OH", seed=0)
    atoms.calc = ModelCalculator(model, _RawOutputs())
    log = run_md(atoms, int(round(duration_fs / timestep_fs)), timestep_fs, "nve", temperature_k=300.0, seed=0)
    return log.max_energy_error(), float(np.mean(log.kinetic)), log


def test_energy_centric_nve_conserves_energy():
    """Total energy drifts by well under 1% of the kinetic energy over 5 fs. (Not O(dt^2):
    the bilinear splat makes the energy piecewise smooth, so forces jump where a neighbour
    crosses a grid line, and Verlet's error at each jump is O(dt); see dynamics.py.)"""
    error, kinetic, log = _nve_error("grad", 0.2)
    assert log.steps == list(range(26)) and len(log.potential) == 26
    assert error < 0.005 * kinetic


def test_smooth_interpolation_makes_verlet_second_order():
    """With C1 sphere interpolation the energy is C1 and Verlet's energy error shrinks as
    dt^2: halving the step divides it by about 4 (measured 3.8 and 4.0 for 0.4 -> 0.2 ->
    0.1 fs). With the bilinear splat the force jumps make it shrink only about as dt
    (measured 2.0 and 1.4)."""
    errors = {}
    for interpolation in ("smooth", "bilinear"):
        errors[interpolation] = [_nve_error("grad", dt, interpolation=interpolation)[0] for dt in (0.2, 0.1)]
    smooth, bilinear = errors["smooth"], errors["bilinear"]
    assert smooth[0] / smooth[1] > 3.3, errors
    assert bilinear[0] / bilinear[1] < 2.5, errors
    assert smooth[1] < 0.5 * bilinear[1], errors


def test_md_caveats_name_what_breaks_conservation():
    smooth = make_model(torch.float64, force_estimator="grad", envelope=True, sphere_interpolation="smooth")
    assert md_caveats(smooth) == []
    paper = make_model(torch.float64, force_estimator="direct", envelope=False)
    caveats = md_caveats(paper)
    assert len(caveats) == 3 and "force-centric" in caveats[0] and "envelope" in caveats[1] and "bilinear" in caveats[2]
    from ase.build import bulk

    crystal = bulk("Cu", "fcc", a=3.6) * (2, 2, 2)  # 12 neighbours within 3 Å, 18 within 3.7 Å
    assert md_caveats(smooth, crystal) == []  # the test model: cutoff 3.5 Å, cap 100
    capped = make_model(torch.float64, force_estimator="grad", envelope=True, sphere_interpolation="smooth",
                        cutoff=3.7, max_num_neighbors=12)
    (line,) = md_caveats(capped, crystal)
    assert "max_num_neighbors: 12) cuts the neighbour lists within 3.7 Å of 1 structure(s): Cu8 (8 of 8 atoms)" \
        in line


def test_npt_conserves_the_mtk_energy_to_second_order():
    """Isotropic MTK NPT on a periodic crystal: the cell volume moves (the untrained test
    model is far from equilibrium) and the integrator's conserved energy drifts as dt^2
    (measured 0.0132 / 0.0032 / 0.00083 eV at 0.4 / 0.2 / 0.1 fs over 4 fs), which holds
    only if the stress is the strain derivative of the energy: the same run with the
    stress scaled by 1.5 drifts by 3 eV at both steps."""
    errors = []
    for dt in (0.2, 0.1):
        atoms = distorted_crystal()
        model = make_model(torch.float64, force_estimator="grad", envelope=True, sphere_interpolation="smooth",
                           cutoff=4.0)
        atoms.calc = ModelCalculator(model, _RawOutputs())
        log = run_md(atoms, int(round(4.0 / dt)), dt, "npt", temperature_k=300.0, barostat_fs=200.0,
                     thermostat_fs=20.0)
        assert abs(log.volume[-1] - log.volume[0]) > 1.0  # the barostat acts
        assert np.isfinite(log.pressure).all()
        errors.append(log.max_conserved_error())
    assert errors[0] / errors[1] > 3.3 and errors[1] < 0.01 * log.max_energy_error(), errors


def test_nvt_nose_hoover_conserves_its_extended_energy_to_second_order():
    """Nose-Hoover chain NVT on ethanol: the thermostat moves energy in and out (the total
    energy changes by 0.28 eV), while the integrator's conserved energy drifts as dt^2
    (measured 4.1e-4 / 1.0e-4 eV at 0.2 / 0.1 fs over 4 fs)."""
    errors = []
    for dt in (0.2, 0.1):
        torch.manual_seed(0)
        model = make_model(torch.float64, force_estimator="grad", envelope=True, cutoff=5.0,
                           sphere_interpolation="smooth").eval()
        atoms = rattled_molecule("CH3CH2OH", seed=0)
        atoms.calc = ModelCalculator(model, _RawOutputs())
        log = run_md(atoms, int(round(4.0 / dt)), dt, "nvt", temperature_k=300.0, thermostat_fs=5.0)
        errors.append(log.max_conserved_error())
    assert errors[0] / errors[1] > 3.0, errors
    assert errors[1] < 0.05 * log.max_energy_error(), (errors, log.max_energy_error())


def test_pressure_is_logged_without_extra_model_calls():
    """On a periodic cell the calculator computes the stress with the forces, so logging the
    pressure every step costs no second model call; molecules log NaN."""
    crystal = distorted_crystal()
    model = make_model(torch.float64, force_estimator="grad", envelope=True, sphere_interpolation="smooth", cutoff=4.0)
    crystal.calc = ModelCalculator(model, _RawOutputs())
    log = run_md(crystal, 4, 0.2, "nve", temperature_k=300.0)
    assert crystal.calc.evaluations == 5 and np.isfinite(log.pressure).all()
    # the logged pressure: -trace(virial stress + ideal gas)/3
    expected = -crystal.get_stress(include_ideal_gas=True)[:3].mean() / units.bar
    assert log.pressure[-1] == pytest.approx(expected)
    molecule = rattled_molecule("CH3CH2OH")
    molecule.calc = ModelCalculator(model, _RawOutputs())
    assert np.isnan(run_md(molecule, 1, 0.2, "nve").pressure).all()


def test_npt_needs_a_cell_and_a_stress():
    molecule = rattled_molecule("CH3CH2OH")
    molecule.calc = ModelCalculator(make_model(torch.float64, force_estimator="grad"), _RawOutputs())
    with pytest.raises(ValueError, match="periodic"):
        run_md(molecule, 1, 0.5, "npt")
    crystal = distorted_crystal()
    crystal.calc = ModelCalculator(make_model(torch.float64, force_estimator="direct"), _RawOutputs())
    with pytest.raises(ValueError, match="stress"):
        run_md(crystal, 1, 0.5, "npt")


def test_force_centric_forces_are_not_conservative():
    error, kinetic, _ = _nve_error("direct", 0.2)
    assert error > 0.1 * kinetic  # the same check fails for direct forces: energy is not conserved


def test_langevin_log_and_trajectory(tmp_path):
    from ase.io import read

    model = make_model(torch.float64, force_estimator="grad", envelope=True, cutoff=5.0).eval()
    atoms = rattled_molecule("CH3CH2OH", seed=1)
    atoms.calc = ModelCalculator(model, _RawOutputs())
    path = str(tmp_path / "md.traj")
    log = run_md(atoms, 6, 0.2, "langevin", temperature_k=300.0, interval=2, trajectory=path)
    assert log.steps == [0, 2, 4, 6] and all(t > 0 for t in log.temperature)
    frames = read(path, index=":")
    assert len(frames) == 4 and np.allclose(frames[-1].positions, atoms.positions)
    log.write_csv(str(tmp_path / "md.csv"))
    rows = (tmp_path / "md.csv").read_text().splitlines()
    assert rows[0].startswith("step,potential_ev") and len(rows) == 5


def test_bad_arguments_are_named():
    atoms = rattled_molecule("CH3CH2OH")
    with pytest.raises(ValueError, match="calculator"):
        run_md(atoms, 1, 0.5)
    atoms.calc = ModelCalculator(make_model(torch.float64, force_estimator="grad"), _RawOutputs())
    with pytest.raises(ValueError, match="ensemble"):
        run_md(atoms, 1, 0.5, ensemble="npt")
    with pytest.raises(ValueError, match="timestep_fs"):
        run_md(atoms, 1, 0.0)


def test_run_md_script_on_a_checkpoint(force_checkpoint, s2ef_data, tmp_path):
    import json

    from ase.io import read, write

    from spinconv_train.calculators import record_to_atoms
    from spinconv_train.datasets import LmdbDataset

    script = load_script("run_md")
    structure = str(tmp_path / "slab.xyz")
    write(structure, record_to_atoms(LmdbDataset({"src": s2ef_data["train"]})[0]))
    out = tmp_path / "md"
    assert script.main(["--checkpoint", force_checkpoint, "--structure", structure, "--steps", "4",
                        "--interval", "2", "--timestep", "0.5", "--output-dir", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["atoms"] == len(read(structure))
    assert summary["model_caveats"] == []  # the fixture's model is SchNet: forces = -dE/dx, smooth cutoff
    assert script.main(["--checkpoint", force_checkpoint, "--structure", structure, "--steps", "2",
                        "--ensemble", "npt", "--output-dir", str(tmp_path / "npt")]) == 2  # SchNet has no stress
    assert len(read(str(out / "md.traj"), index=":")) == 3
    assert script.main(["--checkpoint", force_checkpoint, "--structure", str(tmp_path / "missing.xyz"),
                        "--output-dir", str(out)]) == 2


def test_md_prints_progress_while_it_runs(force_checkpoint, tmp_path, capsys):
    script = load_script("run_md")
    args = ["--checkpoint", force_checkpoint, "--molecule", "H2O", "--steps", "6", "--timestep", "0.5",
            "--interval", "3"]
    assert script.main([*args, "--print-every", "2", "--output-dir", str(tmp_path / "a")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["0/6", "2/6", "4/6", "6/6"]
    assert lines[2].startswith("step 4/6  t 2.0 fs  T ") and " K  E_pot " in lines[2] and " eV  E_tot " in lines[2]
    assert lines[-1].endswith("ms/step")
    assert script.main([*args, "--quiet", "--output-dir", str(tmp_path / "b")]) == 0
    assert not [line for line in capsys.readouterr().err.splitlines() if line.startswith("step ")]
    with pytest.raises(SystemExit):
        script.main([*args, "--print-every", "0"])


def test_progress_callback_costs_no_model_call():
    model = make_model(torch.float64, force_estimator="grad", envelope=True, cutoff=5.0).eval()
    atoms = rattled_molecule("CH3CH2OH", seed=1)
    atoms.calc = ModelCalculator(model, _RawOutputs())
    calls = []
    real = atoms.calc.calculate
    atoms.calc.calculate = lambda *a, **k: calls.append(1) or real(*a, **k)
    run_md(atoms, 4, 0.2, "nve", interval=4)
    quiet_calls = len(calls)
    atoms = rattled_molecule("CH3CH2OH", seed=1)
    atoms.calc = ModelCalculator(model, _RawOutputs())
    calls.clear()
    real = atoms.calc.calculate
    atoms.calc.calculate = lambda *a, **k: calls.append(1) or real(*a, **k)
    seen = []
    run_md(atoms, 4, 0.2, "nve", interval=4, progress=lambda step, a: seen.append((step, a.get_potential_energy())),
           progress_every=1)
    assert [step for step, _ in seen] == [0, 1, 2, 3, 4] and len(calls) == quiet_calls


def test_cuda_graphs_need_cuda_and_spinconv(force_checkpoint, tmp_path, capsys):
    script = load_script("run_md")
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--checkpoint", force_checkpoint, "--molecule", "H2O", "--cuda-graphs"])
    assert exit_info.value.code == 2 and "--cuda-graphs needs a CUDA --device" in capsys.readouterr().err
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        ModelCalculator.from_checkpoint(force_checkpoint, device="cpu", cuda_graphs=True)
    if torch.cuda.is_available():  # the fixture's model is SchNet: no CUDA graph wrapper for it
        assert script.main(["--checkpoint", force_checkpoint, "--molecule", "H2O", "--cuda-graphs", "--device",
                            "cuda", "--output-dir", str(tmp_path / "md")]) == 2
        assert "SpinConv" in capsys.readouterr().err
