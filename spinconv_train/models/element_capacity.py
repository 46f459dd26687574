"""The largest atomic number a model's element embedding has a row for."""
from __future__ import annotations

import torch


def max_atomic_number(model: torch.nn.Module) -> int | None:
    """``max_num_elements - 1`` for SpinConv; the atom embedding's last row for the
    torch_geometric baselines (SchNet: 99, DimeNet++: 94); None when the model has no
    element embedding this function knows."""
    rows = getattr(model, "max_num_elements", None)
    if rows is not None:
        return int(rows) - 1
    net = getattr(model, "net", None)
    for path in ("embedding", "emb.emb"):
        module = net
        for name in path.split("."):
            module = getattr(module, name, None)
        if isinstance(module, torch.nn.Embedding):
            return int(module.num_embeddings) - 1
    return None
