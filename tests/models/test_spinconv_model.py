"""SpinConv model: exact invariance, exact gradients, determinism, smoothness, batching."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from spinconv_testkit import (
    make_model,
    random_rotation,
    rattled_molecule,
    skip_if_spharm_missing,
    slab_with_adsorbate,
    tiny_config,
    to_batch,
    to_data,
)
from torch_geometric.data import Batch

from spinconv_train.models import SpinConv
from spinconv_train.registry import MODELS

KINDS = ["fullconv", "rotspharmwd", "spharm", "rotspharmroll"]
# energy-centric, force-centric (sphere head, edge head); "-smooth": C1 sphere interpolation
VARIANTS = ["grad", "direct", "edge", "grad-smooth", "direct-smooth"]


def variant_kwargs(variant: str) -> dict:
    """Model keywords of a test variant."""
    name, _, interpolation = variant.partition("-")
    kwargs = {"sphere_interpolation": interpolation} if interpolation else {}
    if name == "edge":
        return {"force_estimator": "direct", "direct_force_head": "edge", **kwargs}
    return {"force_estimator": name, **kwargs}

OC20_CONFIG = {
    "hidden_channels": 32,
    "mid_hidden_channels": 256,
    "num_interactions": 3,
    "num_basis_functions": 512,
    "basis_width_scalar": 3.0,
    "max_num_neighbors": 40,
    "sphere_size_lat": 16,
    "sphere_size_long": 12,
    "cutoff": 6.0,
    "distance_block_scalar_max": 2.0,
    "max_num_elements": 90,
    "embedding_size": 32,
    "sphere_message": "fullconv",
    "output_message": "fullconv",
    "lmax": False,
    "force_estimator": "random",
    "num_rand_rotations": 5,
    "scale_distances": True,
    "use_pbc": True,
    "regress_forces": True,
    "otf_graph": False,
}


def _predict(model, structures, dtype=torch.float64):
    out = model(to_batch(structures, dtype))
    return out["energy"].detach(), out["forces"].detach()


def _transformed_copies(atoms, seed: int):
    """(name, atoms', rotation, permutation) for rotation, translation, permutation, image change."""
    rot = random_rotation(seed).numpy()
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ rot.T
    rotated.cell = atoms.cell.array @ rot.T
    translated = atoms.copy()
    translated.positions = atoms.positions + np.array([1.3, -0.7, 2.1])
    perm = np.random.default_rng(seed).permutation(len(atoms))
    permuted = atoms[perm]
    imaged = atoms.copy()
    shift = np.zeros((len(atoms), 3))
    shift[0] = atoms.cell.array[0] - atoms.cell.array[1]  # move atom 0 to another periodic image
    shift[-1] = atoms.cell.array[2]
    imaged.positions = atoms.positions + shift
    ident = np.arange(len(atoms))
    eye = np.eye(3)
    return [
        ("rotation", rotated, rot, ident),
        ("translation", translated, eye, ident),
        ("permutation", permuted, eye, perm),
        ("image", imaged, eye, ident),
    ]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_invariance_and_equivariance(kind, variant, dtype, tol):
    skip_if_spharm_missing(kind)
    model = make_model(dtype, **variant_kwargs(variant), sphere_message=kind, output_message=kind, envelope=True)
    atoms = slab_with_adsorbate(seed=2, size=(2, 2, 2))
    energy, forces = _predict(model, [atoms], dtype)
    fscale = float(forces.abs().max())
    assert fscale > 1e-3  # the test is meaningful only if forces are not ~0
    for name, other, rot, perm in _transformed_copies(atoms, seed=5):
        e2, f2 = _predict(model, [other], dtype)
        assert abs(float(e2 - energy)) <= tol * abs(float(energy)), name
        expected = forces[torch.as_tensor(perm)] @ torch.as_tensor(rot, dtype=dtype).T
        assert float((f2 - expected).abs().max()) <= tol * fscale, name


@pytest.mark.parametrize("variant", VARIANTS)
def test_molecule_invariance_without_cell(variant):
    model = make_model(**variant_kwargs(variant))
    mol = rattled_molecule("CH3CH2OH", seed=1)
    energy, forces = _predict(model, [mol])
    rot = random_rotation(11).numpy()
    turned = mol.copy()
    turned.positions = mol.positions @ rot.T + 3.0
    e2, f2 = _predict(model, [turned])
    assert abs(float(e2 - energy)) <= 1e-9 * abs(float(energy))
    assert float((f2 - forces @ torch.as_tensor(rot).T).abs().max()) <= 1e-9 * float(forces.abs().max())


def _central_difference(model, atoms, atom: int, axis: int, h: float = 5e-7) -> float:
    """Central difference of -dE/dx.

    The step is small because bilinear splatting is piecewise linear in the angles: with
    thousands of (neighbour, edge) pairs moving, a grid line is crossed within ~1e-4 Å of
    almost any geometry, so only a step well below that measures the derivative (rounding
    error in float64 is ~1e-9 relative at this step).
    """
    values = []
    for step in (-1, 1):
        pos = atoms.positions.copy()
        pos[atom, axis] += step * h
        with torch.no_grad():
            values.append(float(model(Batch.from_data_list([to_data(atoms, pos=pos)]))["energy"]))
    return -(values[1] - values[0]) / (2.0 * h)


@pytest.mark.parametrize("envelope,interpolation", [(False, "bilinear"), (True, "bilinear"), (True, "smooth")])
def test_energy_centric_forces_are_exact_gradient(envelope, interpolation):
    model = make_model(force_estimator="grad", envelope=envelope, cutoff=4.0, sphere_interpolation=interpolation)
    atoms = slab_with_adsorbate(seed=4, adsorbate="CO", rattle=0.1)
    _, forces = _predict(model, [atoms])
    scale = float(forces.abs().max())
    assert scale > 1e-2
    n = len(atoms)
    for atom in (n - 1, n - 2, 5):  # both adsorbate atoms and a slab atom
        for axis in range(3):
            fd = _central_difference(model, atoms, atom, axis)
            assert abs(fd - float(forces[atom, axis])) <= 1e-6 * scale, (atom, axis)


def _forces_along_path(model, atoms, atom: int, length: float, steps: int) -> np.ndarray:
    """Forces (steps + 1, N, 3) while ``atom`` moves by ``length`` Å along x."""
    frames = []
    for i in range(steps + 1):
        pos = atoms.positions.copy()
        pos[atom, 0] += length * i / steps
        frames.append(to_data(atoms, pos=pos))
    with torch.no_grad():
        out = [model(Batch.from_data_list(frames[i:i + 50]))["forces"] for i in range(0, steps + 1, 50)]
    return torch.cat(out).view(steps + 1, len(atoms), 3).numpy()


def test_smooth_interpolation_gives_continuous_forces():
    """Moving an atom 0.02 Å in 400 steps: with the bilinear splat the forces jump where a
    neighbour crosses a grid line (the largest change per step is hundreds of times the
    typical one); with smooth interpolation they change by about the same small amount at
    every step."""
    atoms = rattled_molecule("CH3CH2OH", seed=0)
    ratios = {}
    for interpolation in ("bilinear", "smooth"):
        model = make_model(force_estimator="grad", envelope=True, cutoff=5.0, sphere_interpolation=interpolation)
        forces = _forces_along_path(model, atoms, 0, 0.02, 400)
        change = np.abs(np.diff(forces, axis=0)).max(axis=(1, 2))
        ratios[interpolation] = float(change.max() / np.median(change))
    assert ratios["bilinear"] > 50 and ratios["smooth"] < 3, ratios


def test_collinear_atoms_give_finite_gradients():
    """Atoms exactly on a line put neighbours on the poles of the edge spheres."""
    from ase import Atoms

    line = Atoms("COCO", positions=[[0, 0, 0], [1.2, 0, 0], [2.4, 0, 0], [3.6, 0, 0]])
    for variant in VARIANTS:
        model = make_model(**variant_kwargs(variant))
        model.train()
        out = model(to_batch([line]))
        assert torch.isfinite(out["energy"]).all() and torch.isfinite(out["forces"]).all()
        (out["energy"].sum() + out["forces"].square().sum()).backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        # forces of a linear molecule point along the line (energy-centric: by symmetry;
        # edge head: every edge lies on the line)
        if variant.partition("-")[0] in ("grad", "edge"):
            forces = out["forces"].detach()
            assert float(forces[:, 1:].abs().max()) < 1e-9 * float(forces.abs().max())


def test_edge_force_head_gives_no_force_at_a_symmetric_site():
    """Methane's carbon sits at a tetrahedral site: by symmetry its force is zero, which
    the edge head gets exactly (equal strengths along four cancelling directions), with
    no per-atom frame to be ill-posed there."""
    from ase.build import molecule

    methane = molecule("CH4")
    model = make_model(**variant_kwargs("edge"))
    forces = model(to_batch([methane]))["forces"].detach()
    carbon = int(np.flatnonzero(methane.numbers == 6)[0])
    scale = float(forces.abs().max())
    assert scale > 1e-3
    assert float(forces[carbon].abs().max()) < 1e-10 * scale
    # each hydrogen is pushed along its C-H bond
    bonds = torch.as_tensor(methane.positions - methane.positions[carbon])
    for h in np.flatnonzero(methane.numbers == 1):
        cross = torch.linalg.cross(forces[h], bonds[h])
        assert float(cross.abs().max()) < 1e-10 * scale


def test_force_centric_inference_is_bit_identical():
    model = make_model(force_estimator="direct", dtype=torch.float32)
    model.eval()
    batch = to_batch([slab_with_adsorbate(seed=1), slab_with_adsorbate(seed=2)], torch.float32)
    with torch.no_grad():
        first = model(batch)
        second = model(batch)
    assert torch.equal(first["energy"], second["energy"])
    assert torch.equal(first["forces"], second["forces"])


def test_direct_forces_build_no_position_graph():
    model = make_model(force_estimator="direct")
    batch = to_batch([slab_with_adsorbate(seed=1)])
    out = model(batch)
    assert not batch.pos.requires_grad
    with pytest.raises(RuntimeError):
        torch.autograd.grad(out["energy"].sum(), batch.pos)


def _two_clusters(gap: float):
    """Two rattled triangles whose closest inter-cluster distance is ``gap``."""
    from ase import Atoms

    tri = np.array([[0.0, 0.0, 0.0], [1.4, 0.1, 0.0], [0.6, 1.2, 0.3]])
    left = tri.copy()  # atom 1 is its +x-most point
    right = tri.copy()  # atom 0 is its -x-most point
    start = left[1]
    direction = np.array([1.0, 0.15, -0.1])
    direction /= np.linalg.norm(direction)
    # place right[0] at distance `gap` from left[1] along `direction`
    right += start + gap * direction - right[0]
    atoms = Atoms("CNOCNO", positions=np.concatenate([left, right]))
    d = np.linalg.norm(atoms.positions[:3, None] - atoms.positions[None, 3:], axis=-1)
    assert abs(d.min() - gap) < 1e-12 and np.sort(d.ravel())[1] > gap + 0.1
    return atoms


@pytest.mark.parametrize("variant", VARIANTS)
def test_envelope_makes_energy_continuous_at_cutoff(variant):
    cutoff = 3.5
    smooth = make_model(**variant_kwargs(variant), envelope=True, cutoff=cutoff)
    paper = make_model(**variant_kwargs(variant), envelope=False, cutoff=cutoff)
    delta = 1e-5
    inside, outside = _two_clusters(cutoff - delta), _two_clusters(cutoff + delta)
    e_in, f_in = _predict(smooth, [inside])
    e_out, f_out = _predict(smooth, [outside])
    assert abs(float(e_in - e_out)) < 1e-8 * abs(float(e_in))
    assert float((f_in - f_out).abs().max()) < 1e-6 * float(f_in.abs().max())
    # Without the envelope (the paper's model) the same crossing is a visible jump.
    p_in, _ = _predict(paper, [inside])
    p_out, _ = _predict(paper, [outside])
    assert abs(float(p_in - p_out)) > 1e-5 * abs(float(p_in))


@pytest.mark.parametrize("variant", VARIANTS)
def test_batched_equals_per_structure(variant):
    model = make_model(**variant_kwargs(variant), envelope=True)
    structures = [slab_with_adsorbate(seed=1), rattled_molecule("CH3CH2OH"), slab_with_adsorbate(seed=3, size=(2, 2, 2))]
    energy, forces = _predict(model, structures)
    start = 0
    for b, atoms in enumerate(structures):
        e1, f1 = _predict(model, [atoms])
        assert abs(float(energy[b] - e1)) <= 1e-10 * abs(float(e1))
        assert float((forces[start : start + len(atoms)] - f1).abs().max()) <= 1e-10 * float(f1.abs().max())
        start += len(atoms)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_parameter_gets_a_gradient(variant, dtype):
    model = make_model(dtype, **variant_kwargs(variant), envelope=True)
    model.train()
    out = model(to_batch([slab_with_adsorbate(seed=1), rattled_molecule()], dtype))
    assert out["energy"].dtype == dtype and out["forces"].dtype == dtype
    loss = out["energy"].abs().sum() + 100 * out["forces"].abs().mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert float(p.grad.abs().max()) > 0, name


def test_precomputed_graph_matches_on_the_fly():
    from spinconv_train.graph import radius_graph

    atoms = slab_with_adsorbate(seed=6)
    model_otf = make_model(otf_graph=True, max_num_neighbors=12)
    model_pre = make_model(otf_graph=False, max_num_neighbors=12)
    batch = to_batch([atoms])
    e1, f1 = _predict(model_otf, [atoms])
    # a precomputed graph with a larger cap, as OC20 LMDBs store, is capped by the model
    ei, co = radius_graph(batch.pos, batch.batch, batch.natoms, batch.cell, None, 5.0, 50)
    perm = torch.randperm(ei.shape[1], generator=torch.Generator().manual_seed(0))
    batch.edge_index, batch.cell_offsets = ei[:, perm], co[perm]
    out = model_pre(batch)
    assert torch.allclose(out["energy"], e1, rtol=1e-12) and torch.allclose(out["forces"], f1, atol=1e-12)


def test_oc20_config_parameter_count():
    # the reference's config as is: its force_estimator "random" is read as "direct"
    with pytest.warns(FutureWarning, match="'random'.*read as 'direct'"):
        model = SpinConv(num_atoms=None, bond_feat_dim=50, num_targets=1, **OC20_CONFIG)
    assert model.force_estimator == "direct" and model.force_head is not None
    assert abs(model.num_params - 8.47e6) <= 0.01 * 8.47e6
    assert MODELS.get("spinconv") is SpinConv


def test_unknown_keyword_is_named():
    with pytest.raises(TypeError, match="spere_size_lat"):
        SpinConv(**tiny_config(), spere_size_lat=4)


def test_bad_atomic_number_is_named():
    model = make_model(max_num_elements=10)
    batch = to_batch([rattled_molecule("CH3CH2OH"), slab_with_adsorbate(seed=1)])  # Cu = 29
    with pytest.raises(ValueError, match=r"structure 1.*atomic number 29.*max_num_elements=10"):
        model(batch)


def test_isolated_atom_is_named():
    from ase import Atoms

    lonely = Atoms("COH", positions=[[0, 0, 0], [1.2, 0, 0], [10.0, 0, 0]])
    model = make_model()
    with pytest.raises(ValueError, match=r"atom 2 \(structure 0, atom 2 within it\) has no neighbours"):
        model(to_batch([lonely]))


def test_eval_under_no_grad_returns_plain_tensors():
    model = make_model(force_estimator="grad").eval()
    batch = to_batch([slab_with_adsorbate(seed=1)])
    with torch.no_grad():
        out = model(batch)
    assert not out["energy"].requires_grad and not out["forces"].requires_grad
    reference = model(batch)
    assert torch.allclose(out["forces"], reference["forces"].detach(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
def test_fft_and_conv_spin_convolutions_give_the_same_model(variant):
    fft = make_model(**variant_kwargs(variant), spin_conv_impl="fft")
    conv = make_model(**variant_kwargs(variant), spin_conv_impl="conv")
    conv.load_state_dict(fft.state_dict())
    atoms = slab_with_adsorbate(seed=7)
    e1, f1 = _predict(fft, [atoms])
    e2, f2 = _predict(conv, [atoms])
    assert abs(float(e1 - e2)) <= 1e-10 * abs(float(e1))
    assert float((f1 - f2).abs().max()) <= 1e-10 * float(f1.abs().max())
