"""Edge frames as the reference SpinConv (OCP v0.x) built them, for imported OCP models.

For edge j->i with vector v = pos[j] - pos[i] (+ cell shift) the reference takes the
cosine-weighted sum of the vectors of all edges into the target atom i,

    a_i = sum_{e into i} 0.5 (cos(pi d_e / cutoff) + 1) v_e,    r = a_i + 1e-4 (every component),

and the rows x = v / |v|, z = x cross r / (|x cross r| + 1e-7), y = x cross z / (|...| + 1e-7).
The constant 1e-4 offset and the epsilons make these frames not exactly rotation-
invariant (a rotated structure gets slightly different energies), which is why native
models use ``frames.edge_frames``; a model imported from an OCP checkpoint needs these to
compute the function it was trained as. Fine-tuning may switch to the exact frames.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["AXIS_TOLERANCE", "reference_edge_frames", "reference_sphere_coords"]

_OFFSET = 1e-4  # added to every component of the reference vector
_EPS = 1e-7  # added to the norms of z and y
# A unit vector whose distance from its frame's x axis is below this has longitude pi
# (the reference's atan2(0, 0) + pi): the reference took such longitudes from rounding
# residues, so they depended on the atom order and the graph code.
AXIS_TOLERANCE = 1e-5


def reference_edge_frames(vec: Tensor, dist: Tensor, target: Tensor, num_atoms: int, cutoff: float) -> Tensor:
    """Frames (E,3,3), rows (x, y, z), of edges with vectors ``vec`` (E,3), lengths ``dist``
    (E,) and target atoms ``target`` (E,), as the reference computed them."""
    weight = 0.5 * (torch.cos(dist * (math.pi / cutoff)) + 1.0)
    total = vec.new_zeros(num_atoms, 3).index_add(0, target, vec * weight.unsqueeze(-1))
    ref = total.index_select(0, target) + _OFFSET
    x = vec / dist.unsqueeze(-1)
    ref = ref / ref.norm(dim=-1, keepdim=True)
    z = torch.cross(x, ref, dim=-1)
    z = z / (z.norm(dim=-1, keepdim=True) + _EPS)
    y = torch.cross(x, z, dim=-1)
    y = y / (y.norm(dim=-1, keepdim=True) + _EPS)
    return torch.stack([x, y, z], dim=1)


def reference_sphere_coords(frames: Tensor, unit: Tensor) -> Tensor:
    """Frame coordinates (P,3) for ``projection.make_splat_plans`` that put unit vectors
    ``unit`` (P,3) where the reference's grid put them with its ``frames`` (P,3,3).

    The reference's grid differs from this project's (projection.py): its longitude is
    atan2(y, z) + pi (here atan2(z, y)), and its latitude is squeezed into the grid's
    inner 99 % (row = (0.99 (asin(x) + pi/2) / pi + 0.005) (lat - 1)). The returned
    vectors have this project's latitude and longitude at those grid positions, so no
    point lies exactly on a pole row.

    A vector on the x axis (within ``AXIS_TOLERANCE``: every edge's reverse edge, and
    collinear neighbours on lattices) gets longitude pi, the reference's value for exact
    zeros; the reference itself set it from rounding residues, so its energies moved by up
    to a few meV with the atom order."""
    c = torch.bmm(frames, unit.unsqueeze(-1)).squeeze(-1)
    x, y, z = c.unbind(-1)
    rho = torch.sqrt(y * y + z * z)
    lat = torch.atan2(x, rho)  # asin(x) for unit vectors, with finite gradients at the poles
    lat = 0.99 * (lat + 0.5 * math.pi) + 0.005 * math.pi - 0.5 * math.pi
    # (cos lon, sin lon) = (-z, -y) / rho, i.e. lon = atan2(y, z) + pi; atan2(0, 0) + pi = pi.
    flat = rho < AXIS_TOLERANCE
    safe = torch.where(flat, torch.ones_like(rho), rho)
    cos_lon = torch.where(flat, -torch.ones_like(rho), -z / safe)
    sin_lon = torch.where(flat, torch.zeros_like(rho), -y / safe)
    cos_lat = torch.cos(lat)
    return torch.stack([torch.sin(lat), cos_lat * cos_lon, cos_lat * sin_lon], dim=-1)
