"""Embedding block (paper Fig. 2, "embedding"): an element-conditioned mixture of experts.

The message goes Linear(in->mid) -> act -> Linear(mid->K*mid) -> act; a softmax over K
experts, computed from learned embeddings of the source and target elements, mixes
the K slices; a last Linear maps mid -> out.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


class EmbeddingBlock(nn.Module):
    """Element-conditioned MLP: (M, in) messages + (M,) source/target elements -> (M, out)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        mid_channels: int,
        embedding_size: int,
        num_experts: int,
        max_num_elements: int,
        act: Callable[[Tensor], Tensor],
    ) -> None:
        super().__init__()
        self.mid_channels = mid_channels
        self.num_experts = num_experts
        self.act = act
        self.fc1 = nn.Linear(in_channels, mid_channels)
        self.fc2 = nn.Linear(mid_channels, num_experts * mid_channels)
        self.fc3 = nn.Linear(mid_channels, out_channels)
        self.source_embedding = nn.Embedding(max_num_elements, embedding_size)
        self.target_embedding = nn.Embedding(max_num_elements, embedding_size)
        nn.init.uniform_(self.source_embedding.weight, -1e-4, 1e-4)
        nn.init.uniform_(self.target_embedding.weight, -1e-4, 1e-4)
        self.embed_fc1 = nn.Linear(2 * embedding_size, num_experts)

    def forward(self, x: Tensor, source_element: Tensor, target_element: Tensor) -> Tensor:
        emb = torch.cat([self.source_embedding(source_element), self.target_embedding(target_element)], dim=-1)
        mix = torch.softmax(self.embed_fc1(emb), dim=-1)  # (M, K)
        h = self.act(self.fc2(self.act(self.fc1(x))))  # (M, K*mid)
        h = torch.bmm(mix.unsqueeze(1), h.view(-1, self.num_experts, self.mid_channels)).squeeze(1)
        return self.fc3(h)
