"""Datasets (OC20 LMDB, MD17/rMD17, QM9), the balanced batch sampler, collate and helpers.

Importing this package registers ``lmdb`` (aliases ``trajectory_lmdb``,
``single_point_lmdb``), ``ase`` (alias ``extxyz``), ``md17`` and ``qm9`` in ``spinconv_train.registry.DATASETS``.
"""
from .ase_dataset import AseDataset
from .collate import collate
from .element_refs import energies_and_counts, fit_element_references
from .elements import check_atomic_numbers
from .errors import DatasetError
from .lmdb_dataset import LmdbDataset
from .md17 import MD17Dataset
from .qm9 import QM9Dataset
from .sampler import BalancedBatchSampler
from .transforms import RadiusGraph

__all__ = [
    "AseDataset",
    "BalancedBatchSampler",
    "DatasetError",
    "LmdbDataset",
    "MD17Dataset",
    "QM9Dataset",
    "RadiusGraph",
    "check_atomic_numbers",
    "collate",
    "energies_and_counts",
    "fit_element_references",
]
