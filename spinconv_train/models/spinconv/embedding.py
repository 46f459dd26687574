"""Embedding block (paper Fig. 2, "embedding"): an element-conditioned mixture of experts.

The message goes Linear(in->mid) -> act -> Linear(mid->K*mid) -> act; a softmax over K
experts, computed from learned embeddings of the source and target elements, mixes
the K slices; a last Linear maps mid -> out.

Initialisation: PyTorch's default Linear init scales each layer's signal by about
1/sqrt(3) and the near-uniform expert mixture averages K independent slices (another
1/sqrt(K)), so with the SiLUs one block shrinks the part of a message that varies between
edges/atoms about 50x while the biases pass through. Stacked blocks then output almost the
same vector for every edge (the force head's per-atom outputs varied by ~3e-5), which left
the force-centric model on a long loss plateau. ``reset_parameters`` uses a variance-
preserving init instead (He-normal fc1/fc2, fc3 compensating the mixture average, zero
biases); the architecture and parameter count are those of the paper.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .activation import activate, silu_mixture


def he_init_(layer: nn.Linear) -> nn.Linear:
    """He-normal weights (gain sqrt(2), suited to the SiLU that follows) and zero bias, in place."""
    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    nn.init.zeros_(layer.bias)
    return layer


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
        self.embed_fc1 = nn.Linear(2 * embedding_size, num_experts)
        # Set by models that train through a second derivative (energy-centric): the expert
        # activations are then recomputed in backward instead of kept (activation.silu_mixture;
        # less memory, ~4% slower per block in first-order training, so off by default).
        self.recompute_for_second_order = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Variance-preserving init of fc1-fc3 (see the module docstring); embeddings ~U(+-1e-4)."""
        he_init_(self.fc1)
        he_init_(self.fc2)
        # A uniform mixture of K independent slices has 1/K of a slice's variance.
        nn.init.normal_(self.fc3.weight, std=math.sqrt(self.num_experts / self.mid_channels))
        nn.init.zeros_(self.fc3.bias)
        nn.init.uniform_(self.source_embedding.weight, -1e-4, 1e-4)
        nn.init.uniform_(self.target_embedding.weight, -1e-4, 1e-4)

    def forward(self, x: Tensor, source_element: Tensor, target_element: Tensor) -> Tensor:
        emb = torch.cat([self.source_embedding(source_element), self.target_embedding(target_element)], dim=-1)
        mix = torch.softmax(self.embed_fc1(emb), dim=-1)  # (M, K)
        z = self.fc2(activate(self.act, self.fc1(x))).view(-1, self.num_experts, self.mid_channels)
        if isinstance(self.act, nn.SiLU) and self.recompute_for_second_order and self.training:
            h = silu_mixture(z, mix)  # keeps no (M, K*mid) activations for backward
        else:
            h = torch.bmm(mix.unsqueeze(1), activate(self.act, z)).squeeze(1)
        return self.fc3(h)
