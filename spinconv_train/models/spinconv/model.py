"""SpinConv (Shuaibi et al. 2021): backbone of message blocks + energy head + force head.

Energy-centric (``force_estimator="grad"``): forces are -dE/dpos by autograd through the
whole model, angular path included. Force-centric (``"direct"``; the reference's
``"random"`` is read as it, with a warning): a deterministic, exactly equivariant force
head; no gradient w.r.t. positions is built.
"""
from __future__ import annotations

import contextlib
import inspect
from dataclasses import fields
from typing import Any

import torch
from torch import Tensor, nn

from ...graph.cap_report import atoms_cut_by_cap
from ...registry import MODELS
from ..outputs import apply_strain, energy_derivatives
from .activation import SiLU, activate
from .config import DIRECT_FORCE_HEADS, FORCE_ESTIMATORS, SpinConvConfig  # noqa: F401  (re-exported)
from .distance import DistanceBlock, GaussianBasis, cosine_weight, polynomial_envelope
from .edges import (
    EdgeGraph,
    EdgeIndices,
    check_atomic_numbers,
    edge_graph,
    edge_indices,
    lattice,
)
from .embedding import EmbeddingBlock, he_init_
from .energy_head import EnergyHead
from .force_head import EdgeForceHead, ForceHead
from .frames import edge_frames
from .message import MessageBlock
from .projection import SplatPlan, make_splat_plans
from .reference_frame import reference_edge_frames, reference_sphere_coords
from .speed import ChunkedSplatPlan, chunk_spheres, frozen_weights, geometry_precision

# The neighbour count whose energy normaliser (count / 2 + 1) an uncapped model uses.
UNCAPPED_NORMALISER_NEIGHBORS = 40


