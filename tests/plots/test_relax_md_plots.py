"""The plots run-relaxations and spinconv-md write: one line per structure / quantity, the
data of the trajectories and of md.csv."""
from __future__ import annotations

import csv
import os

import numpy as np
import pytest
from ase.io import read, write
from trainers.trainer_testing import load_script, only_run_dir, tiny_config, write_config

from spinconv_train.calculators.convert import record_to_atoms
from spinconv_train.datasets import LmdbDataset
from spinconv_train.launch.cli import main
from spinconv_train.plots.md import md_figure, read_md_csv
from spinconv_train.plots.relaxation import relaxation_figure, trajectory_energies


def _relax(trained_runs, s2ef_data, is2re_data, tmp_path, monkeypatch, **task):
    """Run run-relaxations; returns (run folder, the figure the run drew)."""
    from spinconv_train.plots import relaxation

    drawn = []
    real = relaxation.relaxation_figure
    monkeypatch.setattr(relaxation, "relaxation_figure", lambda traces: drawn.append(real(traces)) or drawn[-1])
    config = tiny_config({"train": s2ef_data["train"]})
    config["task"].update({"relax_dataset": {"src": is2re_data["val"]},
                           "relax_opt": {"name": "lbfgs", "fmax": 0.05, "steps": 4, "maxstep": 0.04}, **task})
    assert main(["--mode", "run-relaxations", "--config-yml", write_config(tmp_path, config), "--checkpoint",
                 os.path.join(trained_runs["a"], "checkpoint.pt"), "--run-dir", str(tmp_path / "runs"),
                 "--no-progress"]) == 0
    run = only_run_dir(tmp_path / "runs")
    assert os.path.getsize(os.path.join(run, "relaxation_energies.png")) > 1000
    assert len(drawn) == 1
    return run, drawn[0]


def test_relaxation_plot_has_the_trajectory_energies(trained_runs, s2ef_data, is2re_data, tmp_path, monkeypatch):
    run, fig = _relax(trained_runs, s2ef_data, is2re_data, tmp_path, monkeypatch, write_trajectories=True)
    traces = trajectory_energies(os.path.join(run, "trajectories"))
    assert sorted(traces) == ["1000", "1001", "1002", "1003"]
    for name, energies in traces.items():
        frames = read(os.path.join(run, "trajectories", f"{name}.traj"), index=":")
        assert energies == [a.get_potential_energy() for a in frames]
    lines = fig.axes[0].get_lines()
    assert sorted(line.get_label() for line in lines) == sorted(traces)
    for line in lines:
        energies = traces[line.get_label()]
        assert list(line.get_xdata()) == list(range(len(energies)))
        assert list(line.get_ydata()) == pytest.approx([e - energies[0] for e in energies], abs=1e-9)
    assert relaxation_figure(traces).axes[0].get_lines()[0].get_label() == "1000"


def test_relaxation_plot_without_trajectories(trained_runs, s2ef_data, is2re_data, tmp_path, monkeypatch):
    run, fig = _relax(trained_runs, s2ef_data, is2re_data, tmp_path, monkeypatch)
    assert not os.path.exists(os.path.join(run, "trajectories"))
    with np.load(os.path.join(run, "relaxations.npz")) as npz:
        steps = dict(zip(npz["sid"].tolist(), npz["steps"].tolist()))
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert sorted(lines) == ["1000", "1001", "1002", "1003"]
    for name, line in lines.items():
        assert len(line.get_xdata()) == steps[int(name)] + 1  # the start and one point per step
        assert line.get_ydata()[0] == 0.0


def test_md_command_writes_the_trace_plot(trained_runs, s2ef_data, tmp_path):
    structure = str(tmp_path / "slab.xyz")
    write(structure, record_to_atoms(LmdbDataset({"src": s2ef_data["train"]})[0]))
    out = tmp_path / "md"
    script = load_script("run_md")
    assert script.main(["--checkpoint", os.path.join(trained_runs["a"], "checkpoint.pt"), "--structure", structure,
                        "--steps", "6", "--interval", "2", "--output-dir", str(out)]) == 0
    assert os.path.getsize(out / "md.png") > 1000
    with open(out / "md.csv") as handle:
        rows = list(csv.DictReader(handle))
    columns = read_md_csv(str(out / "md.csv"))
    assert columns["step"] == [0.0, 2.0, 4.0, 6.0]
    top, bottom = md_figure(columns).axes
    assert [line.get_label() for line in top.get_lines()] == ["total energy", "conserved energy"]
    for line, key in zip(top.get_lines(), ("total_ev", "conserved_ev")):
        values = [float(r[key]) for r in rows]
        assert list(line.get_ydata()) == [v - values[0] for v in values]
    (temperature,) = bottom.get_lines()
    assert list(temperature.get_ydata()) == [float(r["temperature_k"]) for r in rows]
