"""Optimisers built from the ``optim`` config section."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def build_optimizer(params: Any, optim: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Adam (``optimizer_params: {amsgrad: true}`` as the paper) or AdamW."""
    name = optim["optimizer"].lower()
    kwargs = dict(optim.get("optimizer_params") or {})
    kwargs.setdefault("weight_decay", optim.get("weight_decay", 0.0))
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    try:
        return cls(params, lr=optim["lr_initial"], **kwargs)
    except TypeError as err:
        raise ValueError(f"optim.optimizer_params {kwargs} are not valid for {cls.__name__}: {err}") from None
