"""Exponential moving average of model weights (torch's AveragedModel)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def build_ema(model: torch.nn.Module, decay: float) -> AveragedModel:
    """An EMA copy of ``model`` (parameters and buffers) updated with ``update_parameters``."""
    if not 0.0 < decay < 1.0:
        raise ValueError(f"optim.ema_decay must be in (0, 1), got {decay}")
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def ema_from_checkpoint(model: torch.nn.Module, payload: Mapping[str, Any], decay: float | None) -> AveragedModel | None:
    """The EMA saved in a checkpoint ``payload`` around ``model``, or None when the run kept none."""
    if payload.get("ema") is None or not decay:
        return None
    ema = build_ema(model, float(decay))
    ema.load_state_dict(payload["ema"])
    return ema
