"""OCP SchNet and DimeNet++ checkpoints (tests/fixtures/ocp/reference_baselines.pt, from OCP's
own wrappers at e7a8745e): SchNet with the reference's energies, DimeNet++ with the reference's
energies and forces (its triplets run with a torch_sparse stand-in checked in the fixture
script), and by names, shapes and the output-bias fold.

Tolerance: rtol 1e-5 and atol 1e-5 of the largest reference value. Both sides are float32
with the same layers in a different summation order (graph, triplets, scatter): observed
differences are below 1e-6 of the largest value, a few float32 ulps (1.2e-7) over sums of
tens of terms; a wrong basis, graph, angle or weight changes them by percents."""
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
RTOL = 1e-5


def close(got: torch.Tensor, reference: torch.Tensor) -> bool:
    return torch.allclose(got, reference, rtol=RTOL, atol=RTOL * float(reference.abs().max()))


def structures(fixture) -> Batch:
    batch = Batch.from_data_list([Data(**s) for s in fixture["structures"]])
    batch.atomic_numbers = batch.atomic_numbers.long()
    return batch


@pytest.fixture(scope="module")
def fixture():
    return torch.load(FIXTURE, map_location="cpu", weights_only=False)


def built(payload):
    model = build_model(config_from_dict(payload["config"]))
    model.load_state_dict(payload["model"])
    return model.eval()


def test_schnet_reproduces_the_reference_energies(fixture):
    payload = import_payload(fixture["schnet"], "schnet.pt")
    assert payload["exported"]["weights"] == "model"  # the checkpoint has no EMA
    energy = built(payload)(structures(fixture))["energy"].detach()
    assert close(energy, fixture["schnet"]["reference"]["energy_raw"])


def test_dimenetpp_reproduces_the_reference_energies_and_forces(fixture):
    payload = import_payload(fixture["dimenetplusplus"], "dpp.pt")
    assert payload["config"]["model"]["detach_angles"] is True
    out = built(payload)(structures(fixture))
    reference = fixture["dimenetplusplus"]["reference"]
    assert reference["energy_raw"].abs().min() > 0.1  # the fixture's output layers are not zero
    assert close(out["energy"].detach(), reference["energy_raw"])
    assert close(out["forces"].detach(), reference["forces_raw"])


def test_dimenetpp_exact_gradient_is_another_force_field_with_the_same_energies(fixture):
    """OCP's forces treat the angles as constants; the exact -dE/dx (this project's default,
    ``model.detach_angles: false``) keeps the energies and changes the forces."""
    payload = import_payload(fixture["dimenetplusplus"], "dpp.pt")
    payload["config"]["model"]["detach_angles"] = False
    out = built(payload)(structures(fixture))
    reference = fixture["dimenetplusplus"]["reference"]
    assert close(out["energy"].detach(), reference["energy_raw"])
    gap = (out["forces"].detach() - reference["forces_raw"]).abs().max()
    assert gap > 0.05 * reference["forces_raw"].abs().max()


@pytest.mark.parametrize("name", ["schnet", "dimenetplusplus"])
def test_an_unset_cutoff_is_ocps_default(fixture, name):
    ocp = copy.deepcopy(fixture[name])
    del ocp["config"]["model_attributes"]["cutoff"]
    payload = import_payload(ocp, f"{name}.pt")
    assert payload["config"]["model"]["cutoff"] == 10.0
    assert built(payload).max_neighbors == 50


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
