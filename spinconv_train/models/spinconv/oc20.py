"""The paper's OC20 S2EF configuration of SpinConv, in the reference's keyword names.

One definition for the benchmarks and the reference harness (the shipped YAML configs in
``configs/s2ef/*/spinconv.yml`` spell the same values out for users).
"""
from __future__ import annotations

from typing import Any

OC20_S2EF_CONFIG: dict[str, Any] = {
    "use_pbc": True,
    "regress_forces": True,
    "otf_graph": True,
    "hidden_channels": 32,
    "mid_hidden_channels": 256,
    "num_interactions": 3,
    "num_basis_functions": 512,
    "basis_width_scalar": 3.0,
    "max_num_neighbors": 40,
    "sphere_size_lat": 16,
    "sphere_size_long": 12,
    "cutoff": 6.0,
    "sphere_message": "fullconv",
    "output_message": "fullconv",
    "force_estimator": "direct",
    "scale_distances": True,
}
