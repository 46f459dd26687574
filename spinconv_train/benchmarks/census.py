"""Op census of one step: how many ATen ops it dispatches, how many of them launch work
(not views), and how many are of the kinds that make the host wait for a GPU.

On a GPU a small batch is bound by the host: every non-view op is a kernel launch of a
few microseconds, and a synchronising op stalls the host until the GPU queue drains, so
these counts bound the step's launch overhead whatever the device it was measured on.
``sync_prone`` counts the op kinds that read device data back on CUDA (``.item()``,
``nonzero``, boolean masks, ``bincount``, ``repeat_interleave`` with tensor repeats, ...)
on any device; ``sync_prone_on_device`` only those whose inputs are not on the CPU (on a
CPU run it is 0 by definition; on CUDA it is what actually synchronises).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["VIEW_OPS", "SYNC_PRONE_OPS", "OpCensus", "op_census"]

VIEW_OPS = frozenset({
    "alias", "as_strided", "detach", "expand", "lift_fresh", "permute", "select", "slice", "split",
    "split_with_sizes", "squeeze", "t", "transpose", "unbind", "unfold", "unsqueeze", "view", "_unsafe_view",
    "_reshape_alias", "view_as_real", "view_as_complex", "diagonal", "narrow",
})
SYNC_PRONE_OPS = frozenset({
    "_local_scalar_dense", "nonzero", "masked_select", "bincount", "_unique2", "unique_dim",
    "unique_consecutive", "is_nonzero", "one_hot", "equal", "histc", "_assert_async",
})


def _op_name(func: Any) -> str:
    """'aten.view.default' -> 'view'."""
    return str(func).split(".")[1] if str(func).count(".") >= 2 else str(func)


class OpCensus(TorchDispatchMode):
    """Counts the ATen ops dispatched inside its context (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter = Counter()
        self.sync_prone = 0
        self.sync_prone_on_device = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _op_name(func)
        self.ops[name] += 1
        if self._is_sync_prone(func, name, kwargs):
            self.sync_prone += 1
            flat, _ = tree_flatten((args, kwargs))
            if any(isinstance(t, torch.Tensor) and t.device.type != "cpu" for t in flat):
                self.sync_prone_on_device += 1
        return func(*args, **kwargs)

    @staticmethod
    def _is_sync_prone(func: Any, name: str, kwargs: dict[str, Any]) -> bool:
        if name in SYNC_PRONE_OPS:
            return True
        # repeat_interleave with tensor repeats must read them for its output size, unless given
        return name == "repeat_interleave" and "Tensor" in str(func) and kwargs.get("output_size") is None

    def summary(self) -> dict[str, Any]:
        total = sum(self.ops.values())
        views = sum(count for name, count in self.ops.items() if name in VIEW_OPS)
        return {
            "ops": total,
            "non_view_ops": total - views,
            "sync_prone": self.sync_prone,
            "sync_prone_on_device": self.sync_prone_on_device,
            "top_ops": dict(self.ops.most_common(8)),
        }


def op_census(step: Callable[[], Any]) -> dict[str, Any]:
    """Run ``step`` once and return its op counts (``OpCensus.summary``)."""
    census = OpCensus()
    with census:
        step()
    return census.summary()
