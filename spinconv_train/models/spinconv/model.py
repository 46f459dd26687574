"""SpinConv (Shuaibi et al. 2021): backbone of message blocks + energy head + force head.

Energy-centric (``force_estimator="grad"``): forces are -dE/dpos by autograd through the
whole model, angular path included. Force-centric (``"random"``, the reference's name, or
``"direct"``): a deterministic, exactly equivariant force head; no gradient w.r.t.
positions is built.
"""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from ...graph.cap_report import atoms_cut_by_cap
from ...graph.capping import cap_value
from ...registry import MODELS
from .activation import SiLU, activate
from .distance import DistanceBlock, GaussianBasis, cosine_weight, polynomial_envelope
from .edges import EdgeGraph, EdgeIndices, check_atomic_numbers, edge_graph, edge_indices, lattice
from .embedding import EmbeddingBlock, he_init_
from .energy_head import EnergyHead
from .force_head import EdgeForceHead, ForceHead
from .frames import edge_frames
from .message import MessageBlock
from .precision import geometry_precision
from .projection import SPHERE_INTERPOLATIONS, ChunkedSplatPlan, SplatPlan, make_splat_plans
from .spin_conv import SPIN_CONV_IMPLS, SPIN_CONV_KINDS, frozen_weights

FORCE_ESTIMATORS = ("grad", "random", "direct")
DIRECT_FORCE_HEADS = ("sphere", "edge")
# Grid values (spheres x lat x long x hidden) per chunk: a 16 MiB float32 grid keeps the
# projection, the DFT, the spin-convolution matmuls and the per-edge embedding blocks in
# cache on CPUs (OC20 configuration, benchmark batch, 1 thread, CPU time: forward 5.1 s vs
# 9.6 s in one chunk, training step 13.3 s vs 20.6 s). On GPUs caches do not matter and a
# small batch is bound by kernel launches (H100, OC20 benchmark batch: 31.7 ms forward, of
# which 3.6 ms spin convolutions), so a chunk only bounds memory: 2^27 values (512 MiB per
# float32 grid) runs the benchmark batch (74 M values) in one chunk instead of two (~230
# fewer launches), and still bounds 2000-atom systems (2^26 there: 2.2 GB peak).
# The neighbour count whose energy normaliser (count / 2 + 1) an uncapped model uses.
UNCAPPED_NORMALISER_NEIGHBORS = 40
AUTO_CHUNK_ELEMENTS_CPU = 2**22
AUTO_CHUNK_ELEMENTS_GPU = 2**27


def apply_strain(pos: Tensor, cell: Tensor, strain: Tensor, batch: Tensor) -> tuple[Tensor, Tensor]:
    """Positions and cells deformed by the symmetric part of ``strain`` (B,3,3):
    r -> r (1 + e), cell rows a -> a (1 + e). At strain 0 both are unchanged, and the
    gradient of an energy with respect to ``strain`` is its strain derivative."""
    sym = 0.5 * (strain + strain.transpose(1, 2))
    pos = pos + torch.bmm(pos.unsqueeze(1), sym.index_select(0, batch)).squeeze(1)
    return pos, cell + torch.bmm(cell, sym)


