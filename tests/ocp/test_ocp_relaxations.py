"""OCP's relaxation config (configs/s2ef/2M/dimenet_plus_plus/dpp_relax.yml) runs unchanged
with --mode run-relaxations --checkpoint, on a model imported from an OCP-layout checkpoint."""
from __future__ import annotations

from pathlib import Path

import torch
from ocp_workdir import make_ocp_workdir

from spinconv_train.launch.cli import main
from spinconv_train.models.baselines import DimeNetPlusPlusModel
from spinconv_train.ocp.checkpoint_import import import_ocp_checkpoint

SMALL = {"hidden_channels": 16, "out_emb_channels": 16, "num_blocks": 1, "int_emb_size": 8, "basis_emb_size": 4,
         "num_spherical": 3, "num_radial": 3}
RELAX = "configs/s2ef/2M/dimenet_plus_plus/dpp_relax.yml"


def ocp_dimenetpp_checkpoint(path: Path, attributes: dict) -> None:
    """A DimeNet++ checkpoint in the layout of OCP's trainer (OCP's names: no `net.`, and a
    `lin_up.bias` in each output block), with seeded weights."""
    torch.manual_seed(0)
    native = DimeNetPlusPlusModel(**{k: v for k, v in attributes.items() if k not in ("name", "otf_graph")})
    state = {f"module.{k[len('net.'):]}": v for k, v in native.state_dict().items()}
    for name in [k for k in state if k.endswith("lin_up.weight") and ".output_blocks." in k]:
        state[name.replace("weight", "bias")] = torch.zeros(state[name].shape[0])
    config = {"trainer": "forces", "model": "dimenetplusplus", "model_attributes": attributes,
              "task": {"dataset": "trajectory_lmdb"}, "optim": {"batch_size": 2, "max_epochs": 1},
              "dataset": {"src": "data/s2ef/2M/train/"}, "cmd": {"seed": 0}}
    torch.save({"state_dict": state, "config": config, "normalizers": {"target": {"mean": 0.0, "std": 1.0}},
                "ema": None, "epoch": 1, "step": 1}, path)


def test_dpp_relax_config_runs_relaxations_with_an_imported_model(tmp_path, monkeypatch, capsys):
    import yaml

    root = make_ocp_workdir(tmp_path / "ocp")
    attributes = dict(yaml.safe_load((root / RELAX).read_text())["model"], **SMALL)
    attributes.pop("name")
    ocp_dimenetpp_checkpoint(tmp_path / "ocp.pt", attributes)
    import_ocp_checkpoint(str(tmp_path / "ocp.pt"), str(tmp_path / "model.pt"))
    monkeypatch.chdir(root)
    code = main(["--mode", "run-relaxations", "--config-yml", RELAX, "--checkpoint", str(tmp_path / "model.pt"),
                 "--run-dir", str(tmp_path / "runs"), "--run-name", "relax", "--task.relaxation_steps=2",
                 *[f"--model.{k}={v}" for k, v in SMALL.items()]])
    assert code == 0, capsys.readouterr().err
    run = tmp_path / "runs" / "relax"
    assert (run / "relaxations.npz").is_file() and (run / "relaxed.extxyz").is_file()
    import numpy as np

    with np.load(run / "relaxations.npz") as data:
        assert len(data[list(data.keys())[0]]) == 9  # every system of relax_dataset (OCP's test_id stand-in)
