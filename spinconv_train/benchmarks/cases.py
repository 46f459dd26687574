"""Benchmark cases: which model, which configuration, and what one timed step does.

Models: ``spinconv`` (ours, ``spinconv_train.models.SpinConv``), ``reference`` (OCP v0.0.3
SpinConv loaded from a user checkout, see ``reference.py``) and ``schnet``
(torch_geometric's SchNet, 128 channels, on this project's periodic radius graph).

Modes (one call of the returned step function):
* ``forward``: ``model(batch)`` under ``torch.no_grad()`` in eval mode (the force-centric
  model returns its direct forces; the reference re-enables autograd internally);
* ``forces``: energy and forces with autograd enabled, eval mode (for energy-centric
  models and SchNet the forces are -dE/dpos; nothing is kept for a backward pass);
* ``train``: train mode, energy + forces, loss = L1(energy) + 100 * L1(forces of free
  atoms), backward, Adam (amsgrad, lr 4e-4) step, as in the OC20 S2EF configuration.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch

from ..models.spinconv.oc20 import OC20_S2EF_CONFIG

MODES = ("forward", "forces", "train")
MODEL_KINDS = ("spinconv", "reference", "schnet")

# OC20 S2EF SpinConv configuration (reference keyword names).
OC20_CONFIG: dict[str, Any] = dict(OC20_S2EF_CONFIG)

# A tiny configuration for fast tests of the harness (seconds on 2 cores).
TINY_CONFIG: dict[str, Any] = dict(
    OC20_CONFIG,
    hidden_channels=8,
    mid_hidden_channels=16,
    num_interactions=1,
    num_basis_functions=16,
    max_num_neighbors=12,
    sphere_size_lat=4,
    sphere_size_long=4,
)

FORCE_COEFFICIENT = 100.0


class SchNetOnGraph(nn.Module):
    """torch_geometric SchNet whose interaction graph is this project's periodic graph.

    Energy from SchNet; forces are -dE/dpos by autograd (conservative).
    """

    def __init__(self, hidden_channels: int = 128, cutoff: float = 6.0, max_neighbors: int = 40) -> None:
        super().__init__()
        from torch_geometric.nn.models import SchNet

        self.cutoff = cutoff
        self.max_neighbors = max_neighbors
        self._graph: tuple | None = None
        self.schnet = SchNet(
            hidden_channels=hidden_channels,
            num_filters=hidden_channels,
            cutoff=cutoff,
            max_num_neighbors=max_neighbors,
            interaction_graph=self._interaction_graph,
        )

    def _interaction_graph(self, pos: Tensor, batch: Tensor) -> tuple:
        from spinconv_train.graph import edge_vectors

        edge_index, offsets, cell = self._graph
        dist = edge_vectors(pos, edge_index, offsets, cell, batch).norm(dim=-1)
        return edge_index, dist

    def forward(self, data: Batch) -> dict[str, Tensor]:
        from spinconv_train.graph import radius_graph

        pos = data.pos
        if not pos.requires_grad:
            pos = pos.detach().requires_grad_(True)
        cell = getattr(data, "cell", None)
        edge_index, offsets = radius_graph(
            pos, data.batch, data.natoms, cell, getattr(data, "pbc", None), self.cutoff, self.max_neighbors
        )
        self._graph = (edge_index, offsets, cell)
        with torch.enable_grad():
            energy = self.schnet(data.atomic_numbers.long(), pos, data.batch).view(-1)
            create = self.training and torch.is_grad_enabled()
            (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=create)
        self._graph = None
        out = {"energy": energy, "forces": -grad}
        if not torch.is_grad_enabled():
            out = {k: v.detach() for k, v in out.items()}
        return out


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class AutocastModel(nn.Module):
    """``model`` run under ``torch.autocast`` with ``dtype`` (float32 weights, mixed-precision ops)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, data: Batch) -> dict[str, Tensor]:
        with torch.autocast(device_type=data.pos.device.type, dtype=self.dtype):
            return self.model(data)


def build_model(
    kind: str,
    config: dict[str, Any],
    reference_root: str | None = None,
    spin_conv_impl: str | None = None,
    seed: int = 0,
) -> nn.Module:
    """Build one benchmarked model in float32 with a fixed seed."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {MODEL_KINDS}")
    torch.manual_seed(seed)
    if kind == "spinconv":
        from spinconv_train.models import SpinConv

        extra = {} if spin_conv_impl is None else {"spin_conv_impl": spin_conv_impl}
        return SpinConv(**config, **extra).float()
    if kind == "reference":
        if not reference_root:
            raise ValueError("model 'reference' needs reference_root (path of an OCP v0.0.3 checkout)")
        from spinconv_train.benchmarks.reference import reference_model

        return reference_model(reference_root, **config)
    return SchNetOnGraph(128, float(config["cutoff"]), int(config["max_num_neighbors"])).float()


def make_targets(batch: Batch, seed: int = 0) -> dict[str, Tensor]:
    """Seeded random energy (B,) and force (N,3) targets for the training step."""
    gen = torch.Generator().manual_seed(seed)
    energy = torch.randn(int(batch.natoms.numel()), generator=gen)
    forces = 0.1 * torch.randn(batch.pos.shape[0], 3, generator=gen)
    return {"energy": energy.to(batch.pos.device), "forces": forces.to(batch.pos.device)}


def make_step(model: nn.Module, batch: Batch, mode: str, seed: int = 0) -> Callable[[], dict[str, Tensor]]:
    """A closure running one ``mode`` step of ``model`` on a fresh copy of ``batch``."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
    if mode in ("forward", "forces"):
        model.eval()
        grad = mode == "forces"

        def infer() -> dict[str, Tensor]:
            with torch.set_grad_enabled(grad):
                out = model(batch.clone())
            return {k: v.detach() for k, v in out.items()}

        return infer

    model.train()
    targets = make_targets(batch, seed)
    free = batch.fixed == 0 if hasattr(batch, "fixed") and batch.fixed is not None else None
    optimizer = torch.optim.Adam(model.parameters(), lr=4e-4, amsgrad=True)

    def train() -> dict[str, Tensor]:
        optimizer.zero_grad(set_to_none=True)
        out = model(batch.clone())
        loss = (out["energy"] - targets["energy"]).abs().mean()
        if "forces" in out:
            diff = (out["forces"] - targets["forces"]).abs()
            if free is not None:
                diff = diff[free]
            loss = loss + FORCE_COEFFICIENT * diff.mean()
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach()}

    return train


def num_edges(batch: Batch, config: dict[str, Any]) -> int:
    """Edges of this project's capped periodic radius graph for ``batch``."""
    from spinconv_train.graph import radius_graph

    edge_index, _ = radius_graph(
        batch.pos, batch.batch, batch.natoms, getattr(batch, "cell", None), getattr(batch, "pbc", None),
        float(config["cutoff"]), int(config["max_num_neighbors"]),
    )
    return int(edge_index.shape[1])
