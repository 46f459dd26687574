"""SpinConv inference replayed from CUDA graphs: one kernel launch sequence per call.

On a GPU a small system (a molecule, a slab) is bound by launching the forward's ~1,000
kernels from Python, not by the GPU. ``GraphedSpinConv`` searches the neighbours on the
host as usual (``SpinConv.edge_indices``), then replays a CUDA graph captured for batches
of the same shape (atoms, edges, edge pairs, structures): the inputs are copied into the
graph's fixed buffers, the graph runs, the outputs are copied out. In molecular dynamics
of a molecule inside the cutoff every step has the same shape, so after the first step no
Python runs for the model at all; a new shape (an atom crossing the cutoff) captures a new
graph (up to ``max_graphs`` are kept, least recently used dropped).

For inference only (``eval()``, weights fixed): the graphs are captured again when a
parameter changes (optimiser step, ``load_state_dict``). Gives the same outputs as the
model (it runs the same kernels); tested against it in ``tests/gpu``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor, nn

from ..edges import EdgeIndices
from .kernel_cache import kept_kernels

__all__ = ["GraphedSpinConv"]

# The batch fields the model reads once the neighbours are known.
_INPUTS = ("pos", "atomic_numbers", "batch", "natoms", "cell")


class _Captured:
    """One CUDA graph of ``model(data, edges=...)`` and its input / output buffers."""

    def __init__(self, model: nn.Module, data: Any, edges: EdgeIndices, kwargs: dict[str, bool],
                 warmup: int) -> None:
        self.data = data.clone()  # fixed input buffers (the graph reads these addresses)
        self.edges = EdgeIndices(edges.edge_index.clone(), edges.cell_offsets.clone(), edges.rev.clone(),
                                 edges.degree.clone(), edges.num_pairs)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # lazy initialisation and kept kernels, outside the graph
            for _ in range(warmup):
                model(self.data, edges=self.edges, **kwargs)
        torch.cuda.current_stream().wait_stream(stream)
        # The graph reads the spin convolutions' kept Fourier kernels by address: hold them,
        # so that a later eval()/train() switch of the model cannot free them.
        self.kept = kept_kernels(model)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = model(self.data, edges=self.edges, **kwargs)

    def run(self, data: Any, edges: EdgeIndices) -> dict[str, Tensor]:
        for name in _INPUTS:
            value = getattr(data, name, None)
            if isinstance(value, Tensor):
                getattr(self.data, name).copy_(value)
        for name in ("edge_index", "cell_offsets", "rev", "degree"):
            getattr(self.edges, name).copy_(getattr(edges, name))
        self.graph.replay()
        return {key: value.clone() for key, value in self.outputs.items()}


class GraphedSpinConv(nn.Module):
    """``SpinConv`` for inference on CUDA with its forward replayed from CUDA graphs.

    Call it like the model (``stress``, ``atom_energies``); the attributes callers read
    (``supports_stress``, ``force_estimator``, ...) are the model's.
    """

    def __init__(self, model: nn.Module, max_graphs: int = 8, warmup: int = 2) -> None:
        super().__init__()
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 (the kept kernels are built before capture), got {warmup}")
        if not hasattr(model, "edge_indices"):
            raise TypeError(f"CUDA graphs need a SpinConv model, got {type(model).__name__}")
        if max_graphs < 1:
            raise ValueError(f"max_graphs must be >= 1, got {max_graphs}")
        self.model = model.eval()
        self.max_graphs, self.warmup = max_graphs, warmup
        self._graphs: OrderedDict[tuple, _Captured] = OrderedDict()
        self._weights_seen: tuple = ()
        self.captures = 0  # graphs captured so far (a new shape or changed weights)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            model = self.__dict__.get("_modules", {}).get("model")
            if model is None:
                raise
            return getattr(model, name)  # the wrapped model's settings (supports_stress, cutoff, ...)

    def train(self, mode: bool = True) -> GraphedSpinConv:
        if mode:
            raise RuntimeError("GraphedSpinConv is for inference; train the wrapped model itself")
        return super().train(False)

    def _weights_state(self) -> tuple:
        return tuple((p.data_ptr(), p._version) for p in self.model.parameters())

    def forward(self, data: Any, stress: bool = False, atom_energies: bool = False) -> dict[str, Tensor]:
        if data.pos.device.type != "cuda":
            raise RuntimeError("GraphedSpinConv runs on CUDA only; call the model itself on a CPU")
        if data.batch is None:
            data.batch = torch.zeros(data.pos.shape[0], dtype=torch.long, device=data.pos.device)
        if stress:
            self.model._check_stress_input(data, True)  # checks that wait for the GPU: outside the graph
        edges = self.model.edge_indices(data)
        weights = self._weights_state()
        if weights != self._weights_seen:
            self._graphs.clear()  # captured with other weights (or their Fourier kernels)
            self._weights_seen = weights
        key = (data.pos.shape[0], edges.edge_index.shape[1], edges.num_pairs, int(data.natoms.numel()),
               data.pos.dtype, getattr(data, "cell", None) is not None, stress, atom_energies)
        captured = self._graphs.get(key)
        if captured is None:
            kwargs = {"stress": stress, "atom_energies": atom_energies}
            captured = _Captured(self.model, data, edges, kwargs, self.warmup)
            self.captures += 1
            self._graphs[key] = captured
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        return captured.run(data, edges)
