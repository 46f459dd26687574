"""Target normalisers: state fitted on the training split and saved with the model."""
from __future__ import annotations

from typing import Any

import torch


class Normalizer:
    """Affine map ``(x - mean) / std`` of a target; ``std`` may be a vector (one per target).

    ``force_std`` scales forces (OCP convention: the energy std, so that forces stay the
    gradient of the normalised energy).
    """

    def __init__(self, mean: Any = 0.0, std: Any = 1.0, force_std: float | None = None) -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.float64).clone()
        self.std = torch.as_tensor(std, dtype=torch.float64).clone()
        if bool((self.std <= 0).any()) or not bool(torch.isfinite(self.std).all()):
            raise ValueError(f"normaliser std must be positive and finite, got {self.std.tolist()}")
        if force_std is None:
            force_std = float(self.std.reshape(-1)[0])
        self.force_std = float(force_std)

    @classmethod
    def fit(cls, values: torch.Tensor) -> Normalizer:
        """Mean and (population) standard deviation of ``values`` (S,) or (S, T) over dim 0."""
        values = torch.as_tensor(values, dtype=torch.float64)
        if values.shape[0] < 1:
            raise ValueError("cannot fit a normaliser on zero samples")
        mean = values.mean(dim=0)
        std = values.std(dim=0, unbiased=False) if values.shape[0] > 1 else torch.ones_like(mean)
        std = torch.where(std > 1e-12, std, torch.ones_like(std))
        return cls(mean, std)

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x)) / self.std.to(x)

    def denorm(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std.to(x) + self.mean.to(x)

    def norm_forces(self, f: torch.Tensor) -> torch.Tensor:
        return f / self.force_std

    def denorm_forces(self, f: torch.Tensor) -> torch.Tensor:
        return f * self.force_std

    def norm_stress(self, s: torch.Tensor) -> torch.Tensor:
        """A stress is the strain derivative of the energy: scaled by the energy's std."""
        return s / self.std.reshape(-1)[0].to(s)

    def denorm_stress(self, s: torch.Tensor) -> torch.Tensor:
        return s * self.std.reshape(-1)[0].to(s)

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "force_std": self.force_std}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Normalizer:
        return cls(state["mean"], state["std"], state.get("force_std"))

    def __repr__(self) -> str:
        return f"Normalizer(mean={self.mean.tolist()}, std={self.std.tolist()}, force_std={self.force_std:.6g})"
