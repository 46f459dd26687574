"""SpinConv's settings in one place: the reference's keywords translated and validated.

The reference implementation (OCP v0.0.3) is built as ``SpinConv(num_atoms, bond_feat_dim,
num_targets, **kwargs)`` and its configs carry keywords this implementation ignores;
``SpinConvConfig.from_keywords`` accepts them so such configs load unchanged, checks
the two that must keep their only supported value (``num_targets`` 1, ``readout`` "add"),
drops the others, and renames ``force_estimator: random`` (the reference's random-rotation
force head, replaced here by the deterministic one) to ``direct`` with a warning.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any

from ...graph.capping import cap_value
from .projection import SPHERE_INTERPOLATIONS
from .spin_conv import SPIN_CONV_IMPLS, SPIN_CONV_KINDS

__all__ = ["DIRECT_FORCE_HEADS", "FORCE_ESTIMATORS", "FRAMES", "NEIGHBOR_CAPS", "REFERENCE_ONLY_KEYWORDS",
           "SpinConvConfig"]

FORCE_ESTIMATORS = ("grad", "direct")
DIRECT_FORCE_HEADS = ("sphere", "edge")
# "exact": the invariant frames of frames.py; "reference": the reference's edge frames, grid
# coordinates and pole rows, for models imported from OCP checkpoints (reference_frame.py).
FRAMES = ("exact", "reference")
# "symmetric": an edge is kept when it is among the nearest of either atom, tied shells whole
# (graph/capping.py); "reference": the reference's caps, per target atom and not symmetric,
# for models imported from OCP checkpoints (graph/reference_cap.py).
NEIGHBOR_CAPS = ("symmetric", "reference")
# Keywords of the reference that change nothing here, with the reference's defaults.
REFERENCE_ONLY_KEYWORDS: dict[str, Any] = {
    "num_atoms": None,
    "bond_feat_dim": None,
    "num_targets": 1,  # must be 1: one energy per structure
    "show_timing_info": False,
    "model_ref_number": 0,
    "readout": "add",  # must be "add": the only readout the reference implements
    "num_rand_rotations": 5,  # the force head is deterministic
}
_POSITIONAL = ("num_atoms", "bond_feat_dim", "num_targets")


@dataclass(frozen=True)
class SpinConvConfig:
    """Every setting of a ``SpinConv`` (``model.SpinConv`` documents their meaning)."""

    use_pbc: bool = True
    regress_forces: bool = True
    otf_graph: bool = False
    hidden_channels: int = 32
    mid_hidden_channels: int = 200
    num_interactions: int = 1
    num_basis_functions: int = 200
    basis_width_scalar: float = 1.0
    max_num_neighbors: int | None = 20
    sphere_size_lat: int = 15
    sphere_size_long: int = 9
    cutoff: float = 10.0
    distance_block_scalar_max: float = 2.0
    max_num_elements: int = 90
    embedding_size: int = 32
    sphere_message: str = "fullconv"
    output_message: str = "fullconv"
    lmax: int | None = None
    force_estimator: str = "direct"
    scale_distances: bool = True
    envelope: bool = False
    envelope_exponent: int = 5
    spin_conv_impl: str = "fft"
    spin_conv_chunk_elements: int | str | None = "auto"
    direct_force_head: str = "sphere"
    sphere_interpolation: str = "bilinear"
    frame: str = "exact"
    neighbor_cap: str = "symmetric"

    def __post_init__(self) -> None:
        if self.force_estimator not in FORCE_ESTIMATORS:
            raise ValueError(f"force_estimator must be one of {FORCE_ESTIMATORS} (or the reference's 'random', "
                             f"read as 'direct'), got {self.force_estimator!r}")
        for key in ("sphere_message", "output_message"):
            if getattr(self, key) not in SPIN_CONV_KINDS:
                raise ValueError(f"{key} must be one of {SPIN_CONV_KINDS}, got {getattr(self, key)!r}")
        if self.direct_force_head not in DIRECT_FORCE_HEADS:
            raise ValueError(f"direct_force_head must be one of {DIRECT_FORCE_HEADS}, got {self.direct_force_head!r}")
        if self.spin_conv_impl not in SPIN_CONV_IMPLS:
            raise ValueError(f"spin_conv_impl must be one of {SPIN_CONV_IMPLS}, got {self.spin_conv_impl!r}")
        if self.sphere_interpolation not in SPHERE_INTERPOLATIONS:
            raise ValueError(f"sphere_interpolation must be one of {SPHERE_INTERPOLATIONS}, "
                             f"got {self.sphere_interpolation!r}")
        if self.frame not in FRAMES:
            raise ValueError(f"frame must be one of {FRAMES}, got {self.frame!r}")
        if self.neighbor_cap not in NEIGHBOR_CAPS:
            raise ValueError(f"neighbor_cap must be one of {NEIGHBOR_CAPS}, got {self.neighbor_cap!r}")
        chunk = self.spin_conv_chunk_elements
        if not (chunk is None or chunk == "auto" or (isinstance(chunk, int) and chunk > 0)):
            raise ValueError(f"spin_conv_chunk_elements must be a positive integer, 'auto' or None, got {chunk!r}")
        if self.max_num_neighbors is not None:
            try:
                object.__setattr__(self, "max_num_neighbors", cap_value(self.max_num_neighbors))
            except (TypeError, ValueError):
                raise ValueError(f"max_num_neighbors must be a positive integer or None (no cap), "
                                 f"got {self.max_num_neighbors!r}") from None
        if self.lmax is False:  # the reference's configs spell "no lmax" as false
            object.__setattr__(self, "lmax", None)
        elif self.lmax is not None:
            object.__setattr__(self, "lmax", int(self.lmax))

    @property
    def direct_forces(self) -> bool:
        """Force-centric: forces from a head, not -dE/dx."""
        return self.force_estimator != "grad"

    @classmethod
    def from_keywords(cls, *positional: Any, **keywords: Any) -> SpinConvConfig:
        """The config of ``SpinConv(*positional, **keywords)`` in the reference's calling
        convention: TypeError naming an unknown keyword, ValueError for a bad value."""
        if len(positional) > len(_POSITIONAL):
            raise TypeError(f"SpinConv takes at most {len(_POSITIONAL)} positional arguments "
                            f"({', '.join(_POSITIONAL)}), got {len(positional)}")
        for name, value in zip(_POSITIONAL, positional):
            if name in keywords:
                raise TypeError(f"SpinConv got multiple values for argument {name!r}")
            keywords[name] = value
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(keywords) - fields - set(REFERENCE_ONLY_KEYWORDS))
        if unknown:
            known = ", ".join(sorted(fields | set(REFERENCE_ONLY_KEYWORDS)))
            raise TypeError(f"SpinConv got an unexpected keyword argument {unknown[0]!r}; known: {known}")
        if keywords.get("num_targets", 1) != 1:
            raise ValueError(f"SpinConv predicts one energy per structure; num_targets={keywords['num_targets']} "
                             "is not supported")
        if keywords.get("readout", "add") != "add":
            raise ValueError(f"readout must be 'add' (the only one the reference implements), "
                             f"got {keywords['readout']!r}")
        settings = {key: value for key, value in keywords.items() if key in fields}
        if settings.get("force_estimator") == "random":
            warnings.warn("force_estimator: 'random' (the reference's random-rotation force head) is read as "
                          "'direct': this force head is deterministic and exactly equivariant; write 'direct'",
                          FutureWarning, stacklevel=3)
            settings["force_estimator"] = "direct"
        return cls(**settings)
