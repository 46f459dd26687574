"""Energy head (paper Sec. 3.4): sum edge messages into atoms, per-atom embedding block,
sum per structure."""
from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from ..outputs import structure_energies
from .embedding import EmbeddingBlock
from .speed import accumulation_dtype


class EnergyHead(nn.Module):
    """(E, hidden) edge messages -> (B,) energies (and the (N,) per-atom terms they sum)."""

    def __init__(
        self,
        hidden_channels: int,
        mid_channels: int,
        embedding_size: int,
        max_num_elements: int,
        max_num_neighbors: int,
        act: Callable[[Tensor], Tensor],
    ) -> None:
        super().__init__()
        self.norm = max_num_neighbors / 2.0 + 1.0  # the reference's constant normaliser
        self.energyembeddingblock = EmbeddingBlock(
            hidden_channels, 1, mid_channels, embedding_size, 8, max_num_elements, act
        )
        # Per-atom energies start at zero: with the variance-preserving init a summed
        # per-atom output would start at tens of normalised units for a 40-atom slab.
        nn.init.zeros_(self.energyembeddingblock.fc3.weight)

    def forward(
        self,
        x: Tensor,
        target: Tensor,
        atomic_numbers: Tensor,
        batch: Tensor,
        num_structures: int,
        edge_scale: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(energies (B,), per-atom energies (N,))``: the structure energies are the sums of
        the per-atom terms."""
        atom_energy = self.atom_energies(x, target, atomic_numbers, edge_scale)
        total = accumulation_dtype(atom_energy.dtype)
        energy = structure_energies(atom_energy, batch, num_structures, total)
        return energy, atom_energy

    def atom_energies(self, x: Tensor, target: Tensor, atomic_numbers: Tensor,
                      edge_scale: Tensor | None = None) -> Tensor:
        """(N,) per-atom energies."""
        if edge_scale is not None:
            x = x * edge_scale.unsqueeze(-1)
        total = accumulation_dtype(x.dtype)
        atom = x.new_zeros(atomic_numbers.shape[0], x.shape[-1], dtype=total).index_add_(0, target, x.to(total))
        return self.energyembeddingblock(atom / self.norm, atomic_numbers, atomic_numbers).squeeze(-1)
