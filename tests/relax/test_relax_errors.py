"""Bad relaxation input gives a clear error naming the key, file or checkpoint (exit code 2),
and creates no run directory."""
from __future__ import annotations

import os

import pytest
import torch
from trainers.trainer_testing import emt_slabs, tiny_config, write_config, write_split

from spinconv_train.calculators import NotAForceModelError, load_force_model
from spinconv_train.launch.cli import main
from spinconv_train.relaxation import RelaxOptions
from spinconv_train.relaxation.settings import OptionError


def _config_file(tmp_path, s2ef_data, relax_dataset=None, **relax_opt):
    config = tiny_config({"train": s2ef_data["train"]}, max_steps=4, max_epochs=None)
    if relax_dataset is not None:
        config["task"]["relax_dataset"] = relax_dataset
    if relax_opt:
        config["task"]["relax_opt"] = relax_opt
    return write_config(tmp_path, config, "relax.yml")


def _fails(capsys, tmp_path, *args) -> str:
    runs = tmp_path / "runs"
    assert main(["--mode", "run-relaxations", "--run-dir", str(runs), "--no-progress", *args]) == 2
    assert not runs.exists()
    return capsys.readouterr().err


@pytest.mark.parametrize("relax_opt,needles", [
    ({"name": "newton"}, ["task.relax_opt.name", "newton", "lbfgs, bfgs, fire", "relax.yml"]),
    ({"name": "fire", "memory": 10}, ["task.relax_opt.memory", "'fire'", "dt"]),
    ({"fmax": -0.05}, ["task.relax_opt.fmax", "positive"]),
    ({"steps": 2.5}, ["task.relax_opt.steps", "integer"]),
    ({"relax_cell": "yes"}, ["task.relax_opt.relax_cell", "true or false"]),
    ({"relax_cell": True}, ["task.relax_opt.relax_cell", "needs the stress"]),  # the checkpoint is SchNet
])
def test_bad_optimiser_settings(relax_opt, needles, force_checkpoint, s2ef_data, is2re_data, tmp_path, capsys):
    path = _config_file(tmp_path, s2ef_data, {"src": is2re_data["val"]}, **relax_opt)
    err = _fails(capsys, tmp_path, "--config-yml", path, "--checkpoint", force_checkpoint)
    for needle in needles:
        assert needle in err, err


def test_unknown_optimiser_in_python_api():
    with pytest.raises(OptionError, match=r"task\.relax_opt\.name.*unknown optimiser 'gd'"):
        RelaxOptions.from_mapping({"name": "gd"})


def test_missing_or_absent_relax_dataset(force_checkpoint, s2ef_data, tmp_path, capsys):
    err = _fails(capsys, tmp_path, "--config-yml", _config_file(tmp_path, s2ef_data), "--checkpoint", force_checkpoint)
    assert "task.relax_dataset" in err and "--task.relax_dataset.src=" in err
    missing = str(tmp_path / "nowhere")
    err = _fails(capsys, tmp_path, "--config-yml", _config_file(tmp_path, s2ef_data, {"src": missing}),
                 "--checkpoint", force_checkpoint)
    assert "task.relax_dataset.src" in err and missing in err and "relax.yml" in err


def test_needs_a_checkpoint(s2ef_data, is2re_data, tmp_path, capsys):
    path = _config_file(tmp_path, s2ef_data, {"src": is2re_data["val"]})
    assert "--checkpoint" in _fails(capsys, tmp_path, "--config-yml", path)


def test_dataset_without_positions_names_file_record_and_field(force_checkpoint, s2ef_data, tmp_path, capsys):
    records = emt_slabs(2, seed=7, relaxed=True)
    del records[1].pos
    folder = write_split(str(tmp_path / "nopos"), records)
    path = _config_file(tmp_path, s2ef_data, {"src": folder})
    assert main(["--mode", "run-relaxations", "--config-yml", path, "--checkpoint", force_checkpoint,
                 "--run-dir", str(tmp_path / "runs"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert os.path.join(folder, "data.lmdb") in err and "record 1" in err and "'pos'" in err


def test_energy_checkpoint_is_rejected(force_checkpoint, is2re_data, tmp_path, capsys):
    """A checkpoint of the `energy` trainer (IS2RE direct) predicts no forces."""
    payload = torch.load(force_checkpoint, map_location="cpu", weights_only=False)
    payload["config"]["trainer"] = "energy"
    payload["config"]["model"]["regress_forces"] = False
    energy_ckpt = str(tmp_path / "energy.pt")
    torch.save(payload, energy_ckpt)
    err = _fails(capsys, tmp_path, "--checkpoint", energy_ckpt, f"--task.relax_dataset.src={is2re_data['val']}")
    assert energy_ckpt in err and "'energy'" in err and "trainer: forces" in err
    with pytest.raises(NotAForceModelError, match="does not predict forces"):
        load_force_model(energy_ckpt, torch.device("cpu"))
