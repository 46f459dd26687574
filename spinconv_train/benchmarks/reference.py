"""Load and run the reference SpinConv (OCP v0.0.3) from a user-supplied checkout.

The reference code is never part of this repository: the user points ``root`` at their
own checkout of the Open Catalyst Project repository (the directory that contains
``ocpmodels/``). ``ocpmodels/__init__`` and ``ocpmodels/common/utils.py`` import many
optional packages (ray, demjson, matplotlib), so instead of importing the package this
loader

1. provides empty ``ocpmodels``, ``ocpmodels.common`` and ``ocpmodels.models`` packages,
2. loads ``common/registry.py``, ``common/transforms.py`` and ``models/base.py`` by path,
3. builds an ``ocpmodels.common.utils`` holding only the three functions ``spinconv.py``
   needs (``conditional_grad``, ``get_pbc_distances``, ``radius_graph_pbc``), compiled
   from the checkout's own ``utils.py`` source,
4. installs the pure-torch ``torch_scatter`` stand-in when the real one is absent,
5. loads ``models/spinconv.py`` by path,

and then restores ``sys.modules``, so nothing of the reference leaks into later imports.
Run the reference in float32 only (its periodic graph code hard-codes float32 offsets).
"""
from __future__ import annotations

import ast
import copy
import importlib.util
import math
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spinconv_train.benchmarks import scatter_standin
from spinconv_train.models.spinconv.oc20 import OC20_S2EF_CONFIG

# The OC20 S2EF configuration of the reference (configs/s2ef/all/spinconv/spinconv_force.yml).
# Its force-centric head is called "random" (ours reads that name as "direct").
OC20_REFERENCE_CONFIG: dict[str, Any] = {"num_atoms": None, "bond_feat_dim": None, "num_targets": 1, **OC20_S2EF_CONFIG,
                                         "force_estimator": "random"}

_UTILS_FUNCTIONS = ("conditional_grad", "get_pbc_distances", "radius_graph_pbc")


class ReferenceLoadError(RuntimeError):
    """The reference checkout is missing or does not have the expected layout."""


def _check_root(root: str | Path) -> Path:
    root = Path(root).expanduser().resolve()
    needed = [
        "ocpmodels/models/spinconv.py",
        "ocpmodels/models/base.py",
        "ocpmodels/common/registry.py",
        "ocpmodels/common/transforms.py",
        "ocpmodels/common/utils.py",
    ]
    missing = [rel for rel in needed if not (root / rel).is_file()]
    if missing:
        raise ReferenceLoadError(
            f"reference root {str(root)!r} is not an OCP checkout (v0.0.3 layout): missing "
            + ", ".join(missing)
        )
    return root


def _package(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = []  # a package with nothing on disk: submodules are set explicitly
    return module


def _load_by_path(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ReferenceLoadError(f"cannot load {path} as module {name}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _utils_subset(path: Path) -> types.ModuleType:
    """A module with only the named top-level functions of the reference ``utils.py``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    keep = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name in _UTILS_FUNCTIONS
    ]
    found = {node.name for node in keep}
    if found != set(_UTILS_FUNCTIONS):
        raise ReferenceLoadError(
            f"{path}: expected functions {sorted(_UTILS_FUNCTIONS)}, found {sorted(found)}"
        )
    module = types.ModuleType("ocpmodels.common.utils")
    module.__file__ = str(path)
    module.__dict__.update({"copy": copy, "math": math, "np": np, "torch": torch})
    code = compile(ast.Module(body=keep, type_ignores=[]), str(path), "exec")
    exec(code, module.__dict__)  # noqa: S102 - the user's own checkout, benchmark use only
    return module


@contextmanager
def _restored_sys_modules(prefixes: tuple) -> Iterator[None]:
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] in prefixes}
    try:
        yield
    finally:
        for key in [k for k in sys.modules if k.split(".")[0] in prefixes]:
            del sys.modules[key]
        sys.modules.update(saved)


def torch_scatter_available() -> bool:
    """Whether a real ``torch_scatter`` can be imported."""
    return importlib.util.find_spec("torch_scatter") is not None


def load_reference_module(root: str | Path) -> types.ModuleType:
    """Load ``ocpmodels/models/spinconv.py`` from the checkout at ``root`` (see module doc)."""
    root = _check_root(root)
    # torch_geometric decides at import time whether to use torch_scatter: import it
    # first, so that the stand-in never changes torch_geometric's own code paths.
    import torch_geometric.nn  # noqa: F401

    with _restored_sys_modules(("ocpmodels", "torch_scatter")):
        if not torch_scatter_available():
            sys.modules["torch_scatter"] = scatter_standin.as_module()
        base = root / "ocpmodels"
        for name in ("ocpmodels", "ocpmodels.common", "ocpmodels.models"):
            sys.modules[name] = _package(name)
        _load_by_path("ocpmodels.common.registry", base / "common" / "registry.py")
        _load_by_path("ocpmodels.common.transforms", base / "common" / "transforms.py")
        sys.modules["ocpmodels.common.utils"] = _utils_subset(base / "common" / "utils.py")
        _load_by_path("ocpmodels.models.base", base / "models" / "base.py")
        module = _load_by_path("ocpmodels.models.spinconv", base / "models" / "spinconv.py")
    return module


def build_reference_spinconv(
    root: str | Path, **overrides: Any
) -> nn.Module:
    """The reference ``spinconv`` model with the OC20 configuration (plus ``overrides``)."""
    module = load_reference_module(root)
    config = dict(OC20_REFERENCE_CONFIG)
    unknown = set(overrides) - set(config) - {
        "num_rand_rotations", "lmax", "embedding_size", "max_num_elements",
        "distance_block_scalar_max", "model_ref_number", "readout", "show_timing_info",
    }
    if unknown:
        raise ValueError(f"unknown reference spinconv option(s): {sorted(unknown)}")
    config.update(overrides)
    return module.spinconv(**config)


class ReferenceSpinConv(nn.Module):
    """Wraps the reference model so that ``model(batch)`` follows docs/design.md.

    Returns ``{"energy": (B,), "forces": (N, 3)}``. The batch is cloned per call because
    the reference writes graph fields into it and sets ``requires_grad`` on ``pos``.
    Note the reference re-enables autograd inside ``forward`` whenever it regresses
    forces (its ``conditional_grad``), even under ``torch.no_grad()``, as its own
    prediction path does.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        data = batch.clone()
        data.atomic_numbers = data.atomic_numbers.float()
        # The reference creates index tensors without a device (``torch.arange(n)[mask]``),
        # which torch of its day accepted for CUDA masks; current torch needs them on the
        # mask's device, so its factory calls default to the batch's device.
        with torch.device(data.pos.device):
            out = self.model(data)
        if isinstance(out, tuple):
            energy, forces = out
            return {"energy": energy.view(-1), "forces": forces}
        return {"energy": out.view(-1)}


def reference_model(root: str | Path, **overrides: Any) -> ReferenceSpinConv:
    """Convenience: build the reference OC20 model and wrap it (float32)."""
    return ReferenceSpinConv(build_reference_spinconv(root, **overrides)).float()


def num_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

