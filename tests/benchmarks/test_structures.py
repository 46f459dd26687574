"""The fixed benchmark batch and the scaled systems."""
import pytest
import torch

from spinconv_train.benchmarks.structures import benchmark_batch, scaled_system, scaling_sizes


def _min_image_distance(pos: torch.Tensor, cell: torch.Tensor) -> float:
    """Smallest interatomic distance over the 27 nearest lattice images."""
    shifts = torch.tensor([[a, b, c] for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)],
                          dtype=pos.dtype)
    d = pos[:, None, None, :] - pos[None, :, None, :] + (shifts @ cell)[None, None]
    dist = d.norm(dim=-1)
    n = pos.shape[0]
    dist[torch.arange(n), torch.arange(n), 13] = float("inf")  # self, zero shift
    return float(dist.min())


def test_benchmark_batch_layout():
    batch = benchmark_batch()
    assert batch.num_graphs == 8
    assert batch.natoms.tolist() == [38] * 8
    assert batch.pos.shape == (304, 3) and batch.pos.dtype == torch.float32
    assert batch.cell.shape == (8, 3, 3) and batch.pbc.shape == (8, 3)
    assert batch.atomic_numbers.dtype == torch.float32
    # 36 Pt per slab, alternating CO and OH adsorbates.
    z = batch.atomic_numbers.long().view(8, 38)
    assert (z[:, :36] == 78).all()
    assert z[0, 36:].tolist() == [6, 8] and z[1, 36:].tolist() == [8, 1]
    tags = batch.tags.view(8, 38)
    assert (tags[:, 36:] == 2).all() and int((tags[:, :36] == 1).sum(1)[0]) == 9
    fixed = batch.fixed.view(8, 38)
    assert fixed.sum(1).tolist() == [18] * 8 and (fixed[:, 36:] == 0).all()
    # The adsorbate sits above the top layer; bottom layers are the fixed ones.
    pos = batch.pos.view(8, 38, 3)
    assert (pos[:, 36, 2] > pos[:, 27:36, 2].max(1).values + 1.0).all()
    assert (pos[:, :18, 2].max(1).values < pos[:, 18:36, 2].min(1).values).all()


def test_benchmark_batch_is_seeded_and_physical():
    a, b = benchmark_batch(), benchmark_batch()
    assert torch.equal(a.pos, b.pos)
    c = benchmark_batch(seed=1)
    assert not torch.allclose(a.pos, c.pos)
    # Rattled, so no exact ties, but no overlapping atoms either.
    for k in range(2):
        sl = slice(38 * k, 38 * (k + 1))
        assert _min_image_distance(a.pos[sl].double(), a.cell[k].double()) > 0.9


def test_scaled_systems_sizes():
    sizes = scaling_sizes()
    assert sizes[0] == 100 and sizes[-1] == 2000 and sizes == sorted(sizes)
    s = scaled_system(sizes[0])
    assert s.pos.shape == (100, 3) and s.natoms.tolist() == [100]
    assert bool(s.pbc.all())
    with pytest.raises(ValueError, match="num_atoms=123"):
        scaled_system(123)


def test_molecule_batch_is_isolated_copies_in_a_periodic_box():
    from spinconv_train.benchmarks.structures import molecule_batch
    from spinconv_train.graph import radius_graph

    batch = molecule_batch("CH3CH2OH", 2, box_margin=6.5)
    assert batch.natoms.tolist() == [9, 9] and bool(batch.pbc.all())
    # With the cutoff below the margin, no edge crosses the cell: the graph is the molecule's.
    _, offsets = radius_graph(batch.pos, batch.batch, batch.natoms, batch.cell, batch.pbc, 6.0, 50)
    assert offsets.numel() > 0 and float(offsets.abs().max()) == 0.0
    assert not torch.equal(batch.pos[:9], batch.pos[9:])  # independently rattled copies
    with pytest.raises(ValueError, match="unknown molecule 'nope'"):
        molecule_batch("nope")
