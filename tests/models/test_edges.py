"""The edge graph's host-side indices: pairs, reverse edges, their packing for one
transfer, and the synchronisation-free counting used on accelerators."""
from __future__ import annotations

import torch
from spinconv_testkit import rattled_molecule, slab_with_adsorbate, to_batch

from spinconv_train.models.spinconv.edges import build_edge_graph, edge_pairs, pack_indices, unpack_indices
from spinconv_train.models.spinconv.frames import _fallback_axis
from spinconv_train.models.spinconv.projection import _scatter_counts, index_counts


def _graph(structures, max_neighbors=12):
    batch = to_batch(structures)
    return batch, build_edge_graph(batch, batch.pos, 3.5, max_neighbors, use_pbc=True, otf_graph=True)


def test_pairs_are_all_edges_into_the_source_grouped_by_edge():
    batch, graph = _graph([slab_with_adsorbate(seed=2), rattled_molecule()])
    src, tgt = graph.edge_index.tolist()
    expected = sorted((k, e) for e in range(len(src)) for k in range(len(src)) if tgt[k] == src[e])
    got = list(zip(graph.pair_src.tolist(), graph.pair_dst.tolist()))
    assert sorted(got) == expected
    assert bool((graph.pair_dst[1:] >= graph.pair_dst[:-1]).all())  # the splat plan relies on it
    pair_src, pair_dst = edge_pairs(graph.edge_index, torch.bincount(graph.edge_index[1], minlength=batch.pos.shape[0]))
    assert torch.equal(pair_src, graph.pair_src) and torch.equal(pair_dst, graph.pair_dst)


def test_reverse_flags_and_reverse_map():
    _, graph = _graph([slab_with_adsorbate(seed=3)])
    rev = graph.rev
    assert torch.equal(rev[rev], torch.arange(rev.numel()))
    assert torch.allclose(graph.vec[rev], -graph.vec, atol=1e-12)  # the reverse edge, shift included
    src, tgt = graph.edge_index
    expected = (src[graph.pair_src] == tgt[graph.pair_dst]) & torch.all(
        graph.cell_offsets[graph.pair_src] == -graph.cell_offsets[graph.pair_dst], dim=-1
    )
    assert torch.equal(graph.pair_is_reverse, expected)
    assert int(graph.pair_is_reverse.sum()) == graph.edge_index.shape[1]  # one reverse per edge


def test_pack_and_unpack_round_trip():
    parts = (torch.arange(6).view(2, 3), torch.tensor([True, False, True]), torch.zeros(0, dtype=torch.long),
             torch.tensor([7, -1], dtype=torch.int32))
    back = unpack_indices(pack_indices(parts), parts)
    for a, b in zip(parts, back):
        assert a.shape == b.shape and (a.dtype == torch.bool) == (b.dtype == torch.bool)
        assert torch.equal(a.long(), b.long())


def test_scatter_counts_equal_bincount():
    index = torch.randint(0, 50, (1000,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(_scatter_counts(index, 64), torch.bincount(index, minlength=64))
    assert torch.equal(index_counts(index, 64), torch.bincount(index, minlength=64))


def test_fallback_axis_is_the_least_parallel_cartesian_axis():
    x = torch.tensor([[0.1, -0.9, 0.4], [0.7, 0.7, 0.0], [-0.2, 0.3, 0.9]], dtype=torch.float64)
    expected = torch.nn.functional.one_hot(x.abs().argmin(dim=-1), 3).to(x.dtype)
    assert torch.equal(_fallback_axis(x), expected)
