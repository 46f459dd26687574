"""Shared structures and tiny model configurations for the SpinConv tests.

A plain module, not conftest.py: the suite's other tests import their helpers with
``from conftest import ...``, which a second conftest module would shadow.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc111, molecule
from torch_geometric.data import Batch, Data

SPHARM_MODULE = "spinconv_train.models.spinconv.spin_conv_spharm"


def spharm_available() -> bool:
    """True when the spherical-harmonic spin convolution module exists (not: imports cleanly)."""
    return importlib.util.find_spec(SPHARM_MODULE) is not None


def skip_if_spharm_missing(kind: str) -> None:
    if kind != "fullconv" and not spharm_available():
        pytest.skip(f"{SPHARM_MODULE} does not exist yet")


def slab_with_adsorbate(seed: int = 0, size=(2, 2, 3), adsorbate: str = "CO", rattle: float = 0.08) -> Atoms:
    """A rattled periodic fcc(111) slab with a small adsorbate (periodic in all directions)."""
    slab = fcc111("Cu", size, vacuum=5.0)
    add_adsorbate(slab, molecule(adsorbate) if len(adsorbate) > 1 else adsorbate, 1.9, "fcc")
    slab.pbc = True
    slab.rattle(rattle, seed=seed)
    return slab


def distorted_crystal(seed: int = 1) -> Atoms:
    """A rattled 8-atom fcc Cu/Au/Ni cell with a non-orthorhombic, periodic cell."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
    atoms.set_chemical_symbols(["Cu", "Cu", "Au", "Cu", "Cu", "Ni", "Cu", "Cu"])
    atoms.rattle(0.05, seed=seed)
    atoms.set_cell(atoms.cell.array + np.array([[0.0, 0.1, 0.0], [0.05, 0.0, 0.0], [0.0, 0.0, 0.1]]),
                   scale_atoms=True)
    return atoms


def rattled_molecule(name: str = "CH3CH2OH", seed: int = 0, rattle: float = 0.05) -> Atoms:
    mol = molecule(name)
    mol.rattle(rattle, seed=seed)
    return mol


def to_data(atoms: Atoms, dtype=torch.float64, pos: np.ndarray | None = None, cell: np.ndarray | None = None) -> Data:
    """ASE Atoms -> torch_geometric Data following docs/design.md (cell zeros for molecules)."""
    positions = atoms.positions if pos is None else pos
    lattice = (atoms.cell.array if atoms.pbc.any() else np.zeros((3, 3))) if cell is None else cell
    return Data(
        pos=torch.tensor(positions, dtype=dtype),
        atomic_numbers=torch.tensor(atoms.numbers, dtype=dtype),
        natoms=torch.tensor([len(atoms)]),
        cell=torch.tensor(lattice, dtype=dtype).view(1, 3, 3),
    )


def to_batch(structures: list[Atoms], dtype=torch.float64) -> Batch:
    return Batch.from_data_list([to_data(a, dtype) for a in structures])


def tiny_config(**overrides) -> dict:
    """A small but complete SpinConv configuration (fast on CPU)."""
    config = {
        "hidden_channels": 8,
        "mid_hidden_channels": 16,
        "num_interactions": 2,
        "num_basis_functions": 32,
        "basis_width_scalar": 2.0,
        "max_num_neighbors": 100,
        "sphere_size_lat": 6,
        "sphere_size_long": 6,
        "cutoff": 3.5,
        "embedding_size": 8,
        "max_num_elements": 90,
        "otf_graph": True,
        "use_pbc": True,
        "regress_forces": True,
        "force_estimator": "direct",
        "sphere_message": "fullconv",
        "output_message": "fullconv",
        "lmax": 2,
    }
    config.update(overrides)
    return config


def make_model(dtype=torch.float64, seed: int = 0, **overrides):
    from spinconv_train.models import SpinConv

    torch.manual_seed(seed)
    model = SpinConv(**tiny_config(**overrides)).to(dtype)
    # Large random weights everywhere so that the energy depends strongly on the geometry
    # (the model's own init starts the energy head's last layer at zero, so an untrained
    # model would have a constant energy), and non-trivial element embeddings (initialised
    # near zero, as the reference does).
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Embedding):
                module.weight.normal_(0.0, 0.5)
            elif isinstance(module, (torch.nn.Linear, torch.nn.Conv1d)):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, 2.0 / fan_in**0.5)
                module.bias.normal_(0.0, 0.3)
    return model


def random_rotation(seed: int, dtype=torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.to(dtype)
