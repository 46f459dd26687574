"""OCP trainer checkpoints -> exported models; the reference's own energies
(tests/fixtures/ocp/reference_spinconv.pt, written by scripts/make_ocp_reference_fixtures.py
from the OCP repository at e7a8745e)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Batch, Data

from spinconv_train.calculators.calculator import load_force_model
from spinconv_train.ocp.checkpoint_import import OcpImportError, import_ocp_checkpoint, import_payload

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ocp" / "reference_spinconv.pt"


@pytest.fixture(scope="module")
def fixture():
    return torch.load(FIXTURE, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def batch(fixture):
    data = Batch.from_data_list([Data(**s) for s in fixture["reference"]["structures"]])
    data.atomic_numbers = data.atomic_numbers.long()
    return data


def reference_band(fixture):
    """The reference's energies (normalised units) over permutations of the atoms: its own
    reproducibility (each reverse edge's longitude is set by rounding), widened by its width."""
    ref = fixture["reference"]
    runs = torch.cat([ref["energy_raw"].view(1, -1), ref["energy_raw_permuted"]])
    low, high = runs.min(0).values, runs.max(0).values
    width = high - low + 1e-5
    return low - width, high + width


def energies(path, batch):
    model, _ = load_force_model(str(path), torch.device("cpu"))
    with torch.no_grad():
        return model(batch)["energy"]


def test_imported_model_computes_the_reference_energies(fixture, batch, tmp_path):
    out = tmp_path / "model.pt"
    summary = import_ocp_checkpoint(str(FIXTURE), str(out))
    assert summary["weights"] == "ema" and summary["frame"] == "reference" and summary["model"] == "spinconv"
    low, high = reference_band(fixture)
    got = energies(out, batch)
    assert bool(((got >= low) & (got <= high)).all()), (got, low, high)
    # The normalisers are OCP's: energies in eV are the reference's.
    exported = torch.load(out, weights_only=False)
    normalizer = exported["targets"]["normalizer"]
    target = fixture["normalizers"]["target"]
    assert normalizer["mean"] == pytest.approx(float(target["mean"]))
    assert normalizer["std"] == pytest.approx(float(target["std"]))
    assert normalizer["force_std"] == pytest.approx(float(fixture["normalizers"]["grad_target"]["std"]))
    assert exported["step"] == fixture["step"] and exported["exported"]["weights"] == "ema"


def test_exact_frames_or_raw_weights_do_not_reproduce_the_reference(fixture, batch, tmp_path):
    low, high = reference_band(fixture)
    raw = tmp_path / "raw.pt"
    import_ocp_checkpoint(str(FIXTURE), str(raw), weights="model")
    got = energies(raw, batch)
    assert not bool(((got >= low) & (got <= high)).all())
    payload = import_payload(fixture, str(FIXTURE))
    payload["config"]["model"]["frame"] = "exact"
    exact = tmp_path / "exact.pt"
    torch.save(payload, exact)
    got = energies(exact, batch)
    assert not bool(((got >= low) & (got <= high)).all())


def test_a_weight_that_does_not_fit_names_the_parameter_and_both_shapes(fixture):
    bad = copy.deepcopy(fixture)
    bad["config"]["model_attributes"]["mid_hidden_channels"] = 24
    with pytest.raises(OcpImportError, match=r"parameter '.*' has shape \(.*\) in the checkpoint and \(.*\)"):
        import_payload(bad, "bad.pt")
    short = copy.deepcopy(fixture)
    short["ema"]["shadow_params"] = short["ema"]["shadow_params"][:-1]
    with pytest.raises(OcpImportError, match=r"ema.shadow_params"):
        import_payload(short, "short.pt")
    other = copy.deepcopy(fixture)
    other["config"]["model"] = "gemnet_t"
    with pytest.raises(OcpImportError, match=r"gemnet_t.*spinconv"):
        import_payload(other, "other.pt")


def test_not_an_ocp_checkpoint_is_refused(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"model": {}}, path)
    with pytest.raises(OcpImportError, match="not a checkpoint of OCP's trainer"):
        import_ocp_checkpoint(str(path), str(tmp_path / "out.pt"))
    with pytest.raises(OcpImportError, match="exists"):
        import_ocp_checkpoint(str(FIXTURE), str(path))


def test_imported_model_fine_tunes_with_either_frame(tmp_path, capsys, caplog):
    import json
    import logging

    import yaml

    from spinconv_train.launch.cli import main

    out = tmp_path / "model.pt"
    import_ocp_checkpoint(str(FIXTURE), str(out))
    config = torch.load(out, weights_only=False)["config"]
    mini = Path(__file__).resolve().parents[2] / "data" / "oc20_mini" / "s2ef"
    config["dataset"] = {"train": {"src": str(mini / "train")}, "val": {"src": str(mini / "val_id")}}
    config["finetune"] = {"checkpoint": str(out)}
    config["optim"]["batch_size"] = 1
    path = tmp_path / "finetune.yml"
    path.write_text(yaml.safe_dump(config))
    for frame in ("reference", "exact"):
        with caplog.at_level(logging.INFO):
            code = main(["--mode", "train", "--dry-run", "--config-yml", str(path), f"--model.frame={frame}"])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        summary = json.loads(captured.out)
        assert summary["normalizer"]["mean"] == pytest.approx(float(fixture_normalizer()["mean"]))
    assert any("model.frame" in r.getMessage() for r in caplog.records)  # the switch is logged


def fixture_normalizer():
    return torch.load(FIXTURE, map_location="cpu", weights_only=False)["normalizers"]["target"]