@MODELS.register("spinconv")
class SpinConv(nn.Module):
    """SpinConv with the reference implementation's keyword names (OC20 configs load as is).

    Reference-only keywords kept for config compatibility and ignored: ``num_atoms``,
    ``bond_feat_dim``, ``num_targets`` (must be 1), ``show_timing_info``,
    ``model_ref_number``, ``readout`` ("add"), ``num_rand_rotations`` (the force head is
    deterministic). Extras: ``envelope`` (smooth cutoff envelope, off reproduces the paper),
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
    ``envelope: true`` for molecular dynamics).

    ``max_num_neighbors``: an atom keeps its nearest neighbours up to this count, shells of
    equal distances whole (``graph.capping``), so the graph is a function of the geometry;
    a cap that binds still makes the energy jump when an atom moves past the last kept
    shell. ``None`` (``max_num_neighbors: null``): no cap, every neighbour within the cutoff
    (the energy head's constant normaliser is then that of a cap of 40).
    """

    def __init__(
        self,
        num_atoms: int | None = None,
        bond_feat_dim: int | None = None,
        num_targets: int = 1,
        *,
        use_pbc: bool = True,
        regress_forces: bool = True,
        otf_graph: bool = False,
        hidden_channels: int = 32,
        mid_hidden_channels: int = 200,
        num_interactions: int = 1,
        num_basis_functions: int = 200,
        basis_width_scalar: float = 1.0,
        max_num_neighbors: int | None = 20,
        sphere_size_lat: int = 15,
        sphere_size_long: int = 9,
        cutoff: float = 10.0,
        distance_block_scalar_max: float = 2.0,
        max_num_elements: int = 90,
        embedding_size: int = 32,
        show_timing_info: bool = False,
        sphere_message: str = "fullconv",
        output_message: str = "fullconv",
        lmax: int | None = None,
        force_estimator: str = "random",
        model_ref_number: int = 0,
        readout: str = "add",
        num_rand_rotations: int = 5,
        scale_distances: bool = True,
        envelope: bool = False,
        envelope_exponent: int = 5,
        spin_conv_impl: str = "fft",
        spin_conv_chunk_elements: int | str | None = "auto",
        direct_force_head: str = "sphere",
        sphere_interpolation: str = "bilinear",
    ) -> None:
        super().__init__()
        if num_targets != 1:
            raise ValueError(f"SpinConv predicts one energy per structure; num_targets={num_targets} is not supported")
        if readout != "add":
            raise ValueError(f"readout must be 'add' (the only one the reference implements), got {readout!r}")
        if force_estimator not in FORCE_ESTIMATORS:
            raise ValueError(f"force_estimator must be one of {FORCE_ESTIMATORS}, got {force_estimator!r}")
        for key, kind in (("sphere_message", sphere_message), ("output_message", output_message)):
            if kind not in SPIN_CONV_KINDS:
                raise ValueError(f"{key} must be one of {SPIN_CONV_KINDS}, got {kind!r}")
        if direct_force_head not in DIRECT_FORCE_HEADS:
            raise ValueError(f"direct_force_head must be one of {DIRECT_FORCE_HEADS}, got {direct_force_head!r}")
        if spin_conv_impl not in SPIN_CONV_IMPLS:
            raise ValueError(f"spin_conv_impl must be one of {SPIN_CONV_IMPLS}, got {spin_conv_impl!r}")
        if sphere_interpolation not in SPHERE_INTERPOLATIONS:
            raise ValueError(
                f"sphere_interpolation must be one of {SPHERE_INTERPOLATIONS}, got {sphere_interpolation!r}"
            )
        lmax_value = None if lmax is None or lmax is False else int(lmax)

        self.use_pbc = use_pbc
        self.regress_forces = regress_forces
        self.otf_graph = otf_graph
        self.cutoff = float(cutoff)
        # None: no cap (every neighbour within the cutoff); the energy head's constant
        # normaliser is then that of the OC20 cap of 40.
        self.max_num_neighbors = None if max_num_neighbors is None else cap_value(max_num_neighbors)
        self.max_num_elements = int(max_num_elements)
        self.sphere_size_lat = int(sphere_size_lat)
        self.sphere_size_long = int(sphere_size_long)
        self.force_estimator = force_estimator
        self.direct_forces = force_estimator != "grad"
        self.envelope = bool(envelope)
        self.envelope_exponent = int(envelope_exponent)
        self.sphere_interpolation = sphere_interpolation
        self.act = SiLU()  # nn.SiLU with a memory-lean second derivative (activation.py)
        if not (spin_conv_chunk_elements is None or spin_conv_chunk_elements == "auto"
                or (isinstance(spin_conv_chunk_elements, int) and spin_conv_chunk_elements > 0)):
            raise ValueError(
                f"spin_conv_chunk_elements must be a positive integer, 'auto' or None, got {spin_conv_chunk_elements!r}"
            )
        self.spin_conv_chunk_elements = spin_conv_chunk_elements
        self._grid_values = self.sphere_size_lat * self.sphere_size_long * int(hidden_channels)

        self.dist_block = DistanceBlock(
            num_basis_functions,
            mid_hidden_channels,
            max_num_elements,
            distance_block_scalar_max,
            GaussianBasis(0.0, cutoff, num_basis_functions, basis_width_scalar),
            scale_distances,
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
                sphere_message,
                self.act,
                lmax_value,
                spin_conv_impl,
            )
            for _ in range(num_interactions)
        )
        self.energy_head = EnergyHead(
            hidden_channels, mid_hidden_channels, embedding_size, max_num_elements,
            UNCAPPED_NORMALISER_NEIGHBORS if max_num_neighbors is None else max_num_neighbors, self.act
        )
        self.force_head: ForceHead | EdgeForceHead | None = None
        if regress_forces and self.direct_forces and direct_force_head == "edge":
            self.force_head = EdgeForceHead(hidden_channels, mid_hidden_channels, embedding_size, max_num_elements,
                                            self.act)
        elif regress_forces and self.direct_forces:
            self.force_head = ForceHead(
                hidden_channels,
                mid_hidden_channels,
                embedding_size,
                self.sphere_size_lat,
                self.sphere_size_long,
                max_num_elements,
                output_message,
                self.act,
                lmax_value,
                spin_conv_impl,
                sphere_interpolation,
            )

        if regress_forces and not self.direct_forces:  # training differentiates forces = -dE/dx
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
        elements = self.spin_conv_chunk_elements
        if elements == "auto":
            elements = AUTO_CHUNK_ELEMENTS_CPU if device.type == "cpu" else AUTO_CHUNK_ELEMENTS_GPU
        return None if elements is None else max(1, int(elements) // self._grid_values)

    def _edge_plan(
        self, graph: EdgeGraph, num_atoms: int, frame_weight: Tensor, env: Tensor | None
    ) -> SplatPlan | ChunkedSplatPlan:
        """Frames of all edges and the splat plan of their neighbourhoods."""
        pair_src, pair_dst, is_reverse = graph.pair_src, graph.pair_dst, graph.pair_is_reverse
        unit = graph.unit
        # Gathers by index_select, not x[index]: its backward (index_add_) is deterministic
        # on CPU, while advanced indexing's (index_put_ with accumulate) adds in a
        # thread-dependent order (measured: two 2-thread training runs diverged at step 8).
        unit_src, unit_dst = unit.index_select(0, pair_src), unit.index_select(0, pair_dst)
        pair_cos = (unit_src * unit_dst).sum(-1)
        pair_weight = torch.where(is_reverse, torch.zeros_like(pair_cos), frame_weight.index_select(0, pair_src))
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
            at_south_pole=is_reverse,
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
            return edge_indices(data, data.pos, self.cutoff, self.max_num_neighbors, self.use_pbc, self.otf_graph)

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
                                     cell)
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
                    inputs = (pos, strain) if stress else (pos,)
                    grads = torch.autograd.grad(energy.sum(), inputs, create_graph=self.training and outer_grad)
                    result["forces"] = -grads[0]
                    if stress:
                        result["stress"] = grads[1] / volume.view(-1, 1, 1)
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
