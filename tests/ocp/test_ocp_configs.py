"""OCP's own config files (tests/fixtures/ocp/configs, from the OCP repository at e7a8745e)
dry-run unchanged from a working folder laid out as OCP's."""
from __future__ import annotations

import json
import logging

import pytest
import yaml
from ocp_workdir import FIXTURE_CONFIGS, make_ocp_workdir, ocp_config_paths

from spinconv_train.launch.cli import main

# Small models keep each dry run to seconds; the slow case runs OCP's own sizes.
SMALL = {
    "spinconv": ["--model.hidden_channels=8", "--model.mid_hidden_channels=16", "--model.num_interactions=1",
                 "--model.num_basis_functions=16", "--model.sphere_size_lat=8", "--model.sphere_size_long=6",
                 "--model.max_num_neighbors=12"],
    "schnet": ["--model.hidden_channels=16", "--model.num_filters=16", "--model.num_interactions=1",
               "--model.num_gaussians=10"],
    "dimenetplusplus": ["--model.hidden_channels=16", "--model.out_emb_channels=16", "--model.num_blocks=1",
                        "--model.int_emb_size=8", "--model.basis_emb_size=4", "--model.num_spherical=3",
                        "--model.num_radial=3"],
}
# OCP's example.yml files describe gemnet_t, which this project does not have.
EXAMPLE_MODEL = ["--model.name=spinconv"]
BATCH = ["--optim.batch_size=1", "--optim.eval_batch_size=1", "--optim.num_workers=0"]


@pytest.fixture(scope="module")
def ocp_root(tmp_path_factory):
    return make_ocp_workdir(tmp_path_factory.mktemp("ocp"))


def _model_name(rel: str) -> str:
    path = FIXTURE_CONFIGS / rel
    return yaml.safe_load(path.read_text()).get("model", {}).get("name", "")


def _dry_run(root, monkeypatch, capsys, argv):
    monkeypatch.chdir(root)
    code = main(["--mode", "train", "--dry-run", *argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_fixture_holds_the_24_configs():
    paths = ocp_config_paths()
    assert len(paths) == 24
    assert {"s2ef/example.yml", "is2re/example.yml", "s2ef/2M/spinconv/spinconv_force.yml"} <= set(paths)


@pytest.mark.parametrize("rel", ocp_config_paths())
def test_ocp_config_dry_runs_unchanged(rel, ocp_root, monkeypatch, capsys):
    name = _model_name(rel)
    extra = EXAMPLE_MODEL + SMALL["spinconv"] if name == "gemnet_t" else SMALL[name]
    summary = _dry_run(ocp_root, monkeypatch, capsys, ["--config-yml", f"configs/{rel}", *BATCH, *extra])
    raw = yaml.safe_load((FIXTURE_CONFIGS / rel).read_text())
    base = {}
    for include in raw.get("includes", []):
        base = yaml.safe_load((ocp_root / include).read_text())
    dataset = raw.get("dataset", base.get("dataset"))
    train = dataset[0] if isinstance(dataset, list) else dataset["train"]
    # OCP's normaliser statistics are used as given.
    assert summary["normalizer"]["mean"] == pytest.approx(train["target_mean"])
    assert summary["normalizer"]["std"] == pytest.approx(train["target_std"])
    assert summary["trainer"] == raw.get("trainer", base.get("trainer"))
    assert summary["train_structures"] > 0 and "val" in summary["splits"]
    assert summary["train_step_loss"] == summary["train_step_loss"]  # finite (not NaN)


@pytest.mark.slow
def test_spinconv_config_dry_runs_at_ocp_size(ocp_root, monkeypatch, capsys):
    summary = _dry_run(ocp_root, monkeypatch, capsys,
                       ["--config-yml", "configs/s2ef/2M/spinconv/spinconv_force.yml", *BATCH])
    assert summary["model"] == "spinconv" and summary["parameters"] > 8_000_000


def test_gemnet_example_names_the_known_models(ocp_root, monkeypatch, capsys, caplog):
    monkeypatch.chdir(ocp_root)
    with caplog.at_level(logging.WARNING, logger="spinconv_train.ocp"):
        code = main(["--mode", "train", "--dry-run", "--config-yml", "configs/s2ef/example.yml"])
    err = capsys.readouterr().err
    assert code == 2 and "model.name" in err and "gemnet_t" in err and "spinconv" in err
    warned = " ".join(r.getMessage() for r in caplog.records)
    for key in ("task.num_relaxation_batches", "task.prediction_dtype", "slurm", "task.relax_opt.traj_dir"):
        assert f"'{key}'" in warned


def test_dimenetpp_in_ocp_form_holds_the_angles_fixed_in_its_forces_as_ocp():
    from spinconv_train.config_ocp import translate

    def config(dataset, **model):
        return {"dataset": dataset, "model": {"name": "dimenetplusplus", **model}}

    ocp = config([{"src": "data/train"}])
    translate(ocp, {}, warn=lambda line: None)
    assert ocp["model"]["detach_angles"] is True
    chosen = config([{"src": "data/train"}], detach_angles=False)
    translate(chosen, {}, warn=lambda line: None)
    assert chosen["model"]["detach_angles"] is False
    native = config({"train": {"src": "data/train"}})
    translate(native, {}, warn=lambda line: None)
    assert "detach_angles" not in native["model"]


@pytest.mark.parametrize("name", ["schnet", "dimenetplusplus"])
def test_an_ocp_form_baseline_without_cutoff_gets_ocps_cutoff(name):
    """OCP's SchNet and DimeNet++ wrappers default to a 10 Å cutoff (this project's to 6 Å)."""
    from spinconv_train.config_ocp import translate

    ocp = {"dataset": [{"src": "data/train"}], "model": {"name": name}}
    translate(ocp, {}, warn=lambda line: None)
    assert ocp["model"]["cutoff"] == 10.0
    given = {"dataset": [{"src": "data/train"}], "model": {"name": name, "cutoff": 5.0}}
    translate(given, {}, warn=lambda line: None)
    assert given["model"]["cutoff"] == 5.0
    native = {"dataset": {"train": {"src": "data/train"}}, "model": {"name": name}}
    translate(native, {}, warn=lambda line: None)
    assert "cutoff" not in native["model"]
