"""Parity plots of `--mode predict` outputs: references matched by id, MAE equal to --mode validate's."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from trainers.trainer_testing import only_run_dir

from spinconv_train.commands import plot as plot_command
from spinconv_train.datasets import LmdbDataset
from spinconv_train.launch.cli import main
from spinconv_train.plots.parity import ParityError, parity_figure, prediction_pairs


@pytest.fixture(scope="module")
def predicted(trained_runs, tmp_path_factory):
    """(predict run folder, validate --split test metrics) of run ``a``'s checkpoint."""
    root = tmp_path_factory.mktemp("predict")
    checkpoint = os.path.join(trained_runs["a"], "checkpoint.pt")
    assert main(["--mode", "predict", "--checkpoint", checkpoint, "--run-dir", str(root / "p"), "--no-progress"]) == 0
    assert main(["--mode", "validate", "--checkpoint", checkpoint, "--split", "test", "--run-dir", str(root / "v"),
                 "--no-progress"]) == 0
    with open(os.path.join(only_run_dir(root / "v"), "validate_metrics_test.json")) as handle:
        return only_run_dir(root / "p"), json.load(handle)


def test_pairs_match_the_labels_and_the_validation_mae(predicted, s2ef_data):
    run, metrics = predicted
    pairs = prediction_pairs(run)
    dataset = LmdbDataset({"src": s2ef_data["val"]})
    records = [dataset[i] for i in range(len(dataset))]
    assert pairs["energy"][1].tolist() == [float(r.y) for r in records]
    free = np.concatenate([r.force.numpy()[r.fixed.numpy() == 0] for r in records])
    np.testing.assert_array_equal(pairs["forces"][1], free)
    assert np.abs(pairs["energy"][0] - pairs["energy"][1]).mean() == pytest.approx(metrics["energy_mae"], rel=1e-5)
    assert np.abs(pairs["forces"][0] - pairs["forces"][1]).mean() == pytest.approx(metrics["forces_mae"], rel=1e-5)
    fig = parity_figure(pairs, "p")
    for ax, name in zip(fig.axes, ("energy", "forces")):
        (points,) = ax.collections
        np.testing.assert_allclose(points.get_offsets()[:, 0], pairs[name][1].ravel())
        np.testing.assert_allclose(points.get_offsets()[:, 1], pairs[name][0].ravel())
        legend = [text.get_text() for text in ax.get_legend().get_texts()]
        mae = np.abs(pairs[name][0] - pairs[name][1]).mean()
        assert legend == [f"MAE {mae:.4g} {'eV' if name == 'energy' else 'eV/Å'} (n={pairs[name][0].size})"]


def test_command_writes_parity_next_to_the_predictions(predicted, capsys):
    run, _ = predicted
    assert plot_command.main([run]) == 0  # a predict folder: no learning curves, one parity plot
    assert json.loads(capsys.readouterr().out)["written"] == [os.path.join(run, "parity.png")]
    assert os.path.getsize(os.path.join(run, "parity.png")) > 1000


def test_unlabelled_or_mismatched_references_are_named(predicted, s2ef_data, tmp_path):
    run, _ = predicted
    with pytest.raises(ParityError, match=r"no 'y' label"):
        prediction_pairs(run, labels_src=s2ef_data["test"])  # the fixture's test split has no labels
    with pytest.raises(ParityError, match="covers 4 structures but .* holds 8"):
        prediction_pairs(run, labels_src=s2ef_data["train"])  # another split
    with pytest.raises(ParityError, match=r"but dataset.train.src .* holds 8"):
        prediction_pairs(run, split="train")  # the config's train split is not what was predicted
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    os.remove(copy / "predictions.npz")
    with pytest.raises(ParityError, match="no predictions.npz"):
        prediction_pairs(str(copy))
