"""The reference loader: a fake checkout in CI, the real one when SPINCONV_REFERENCE_ROOT is set."""
import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from spinconv_train.benchmarks.reference import (
    ReferenceLoadError,
    load_reference_module,
    num_parameters,
    reference_model,
)

REFERENCE_ROOT = os.environ.get("SPINCONV_REFERENCE_ROOT")


def _fake_checkout(root: Path) -> Path:
    """A minimal checkout with the reference's layout and import structure (our own text)."""
    pkg = root / "ocpmodels"
    (pkg / "common").mkdir(parents=True)
    (pkg / "models").mkdir()
    (pkg / "__init__.py").write_text("import this_package_does_not_exist\n")
    (pkg / "common" / "registry.py").write_text(textwrap.dedent("""
        class _Registry:
            def register_model(self, name):
                return lambda cls: cls
        registry = _Registry()
    """))
    (pkg / "common" / "transforms.py").write_text("class RandomRotate:\n    pass\n")
    (pkg / "common" / "utils.py").write_text(textwrap.dedent("""
        import this_package_does_not_exist_either
        def conditional_grad(dec):
            return lambda f: f
        def get_pbc_distances(*args):
            return torch.zeros(1)
        def radius_graph_pbc(*args):
            return copy.deepcopy(np.zeros(1))
        def unrelated():
            pass
    """))
    (pkg / "models" / "base.py").write_text("import torch.nn as nn\nclass BaseModel(nn.Module):\n    pass\n")
    (pkg / "models" / "spinconv.py").write_text(textwrap.dedent("""
        import torch
        from torch_scatter import scatter
        from ocpmodels.common.registry import registry
        from ocpmodels.common.transforms import RandomRotate
        from ocpmodels.common.utils import conditional_grad, get_pbc_distances, radius_graph_pbc
        from ocpmodels.models.base import BaseModel

        @registry.register_model("spinconv")
        class spinconv(BaseModel):
            def __init__(self, **kwargs):
                super().__init__()
                self.kwargs = kwargs
                self.lin = torch.nn.Linear(1, 1)
            def forward(self, data):
                e = scatter(self.lin(data.pos[:, :1]), data.batch, dim=0)
                return e, torch.zeros_like(data.pos)
    """))
    return root


def test_loader_uses_only_needed_files_and_restores_modules(tmp_path):
    root = _fake_checkout(tmp_path)
    before = {k for k in sys.modules if k.split(".")[0] in ("ocpmodels", "torch_scatter")}
    module = load_reference_module(root)
    after = {k for k in sys.modules if k.split(".")[0] in ("ocpmodels", "torch_scatter")}
    assert before == after  # nothing of the reference leaks into sys.modules
    utils = sys.modules.get("ocpmodels.common.utils")
    assert utils is None
    assert hasattr(module, "spinconv")
    # The fake model runs through the stand-in scatter: energy = per-structure sum.
    from spinconv_train.benchmarks.structures import benchmark_batch

    model = reference_model(root)
    batch = benchmark_batch(2)
    out = model(batch)
    expected = torch.stack([model.model.lin(batch.pos[batch.batch == k, :1]).sum() for k in range(2)])
    assert torch.allclose(out["energy"], expected, atol=1e-5)
    assert out["forces"].shape == (76, 3)
    assert model.model.kwargs["mid_hidden_channels"] == 256  # the OC20 configuration


def test_loader_names_missing_files(tmp_path):
    with pytest.raises(ReferenceLoadError, match="ocpmodels/models/spinconv.py"):
        load_reference_module(tmp_path)


@pytest.mark.skipif(not REFERENCE_ROOT, reason="set SPINCONV_REFERENCE_ROOT to an OCP v0.0.3 checkout")
def test_real_reference_oc20_parameters_and_tiny_step():
    from spinconv_train.benchmarks.structures import benchmark_batch

    torch.manual_seed(0)
    model = reference_model(REFERENCE_ROOT)
    assert num_parameters(model) == 8_473_371  # 8.47 M, the paper's OC20 model
    small = reference_model(
        REFERENCE_ROOT, hidden_channels=8, mid_hidden_channels=16, num_interactions=1,
        num_basis_functions=16, sphere_size_lat=4, sphere_size_long=4, max_num_neighbors=12,
    )
    batch = benchmark_batch(1)
    out = small(batch)
    assert out["energy"].shape == (1,) and out["forces"].shape == (38, 3)
    loss = out["energy"].abs().sum() + out["forces"].abs().sum()
    loss.backward()
    grads = [p.grad for p in small.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
