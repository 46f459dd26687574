"""OCP SchNet and DimeNet++ checkpoints (tests/fixtures/ocp/reference_baselines.pt, from OCP's
own wrappers at e7a8745e): SchNet with the reference's energies, DimeNet++ by names and shapes
(its reference forward needs torch_sparse)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Batch, Data

from spinconv_train.checkpoints.builder import build_model
from spinconv_train.config import config_from_dict
from spinconv_train.ocp.checkpoint_import import OcpImportError, import_payload

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ocp" / "reference_baselines.pt"


@pytest.fixture(scope="module")
def fixture():
    return torch.load(FIXTURE, map_location="cpu", weights_only=False)


def built(payload):
    model = build_model(config_from_dict(payload["config"]))
    model.load_state_dict(payload["model"])
    return model.eval()


def test_schnet_reproduces_the_reference_energies(fixture):
    batch = Batch.from_data_list([Data(**s) for s in fixture["structures"]])
    batch.atomic_numbers = batch.atomic_numbers.long()
    payload = import_payload(fixture["schnet"], "schnet.pt")
    assert payload["exported"]["weights"] == "model"  # the checkpoint has no EMA
    energy = built(payload)(batch)["energy"].detach()
    reference = fixture["schnet"]["reference"]["energy_raw"]
    assert torch.allclose(energy, reference, rtol=1e-5, atol=1e-5 * float(reference.abs().max()))


def test_dimenetpp_names_and_shapes_map_and_output_biases_fold(fixture):
    ocp = copy.deepcopy(fixture["dimenetplusplus"])
    generator = torch.Generator().manual_seed(0)
    for key, value in ocp["state_dict"].items():
        ocp["state_dict"][key] = torch.randn(value.shape, generator=generator)
    payload = import_payload(ocp, "dpp.pt")
    model = built(payload)  # every parameter found a place with its shape (strict load)
    assert len(payload["model"]) == len(model.state_dict())
    block = model.net.output_blocks[0]
    up_bias = ocp["state_dict"]["module.output_blocks.0.lin_up.bias"]
    up_weight = ocp["state_dict"]["module.output_blocks.0.lin_up.weight"]
    w0 = ocp["state_dict"]["module.output_blocks.0.lins.0.weight"]
    c0 = ocp["state_dict"]["module.output_blocks.0.lins.0.bias"]
    x = torch.randn(5, up_weight.shape[1], generator=generator)
    expected = (x @ up_weight.T + up_bias) @ w0.T + c0  # OCP: lin_up with bias, then lins.0
    with torch.no_grad():
        got = block.lins[0](block.lin_up(x))
    assert torch.allclose(got, expected, atol=1e-5)


def test_dimenetpp_without_output_layers_cannot_take_the_bias(fixture):
    ocp = copy.deepcopy(fixture["dimenetplusplus"])
    ocp["state_dict"] = {k: v for k, v in ocp["state_dict"].items() if ".lins." not in k}
    ocp["config"]["model_attributes"]["num_output_layers"] = 0
    with pytest.raises(OcpImportError, match=r"lin_up.bias"):
        import_payload(ocp, "dpp.pt")
