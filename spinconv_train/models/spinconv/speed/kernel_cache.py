"""Kept derived weights: a tensor computed from a parameter, reused while no gradient can
reach that parameter and the parameter has not changed.

The spin convolution's Fourier-domain kernel is such a tensor (``spin_conv.GridSpinConv``
supplies the function that builds it): rebuilding it on every inference call is a large
share of a small molecule's forward pass. Reuse never changes an output: a kept kernel is served
only under exactly the conditions (dtype, device, parameter version and storage, inference
mode, autocast state) it was built under.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from .precision import autocast_state

__all__ = ["KernelCache", "frozen_weights", "kept_kernels"]

_WEIGHTS_FROZEN = contextvars.ContextVar("spin_conv_weights_frozen", default=False)


@contextlib.contextmanager
def frozen_weights() -> Iterator[None]:
    """Within this context no gradient is wanted for kept kernels' parameters, even with
    autograd on (energy-centric forces = -dE/dpos at inference), so kept kernels are served."""
    token = _WEIGHTS_FROZEN.set(True)
    try:
        yield
    finally:
        _WEIGHTS_FROZEN.reset(token)


class KernelCache:
    """One kept kernel of one parameter; owned by the module that builds the kernel.

    ``get`` rebuilds whenever gradients can flow to the parameter (autograd on, the
    parameter requires a gradient, outside ``frozen_weights()``): then the kernel is
    recorded and never kept. Otherwise the kept kernel is served until the key changes.
    A change of the parameter is noticed through its version counter (optimizer steps,
    ``load_state_dict``, EMA updates and any in-place edit bump it) or its storage
    (``.to()``, ``.data = ...``); edits made through ``weight.data`` bypass the counter,
    so call ``clear`` after them. Never pickled or copied with its owner (derived data).
    """

    def __init__(self) -> None:
        self._entry: tuple[tuple, Tensor, Tensor] | None = None  # (key, parameter view, kernel)

    @property
    def kernel(self) -> Tensor | None:
        """The kept kernel, None when nothing is kept."""
        return None if self._entry is None else self._entry[2]

    def get(
        self,
        weight: Tensor,
        dtype: torch.dtype,
        device: torch.device,
        build: Callable[[torch.dtype, torch.device], Tensor],
    ) -> Tensor:
        """``build(dtype, device)``, the kernel of ``weight``; kept and reused when allowed."""
        if torch.is_grad_enabled() and weight.requires_grad and not _WEIGHTS_FROZEN.get():
            return build(dtype, device)  # recorded: gradients reach the weight
        key = (
            dtype,
            device,
            weight._version,
            weight.data_ptr(),
            torch.is_inference_mode_enabled(),
            autocast_state(device.type),
        )
        entry = self._entry
        if entry is not None and entry[0] == key:
            return entry[2]
        with torch.no_grad():
            kernel = build(dtype, device)
        # The kept detached view shares the weight's storage, so that storage cannot be
        # freed and its address (part of the key) reused by another tensor meanwhile.
        self._entry = (key, weight.detach(), kernel)
        return kernel

    def clear(self) -> None:
        """Forget the kept kernel (rebuilt on the next call that may keep one)."""
        self._entry = None

    def __getstate__(self) -> dict:
        return {"_entry": None}

    def __setstate__(self, state: dict) -> None:
        self._entry = None


def kept_kernels(model: nn.Module) -> list[Tensor]:
    """The kernels every ``KernelCache`` of ``model``'s modules keeps now (to hold them
    alive while something reads them by address, e.g. a captured CUDA graph)."""
    caches = (getattr(module, "kernel_cache", None) for module in model.modules())
    return [cache.kernel for cache in caches if isinstance(cache, KernelCache) and cache.kernel is not None]