@MODELS.register("spinconv")
class SpinConv(nn.Module):
    """SpinConv with the reference implementation's keyword names (OC20 configs load as is).

    Settings are a ``SpinConvConfig``; the reference-only keywords (``num_atoms``,
    ``bond_feat_dim``, ``num_targets`` (must be 1), ``show_timing_info``,
    ``model_ref_number``, ``readout`` ("add"), ``num_rand_rotations``) are accepted by its
    translation and ignored. Extras: ``envelope`` (smooth cutoff envelope, off reproduces the paper),
    ``envelope_exponent``, ``spin_conv_impl`` ("fft" or "conv"), ``spin_conv_chunk_elements``
    (spheres are projected and convolved, and edge messages computed, in chunks of about this many grid values,
    spheres x lat x long x hidden: a cache-sized chunk is faster on CPU and bounds the
    peak memory of inference; ``"auto"``: 2**22 on CPU, 2**27 on GPUs; ``None``: one chunk),
    ``direct_force_head`` (force-centric models: ``"sphere"``, the paper's force block of
    spin convolutions on per-atom spheres, or ``"edge"``, forces as sums of learned
    strengths along the edge directions, see ``force_head.EdgeForceHead``),
    ``sphere_interpolation`` (``"bilinear"``, the paper's splat onto the sphere grid, or
    ``"smooth"``: same corners, C1 weights, so energies are C1 in the positions and forces
    have no jumps where a neighbour crosses a grid line; see ``projection.py``; use it with
    ``envelope: true`` for molecular dynamics), ``frame`` (``"exact"``, the invariant frames of
    ``frames.py``, or ``"reference"``, the reference's frames with their constant offset, for
    models imported from OCP checkpoints; see ``reference_frame.py``).

    ``max_num_neighbors``: an atom keeps its nearest neighbours up to this count, shells of
    equal distances whole (``graph.capping``), so the graph is a function of the geometry;
    a cap that binds still makes the energy jump when an atom moves past the last kept
    shell. ``None`` (``max_num_neighbors: null``): no cap, every neighbour within the cutoff
    (the energy head's constant normaliser is then that of a cap of 40). ``neighbor_cap:
    reference`` applies the reference's caps instead, per target atom and not symmetric,
    for models imported from OCP checkpoints (``graph/reference_cap.py``).
    """

    def __init__(self, *reference_positional: Any, config: SpinConvConfig | None = None, **keywords: Any) -> None:
        """``SpinConv(**keywords)`` with the reference's keywords (``SpinConvConfig.from_keywords``
        translates and checks them), or ``SpinConv(config=SpinConvConfig(...))``."""
        super().__init__()
        if config is None:
            config = SpinConvConfig.from_keywords(*reference_positional, **keywords)
        elif reference_positional or keywords:
            raise TypeError("SpinConv takes either config= or the keywords of a config, not both")
        self.config = config
        c = config
        hidden_channels, mid_hidden_channels, embedding_size = c.hidden_channels, c.mid_hidden_channels, c.embedding_size
        max_num_elements, num_basis_functions = c.max_num_elements, c.num_basis_functions

        self.use_pbc = c.use_pbc
        self.regress_forces = c.regress_forces
        self.otf_graph = c.otf_graph
        self.cutoff = float(c.cutoff)
        # None: no cap (every neighbour within the cutoff); the energy head's constant
        # normaliser is then that of the OC20 cap of 40.
        self.max_num_neighbors = c.max_num_neighbors
        self.max_num_elements = int(max_num_elements)
        self.sphere_size_lat = int(c.sphere_size_lat)
        self.sphere_size_long = int(c.sphere_size_long)
        self.force_estimator = c.force_estimator
        self.direct_forces = c.direct_forces
        self.envelope = bool(c.envelope)
        self.envelope_exponent = int(c.envelope_exponent)
        self.sphere_interpolation = c.sphere_interpolation
        self.frame = c.frame
        self.neighbor_cap = c.neighbor_cap
        self.act = SiLU()  # nn.SiLU with a memory-lean second derivative (activation.py)
        self.spin_conv_chunk_elements = c.spin_conv_chunk_elements
        self._grid_values = self.sphere_size_lat * self.sphere_size_long * int(hidden_channels)

        self.dist_block = DistanceBlock(
            num_basis_functions,
            mid_hidden_channels,
            max_num_elements,
            c.distance_block_scalar_max,
            GaussianBasis(0.0, c.cutoff, num_basis_functions, c.basis_width_scalar),
            c.scale_distances,
        )
        # He init: PyTorch's default would shrink the distance features ~10x (see embedding.py).
        self.distfc1 = he_init_(nn.Linear(mid_hidden_channels, mid_hidden_channels))
        self.distfc2 = he_init_(nn.Linear(mid_hidden_channels, mid_hidden_channels))
        self.embeddingblock2 = EmbeddingBlock(
            mid_hidden_channels, hidden_channels, mid_hidden_channels, embedding_size, 8, max_num_elements, self.act
        )
        self.message_blocks = nn.ModuleList(
            MessageBlock(
                hidden_channels,
                hidden_channels,
                mid_hidden_channels,
                embedding_size,
                self.sphere_size_lat,
                self.sphere_size_long,
                max_num_elements,
                c.sphere_message,
                self.act,
                c.lmax,
                c.spin_conv_impl,
            )
            for _ in range(c.num_interactions)
        )
        for block in self.message_blocks:  # the reference keeps the pole rows as splatted
            block.spinconvblock.uniform_poles = c.frame != "reference"
        self.energy_head = EnergyHead(
            hidden_channels, mid_hidden_channels, embedding_size, max_num_elements,
            UNCAPPED_NORMALISER_NEIGHBORS if c.max_num_neighbors is None else c.max_num_neighbors, self.act
        )
        self.force_head: ForceHead | EdgeForceHead | None = None
        if c.regress_forces and self.direct_forces and c.direct_force_head == "edge":
            self.force_head = EdgeForceHead(hidden_channels, mid_hidden_channels, embedding_size, max_num_elements,
                                            self.act)
        elif c.regress_forces and self.direct_forces:
            self.force_head = ForceHead(
                hidden_channels,
                mid_hidden_channels,
                embedding_size,
                self.sphere_size_lat,
                self.sphere_size_long,
                max_num_elements,
                c.output_message,
                self.act,
                c.lmax,
                c.spin_conv_impl,
                c.sphere_interpolation,
            )

        if c.regress_forces and not self.direct_forces:  # training differentiates forces = -dE/dx
            for module in self.modules():
                if isinstance(module, EmbeddingBlock):
                    module.recompute_for_second_order = True

    @property
    def supports_stress(self) -> bool:
        """Whether ``forward(batch, stress=True)`` is defined: energy-centric and periodic."""
        return self.regress_forces and not self.direct_forces and self.use_pbc

    # ``forward(batch, atom_energies=True)`` returns the per-atom terms of the energy.
    supports_atom_energies = True

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _radial_weights(self, dist: Tensor) -> tuple[Tensor, Tensor | None]:
        """(frame weight, envelope or None) per edge."""
        if self.envelope:
            env = polynomial_envelope(dist, self.cutoff, self.envelope_exponent)
            return env, env
        return cosine_weight(dist, self.cutoff), None

    def chunk_spheres(self, device: torch.device) -> int | None:
        """Spheres per projection/spin-convolution chunk on ``device`` (None: no chunking)."""
        return chunk_spheres(self.spin_conv_chunk_elements, self._grid_values, device)

    def _edge_plan(
        self, graph: EdgeGraph, num_atoms: int, frame_weight: Tensor, env: Tensor | None
    ) -> SplatPlan | ChunkedSplatPlan:
        """Frames of all edges and the splat plan of their neighbourhoods."""
        pair_src, pair_dst, is_reverse = graph.pair_src, graph.pair_dst, graph.pair_is_reverse
        unit = graph.unit
        # Gathers by index_select, not x[index]: its backward (index_add_) is deterministic
        # on CPU, while advanced indexing's (index_put_ with accumulate) adds in a
        # thread-dependent order, so multi-threaded training runs would not repeat.
        unit_src, unit_dst = unit.index_select(0, pair_src), unit.index_select(0, pair_dst)
        pair_cos = (unit_src * unit_dst).sum(-1)
        pair_weight = torch.where(is_reverse, torch.zeros_like(pair_cos), frame_weight.index_select(0, pair_src))
        south = is_reverse
        if self.frame == "reference":  # models imported from OCP checkpoints (reference_frame.py)
            frames = reference_edge_frames(graph.vec, graph.dist, graph.edge_index[1], num_atoms, self.cutoff)
            coords, south = reference_sphere_coords(frames.index_select(0, pair_dst), unit_src), None
        else:
            frames = edge_frames(unit, pair_src, pair_dst, pair_weight, pair_cos, self.sphere_size_long)
            coords = torch.bmm(frames.index_select(0, pair_dst), unit_src.unsqueeze(-1)).squeeze(-1)
        scale = None if env is None else env.index_select(0, pair_src)
        return make_splat_plans(
            coords,
            pair_src,
            pair_dst,
            unit.shape[0],
            unit.shape[0],
            self.sphere_size_lat,
            self.sphere_size_long,
            scale=scale,
            at_south_pole=south,
            max_dst_per_chunk=self.chunk_spheres(unit.device),
            dst_sorted=True,  # the pairs are grouped by their (increasing) pair_dst
            interpolation=self.sphere_interpolation,
        )

    def edge_indices(self, data) -> EdgeIndices:
        """Check ``data``'s atomic numbers and search its neighbours (on the host): what
        ``forward(data, edges=...)`` needs besides the positions. Valid while no atom
        crosses the cutoff, i.e. for the positions it was computed from."""
        batch = data.batch if data.batch is not None else torch.zeros_like(data.atomic_numbers, dtype=torch.long)
        check_atomic_numbers(data.atomic_numbers.long(), batch, self.max_num_elements)
        with torch.no_grad():
            return edge_indices(data, data.pos, self.cutoff, self.max_num_neighbors, self.use_pbc, self.otf_graph,
                                neighbor_cap=self.neighbor_cap)

    def atoms_cut_by_cap(self, data):
        """(B,) numpy int64: per structure of ``data``, the number of atoms whose neighbour
        list this model's cap cuts (0 everywhere when it is uncapped). Relaxations and MD
        with an energy-centric model should warn when any is non-zero
        (``graph.cap_report.binding_cap_message``): its energy is then discontinuous."""
        cell = lattice(data, data.pos, self.use_pbc)
        pbc = getattr(data, "pbc", None) if self.use_pbc else None
        return atoms_cut_by_cap(data.pos, data.natoms, cell, pbc, self.cutoff, self.max_num_neighbors)

    def _backbone(
        self, data, pos: Tensor, atomic_numbers: Tensor, cell: Tensor | None = None,
        edges: EdgeIndices | None = None,
    ) -> tuple[EdgeGraph, Tensor, Tensor, Tensor | None]:
        """Graph, final edge messages (E, hidden), frame weights and envelope (or None)."""
        with geometry_precision(pos):  # graph, frames and sphere coordinates never in half precision
            if edges is None:
                edges = edge_indices(data, pos, self.cutoff, self.max_num_neighbors, self.use_pbc, self.otf_graph,
                                     cell, self.neighbor_cap)
            graph = edge_graph(edges, pos, lattice(data, pos, self.use_pbc, cell), data.batch)
            frame_weight, env = self._radial_weights(graph.dist)
            plan = self._edge_plan(graph, pos.shape[0], frame_weight, env)
        src_el = atomic_numbers[graph.edge_index[0]]
        tgt_el = atomic_numbers[graph.edge_index[1]]

        x_dist, x = self._edge_features(graph.dist, src_el, tgt_el)
        for index, block in enumerate(self.message_blocks):
            out = block(x, x_dist, src_el, tgt_el, plan)
            x = out if index == 0 else x + out  # the first block replaces, later ones add
        return graph, x, frame_weight, env

    def _edge_features(self, dist: Tensor, src_el: Tensor, tgt_el: Tensor) -> tuple[Tensor, Tensor]:
        """Distance features (E, mid) and the edge messages before the first interaction.

        Edge by edge, so without autograd it runs in the spin convolution's chunks of edges:
        the (chunk, 512) basis and (chunk, 8 * mid) expert activations then stay in cache
        instead of (E, ...) tensors (300 MB for the benchmark batch) being mapped and
        faulted in on every call.
        """
        chunk = None if torch.is_grad_enabled() else self.chunk_spheres(dist.device)
        if chunk is None or dist.shape[0] <= chunk:
            x_dist = self.dist_block(dist, src_el, tgt_el)
            x = activate(self.act, self.distfc2(activate(self.act, self.distfc1(x_dist))))
            return x_dist, self.embeddingblock2(x, src_el, tgt_el)
        parts = [self._edge_features(dist[i:i + chunk], src_el[i:i + chunk], tgt_el[i:i + chunk])
                 for i in range(0, dist.shape[0], chunk)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _check_stress_input(self, data, grad_forces: bool, check_volumes: bool = True) -> tuple[Tensor, Tensor]:
        """The batch's (B,3,3) cells and (B,) volumes, after checking that a stress is
        defined for them (``check_volumes=False`` skips the one check that waits for a GPU)."""
        if not (self.regress_forces and grad_forces):
            raise ValueError("stress is the strain derivative of the energy: it needs an energy-centric "
                             f"model (force_estimator: grad), this one has force_estimator={self.force_estimator!r}")
        cell = getattr(data, "cell", None)
        if not self.use_pbc or cell is None:
            raise ValueError("stress needs periodic structures (use_pbc: true and a cell per structure)")
        cell = cell.reshape(-1, 3, 3).to(data.pos.dtype)
        volume = torch.linalg.det(cell).abs()
        if check_volumes and bool((volume < 1e-6).any()):
            index = int((volume < 1e-6).nonzero()[0])
            raise ValueError(f"stress needs a cell with a volume; structure {index} of the batch has "
                             f"volume {float(volume[index]):.3g} Å^3")
        return cell, volume

    def forward(self, data, stress: bool = False, atom_energies: bool = False,
                edges: EdgeIndices | None = None) -> dict[str, Tensor]:
        """``data``: a torch_geometric Batch; returns {"energy": (B,), "forces": (N,3)}.

        ``edges``: ``self.edge_indices(data)`` computed beforehand (it also checks the atomic
        numbers, so the forward then neither searches neighbours nor waits for a GPU; with
        ``stress`` the caller checks the cells' volumes, ``_check_stress_input``).

        ``atom_energies=True`` adds "atom_energies": (N,), the per-atom terms the energy head
        sums into each structure's energy.

        ``stress=True`` (energy-centric, periodic structures) adds "stress": (B,3,3), the
        derivative of the energy with respect to a symmetric strain of positions and cell,
        divided by the cell volume (ASE's convention; energy units per Å^3).
        """
        pos = data.pos
        atomic_numbers = data.atomic_numbers.long()
        batch = data.batch
        if batch is None:
            batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
            data.batch = batch
        if edges is None:
            check_atomic_numbers(atomic_numbers, batch, self.max_num_elements)
        num_structures = int(data.natoms.numel())
        grad_forces = self.regress_forces and not self.direct_forces
        if grad_forces and torch.is_inference_mode_enabled():
            raise RuntimeError(
                "energy-centric SpinConv (force_estimator='grad') computes forces = -dE/dpos by "
                "autograd, which torch.inference_mode() switches off; call it under "
                "torch.no_grad() instead (it turns autograd back on for the forces only)"
            )
        if stress:
            cells, volume = self._check_stress_input(data, grad_forces, check_volumes=edges is None)
        outer_grad = torch.is_grad_enabled()
        # Called under no_grad, autograd runs for -dE/dpos only: no weight needs a gradient.
        weights = frozen_weights() if grad_forces and not outer_grad else contextlib.nullcontext()
        with torch.set_grad_enabled(grad_forces or outer_grad), weights:
            if grad_forces and not pos.requires_grad:
                pos = pos.detach().requires_grad_(True)
            positions, cell = pos, None
            if stress:
                strain = torch.zeros_like(cells, requires_grad=True)
                positions, cell = apply_strain(pos, cells, strain, batch)
            graph, x, frame_weight, env = self._backbone(data, positions, atomic_numbers, cell, edges)
            energy, per_atom = self.energy_head(x, graph.edge_index[1], atomic_numbers, batch, num_structures, env)
            result = {"energy": energy}
            if atom_energies:
                result["atom_energies"] = per_atom
            if self.regress_forces:
                if grad_forces:
                    result.update(energy_derivatives(energy, pos, strain if stress else None,
                                                     volume if stress else None, self.training and outer_grad))
                    if not outer_grad:  # called under no_grad: return plain tensors
                        result = {key: value.detach() for key, value in result.items()}
                else:
                    assert self.force_head is not None
                    if isinstance(self.force_head, EdgeForceHead):
                        result["forces"] = self.force_head(x, graph.unit, graph.edge_index, atomic_numbers, env)
                    else:
                        result["forces"] = self.force_head(
                            x, graph.unit, graph.edge_index[1], frame_weight, atomic_numbers, env,
                            max_dst_per_chunk=self.chunk_spheres(pos.device),
                        )
        # Under autocast the heads may end in half precision: outputs take the positions' dtype.
        return {key: value.to(pos.dtype) for key, value in result.items()}


def _keyword_signature() -> inspect.Signature:
    """``SpinConv.__init__`` as callers see it: every ``SpinConvConfig`` field as a keyword,
    plus the reference-only keywords (``**reference_keywords``). Config builders inspect it
    (e.g. to pass ``regress_forces``)."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(f.name, keyword, default=f.default) for f in fields(SpinConvConfig)]
    params.append(inspect.Parameter("reference_keywords", inspect.Parameter.VAR_KEYWORD))
    return inspect.Signature(params)


SpinConv.__init__.__signature__ = _keyword_signature()  # type: ignore[attr-defined]
