"""Learning curves of real (tiny) runs: one line per run and split, the data of the metrics files."""
from __future__ import annotations

import json
import os

import pytest

from spinconv_train.commands import plot as plot_command
from spinconv_train.plots.learning_curves import PANELS, X_AXES, learning_curve_figure, run_names
from spinconv_train.plots.metrics_io import read_metrics


def _jsonl(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        return [json.loads(line) for line in handle]


def test_figure_has_one_line_per_run_and_split_with_the_logged_data(trained_runs):
    runs = {name: read_metrics(path) for name, path in trained_runs.items()}
    fig = learning_curve_figure(runs)
    assert len(fig.axes) == len(PANELS) * len(X_AXES)
    for r, (prefix, metric, _) in enumerate(PANELS):
        for c, (x, _) in enumerate(X_AXES):
            lines = fig.axes[r * len(X_AXES) + c].get_lines()
            expected = ["a", "b"] if prefix == "train" else ["a (val)", "a (val_extra)", "b (val)", "b (val_extra)"]
            assert [line.get_label() for line in lines] == expected
            for line in lines:
                run, _, split = line.get_label().partition(" ")
                split = split.strip("()") or "train"
                rows = [row for row in _jsonl(trained_runs[run]) if row["split"] == split and metric in row]
                assert rows, (run, split, metric)
                if x == "time":
                    start = _jsonl(trained_runs[run])[0]["time"]
                    assert list(line.get_xdata()) == pytest.approx([row["time"] - start for row in rows])
                else:
                    assert list(line.get_xdata()) == [float(row[x]) for row in rows]
                assert list(line.get_ydata()) == [row[metric] for row in rows]
    train_steps = [row["step"] for row in _jsonl(trained_runs["a"]) if row["split"] == "train"]
    assert train_steps == [2, 4, 6]  # print_every 2, 6 steps: the fixture logs what the test expects


def test_command_writes_the_png_into_the_run_or_out_folder(trained_runs, tmp_path, capsys):
    run = trained_runs["a"]
    target = os.path.join(run, "learning_curves.png")
    if os.path.exists(target):
        os.remove(target)
    assert plot_command.main([run, "--no-parity"]) == 0
    assert json.loads(capsys.readouterr().out)["written"] == [target]
    with open(target, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert plot_command.main([trained_runs["a"], trained_runs["b"], "--out", str(tmp_path / "cmp"),
                              "--no-parity"]) == 0
    assert os.path.getsize(tmp_path / "cmp" / "learning_curves.png") > 1000
    with pytest.raises(SystemExit):
        plot_command.main([trained_runs["a"], trained_runs["b"]])  # several runs need --out
    assert plot_command.main([str(tmp_path / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_run_names_stay_distinct():
    assert run_names(["x/a", "y/b"]) == ["a", "b"]
    assert run_names(["x/a", "y/a"]) == ["x/a", "y/a"]
