"""Fixed, seeded benchmark structures built with ASE.

``benchmark_batch`` is the batch every speed number of this project is measured on:
8 OC20-like slabs, fcc(111) 3x3x4 Pt plus a CO or OH adsorbate (38 atoms each),
vacuum along z, periodic cell, bottom two layers fixed, positions rattled with a
fixed seed. ``scaled_system`` builds larger periodic slabs (about 100 to 2000 atoms)
for the linear-scaling check; ``molecule_batch`` copies of a small molecule (the
per-step latency of molecular dynamics on MD17-sized systems).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms
from ase.build import add_adsorbate, fcc111, molecule
from torch_geometric.data import Batch, Data

# Adsorbates placed on the slabs, cycled over the structures of a batch.
DEFAULT_ADSORBATES: tuple[str, ...] = ("CO", "OH")

# Adsorbate geometries (Å), binding atom first at the origin, along +z.
_ADSORBATE_GEOMETRY = {
    "CO": [[0.0, 0.0, 0.0], [0.0, 0.0, 1.15]],
    "OH": [[0.0, 0.0, 0.0], [0.0, 0.0, 0.97]],
    "O": [[0.0, 0.0, 0.0]],
    "H": [[0.0, 0.0, 0.0]],
    "N": [[0.0, 0.0, 0.0]],
    "C": [[0.0, 0.0, 0.0]],
}

# Supercell sizes (a, b) of the 4-layer slabs used by ``scaling_sizes``.
_SCALING_CELLS: tuple[tuple[int, int], ...] = ((5, 5), (8, 8), (11, 11), (16, 16), (25, 20))


def oc20_like_slab(
    metal: str = "Pt",
    adsorbate: str = "CO",
    size: tuple[int, int, int] = (3, 3, 4),
    vacuum: float = 10.0,
    rattle: float = 0.05,
    seed: int = 0,
) -> Atoms:
    """An fcc(111) slab with one adsorbate on a top site, OC20-style tags and constraints.

    Tags follow OC20: 0 subsurface, 1 top surface layer, 2 adsorbate; the lower half of
    the layers is fixed. ``rattle`` is the standard deviation (Å) of a seeded Gaussian
    displacement of every atom, so that no two neighbour distances tie exactly.
    """
    if adsorbate and adsorbate not in _ADSORBATE_GEOMETRY:
        known = ", ".join(sorted(_ADSORBATE_GEOMETRY))
        raise ValueError(f"adsorbate {adsorbate!r} not supported; use one of {known} or ''")
    slab = fcc111(metal, size=size, vacuum=vacuum, periodic=True)
    layers = size[2]
    # fcc111 numbers its layers with tag 1 = top ... tag layers = bottom.
    layer = slab.get_tags().copy()
    tags = np.where(layer == 1, 1, 0)
    fixed = (layer > layers // 2).astype(np.int64)
    n_slab = len(slab)
    if adsorbate:
        mol = Atoms(adsorbate, positions=_ADSORBATE_GEOMETRY[adsorbate])
        add_adsorbate(slab, mol, height=1.9, position="ontop")
    tags = np.concatenate([tags, np.full(len(slab) - n_slab, 2)])
    fixed = np.concatenate([fixed, np.zeros(len(slab) - n_slab, dtype=np.int64)])
    slab.set_tags(tags)
    slab.info["fixed"] = fixed
    if rattle > 0:
        rng = np.random.default_rng(seed)
        slab.positions += rng.normal(scale=rattle, size=slab.positions.shape)
    slab.pbc = (True, True, True)
    return slab


def atoms_to_data(atoms: Atoms, sid: int = 0, fid: int = 0) -> Data:
    """Convert ASE ``Atoms`` to a structure ``Data`` following docs/design.md."""
    n = len(atoms)
    fixed = atoms.info.get("fixed", np.zeros(n, dtype=np.int64))
    return Data(
        pos=torch.tensor(atoms.get_positions(), dtype=torch.float32),
        atomic_numbers=torch.tensor(atoms.get_atomic_numbers(), dtype=torch.float32),
        natoms=torch.tensor([n], dtype=torch.long),
        cell=torch.tensor(np.asarray(atoms.get_cell()), dtype=torch.float32).view(1, 3, 3),
        pbc=torch.tensor(np.asarray(atoms.get_pbc()), dtype=torch.bool).view(1, 3),
        tags=torch.tensor(atoms.get_tags(), dtype=torch.long),
        fixed=torch.tensor(fixed, dtype=torch.long),
        sid=sid,
        fid=fid,
    )


def benchmark_batch(
    num_structures: int = 8,
    metal: str = "Pt",
    adsorbates: Sequence[str] = DEFAULT_ADSORBATES,
    seed: int = 0,
) -> Batch:
    """The fixed benchmark batch: ``num_structures`` 38-atom Pt(111)+CO/OH slabs."""
    if num_structures < 1:
        raise ValueError(f"num_structures must be >= 1, got {num_structures}")
    data: list[Data] = []
    for k in range(num_structures):
        ads = adsorbates[k % len(adsorbates)]
        atoms = oc20_like_slab(metal=metal, adsorbate=ads, seed=seed + k)
        data.append(atoms_to_data(atoms, sid=k, fid=0))
    return Batch.from_data_list(data)


def scaling_sizes() -> list[int]:
    """Atom counts of the scaled systems (100 ... 2000)."""
    return [a * b * 4 for a, b in _SCALING_CELLS]


def scaled_system(num_atoms: int, metal: str = "Pt", seed: int = 0) -> Batch:
    """A single periodic 4-layer fcc(111) slab of exactly ``num_atoms`` atoms.

    ``num_atoms`` must be one of ``scaling_sizes()`` (a 4-layer a x b supercell).
    """
    cells = {a * b * 4: (a, b) for a, b in _SCALING_CELLS}
    if num_atoms not in cells:
        raise ValueError(f"num_atoms={num_atoms} not available; choose one of {sorted(cells)}")
    a, b = cells[num_atoms]
    atoms = oc20_like_slab(metal=metal, adsorbate="", size=(a, b, 4), seed=seed)
    return Batch.from_data_list([atoms_to_data(atoms, sid=0, fid=0)])


def molecule_batch(name: str, num_structures: int = 1, box_margin: float = 8.0, seed: int = 0) -> Batch:
    """``num_structures`` rattled copies of ASE's molecule ``name`` (e.g. ``CH3CH2OH``,
    ``C6H6``), each centred in a periodic cube with ``box_margin`` Å of vacuum on every
    side: periodic models that expect a cell (as the reference does) see no image
    neighbours within cutoffs below ``box_margin``, so it is the isolated molecule."""
    if num_structures < 1:
        raise ValueError(f"num_structures must be >= 1, got {num_structures}")
    try:
        base = molecule(name)
    except KeyError:
        raise ValueError(f"unknown molecule {name!r}: use a name of ase.collections.g2 (e.g. CH3CH2OH)") from None
    data: list[Data] = []
    for k in range(num_structures):
        atoms = base.copy()
        atoms.rattle(0.02, seed=seed + k)
        extent = atoms.positions.max(axis=0) - atoms.positions.min(axis=0)
        atoms.set_cell(np.full(3, float(extent.max()) + 2.0 * box_margin))
        atoms.center()
        atoms.pbc = True
        data.append(atoms_to_data(atoms, sid=k, fid=0))
    return Batch.from_data_list(data)
