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
from spinconv_train.models.spinconv.reference_frame import AXIS_TOLERANCE
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


# float32 round-off of energies of a few eV after two interaction blocks: a few ulps.
RTOL, ATOL = 2e-6, 2e-6


def energies(path, batch):
    model, _ = load_force_model(str(path), torch.device("cpu"))
    with torch.no_grad():
        return model(batch)["energy"]


def permuted(batch, seed):
    """``batch`` with the atoms of each structure in a random order."""
    generator = torch.Generator().manual_seed(seed)
    structures = []
    for data in batch.to_data_list():
        order = torch.randperm(data.num_nodes, generator=generator)
        structures.append(Data(**{key: (value[order] if key in ("pos", "atomic_numbers", "tags", "fixed") else value)
                                  for key, value in data.to_dict().items()}))
    return Batch.from_data_list(structures)


def test_the_pinned_reference_is_well_defined_and_the_raw_one_is_not(fixture):
    """The fixture's premise: with its on-axis sphere points put on the axis, the reference
    gives the same energies for any atom order to round-off; as released, it moves by
    milli-units with the order (rounding residues set those points' angles)."""
    ref = fixture["reference"]
    pinned = ref["energy_raw_pinned_permuted"]
    assert torch.allclose(pinned, ref["energy_raw_pinned"].expand_as(pinned), rtol=RTOL, atol=ATOL)
    raw = ref["energy_raw_permuted"]
    assert float((raw - ref["energy_raw"]).abs().max()) > 100 * ATOL


def test_imported_model_computes_the_reference_energies(fixture, batch, tmp_path):
    out = tmp_path / "model.pt"
    summary = import_ocp_checkpoint(str(FIXTURE), str(out))
    assert summary["weights"] == "ema" and summary["frame"] == "reference" and summary["model"] == "spinconv"
    assert fixture["reference"]["pin_tolerance"] == AXIS_TOLERANCE
    got = energies(out, batch)
    expected = fixture["reference"]["energy_raw_pinned"]
    assert torch.allclose(got, expected, rtol=RTOL, atol=ATOL), (got - expected).abs().max()
    # Unlike the reference, the imported model does not depend on the atom order.
    for seed in (0, 1):
        assert torch.allclose(energies(out, permuted(batch, seed)), got, rtol=RTOL, atol=ATOL)
    # The normalisers are OCP's: energies in eV are the reference's.
    exported = torch.load(out, weights_only=False)
    normalizer = exported["targets"]["normalizer"]
    target = fixture["normalizers"]["target"]
    assert normalizer["mean"] == pytest.approx(float(target["mean"]))
    assert normalizer["std"] == pytest.approx(float(target["std"]))
    assert normalizer["force_std"] == pytest.approx(float(fixture["normalizers"]["grad_target"]["std"]))
    assert exported["step"] == fixture["step"] and exported["exported"]["weights"] == "ema"


def test_imported_model_on_a_lattice_slab_does_not_depend_on_the_atom_order(tmp_path):
    """On lattice sites many neighbours lie on an edge's axis (collinear atoms), where the
    reference's angles came from rounding; the imported model places them on the axis."""
    from ase.build import fcc111

    from spinconv_train.datasets.ase_convert import atoms_to_data

    out = tmp_path / "model.pt"
    import_ocp_checkpoint(str(FIXTURE), str(out))
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=6.0)
    data = atoms_to_data(slab)
    batch = Batch.from_data_list([data])
    got = energies(out, batch)
    for seed in (0, 1, 2):
        assert torch.allclose(energies(out, permuted(batch, seed)), got, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("otf_graph", [True, False], ids=["on-the-fly graph", "stored edges"])
def test_imported_model_reproduces_the_reference_where_the_cap_binds(fixture, tmp_path, otf_graph):
    """The released models' cutoff (6 A) with a cap that binds for every atom: the reference
    keeps each target's nearest edges (on the fly), or the stored edges whose atom pair one
    of those links (from an LMDB's edges); the symmetric cap of native models does not."""
    capped = fixture["reference"]["capped"]
    expected = capped["energy_raw_pinned_otf" if otf_graph else "energy_raw_pinned_stored"]
    structures = []
    for structure, stored in zip(fixture["reference"]["structures"], capped["stored_edges"]):
        data = Data(**structure)
        if not otf_graph:
            data.edge_index, data.cell_offsets = stored["edge_index"], stored["cell_offsets"]
        structures.append(data)
    batch = Batch.from_data_list(structures)
    batch.atomic_numbers = batch.atomic_numbers.long()
    got = {}
    for cap in ("reference", "symmetric"):
        payload = import_payload(fixture, str(FIXTURE))
        assert payload["config"]["model"]["neighbor_cap"] == "reference"
        payload["config"]["model"].update(cutoff=capped["cutoff"], max_num_neighbors=capped["max_num_neighbors"],
                                          otf_graph=otf_graph, neighbor_cap=cap)
        path = tmp_path / f"{cap}.pt"
        torch.save(payload, path)
        got[cap] = energies(path, batch)
    assert torch.allclose(got["reference"], expected, rtol=RTOL, atol=ATOL), (got["reference"] - expected).abs().max()
    assert not torch.allclose(got["symmetric"], expected, rtol=1e-3, atol=1e-3)


def test_exact_frames_or_raw_weights_do_not_reproduce_the_reference(fixture, batch, tmp_path):
    expected = fixture["reference"]["energy_raw_pinned"]
    raw = tmp_path / "raw.pt"
    import_ocp_checkpoint(str(FIXTURE), str(raw), weights="model")
    assert not torch.allclose(energies(raw, batch), expected, rtol=1e-3, atol=1e-3)
    payload = import_payload(fixture, str(FIXTURE))
    payload["config"]["model"]["frame"] = "exact"
    exact = tmp_path / "exact.pt"
    torch.save(payload, exact)
    assert not torch.allclose(energies(exact, batch), expected, rtol=1e-3, atol=1e-3)


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
