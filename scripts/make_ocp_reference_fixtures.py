"""Write tests/fixtures/ocp/reference_spinconv.pt: a small reference SpinConv in the layout
of an OCP trainer checkpoint, with a few structures and the reference's own energies.

Needs a checkout of the Open Catalyst Project repository at its last commit with
``ocpmodels/models/spinconv.py`` (e7a8745e): ``REFERENCE_ROOT=/path/to/ocp python
scripts/make_ocp_reference_fixtures.py``. The reference runs through
``spinconv_train.benchmarks.reference`` (pure-torch ``torch_scatter`` stand-in, float32,
the reference's own periodic graph code ``radius_graph_pbc`` / ``get_pbc_distances``).

The checkpoint holds what OCP's ``BaseTrainer.save`` writes: ``state_dict`` (names
prefixed ``module.``), ``normalizers`` (``target`` and ``grad_target``, tensors),
``config`` (OCP's trainer config: ``model`` a name, ``model_attributes``), ``ema``
(``shadow_params`` in parameter order: weights that differ from ``state_dict``, so that a
test sees which set was imported), ``optimizer``, ``scheduler``, ``epoch``, ``step``,
``best_val_metric``, ``primary_metric``. The energies are the reference's outputs with the
EMA weights, as OCP's validation used them: raw (normalised) and in eV.
"""
from __future__ import annotations

import argparse
import functools
import os
import pickle
import sys
from pathlib import Path
from typing import Any

import lmdb
import torch

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "fixtures" / "ocp" / "reference_spinconv.pt"
BASELINES_OUT = REPO / "tests" / "fixtures" / "ocp" / "reference_baselines.pt"
SOURCE = REPO / "data" / "oc20_mini" / "s2ef" / "val_id" / "data.lmdb"
REFERENCE_COMMIT = "e7a8745eb307e8a681a1aa9d30c36e8c41e8a5c9"

# Small, so that the fixture stays small; every other key takes the reference's default.
MODEL_ATTRIBUTES: dict[str, Any] = {
    "hidden_channels": 8, "mid_hidden_channels": 16, "num_interactions": 2, "num_basis_functions": 16,
    "sphere_size_lat": 8, "sphere_size_long": 6, "max_num_neighbors": 40, "cutoff": 4.0,
    "sphere_message": "fullconv", "output_message": "fullconv", "force_estimator": "random",
    "regress_forces": True, "use_pbc": True, "scale_distances": True, "basis_width_scalar": 3.0,
    "otf_graph": True, "embedding_size": 8,
}
NORMALIZERS = {"target": {"mean": -0.55, "std": 0.44}, "grad_target": {"mean": 0.0, "std": 0.44}}
STRUCTURES = (0, 21, 49)  # records of SOURCE: three systems
# Seeded displacement of every atom (Angstrom). In a symmetric environment (a bulk-like slab
# atom) the reference's neighbour sum nearly vanishes, so its frame is set by the 1e-4
# offset and the float32 rounding of that sum: any other summation order (another graph
# code, a permutation of the atoms) changes such energies beyond round-off. Displaced
# atoms keep the frames well conditioned, so the fixture tests the frames themselves.
RATTLE = 0.1
SEED = 1234
# Spread of the EMA weights around the raw ones: large enough that the angular path (and
# with it the edge frames) changes the energies well beyond float32 round-off.
EMA_NOISE = 0.3
PERMUTATIONS = 4


def _load_reference(root: str) -> Any:
    """The reference's module loader, widened for this commit: its ``models/base.py`` also
    imports ``compute_neighbors``, its ``radius_graph_pbc`` calls ``get_max_neighbors_mask``
    (which uses torch_scatter's segment functions) and ``conditional_grad`` uses
    ``functools.wraps``."""
    from spinconv_train.benchmarks import reference, scatter_standin

    extra = ("compute_neighbors", "get_max_neighbors_mask")
    reference._UTILS_FUNCTIONS = tuple(dict.fromkeys((*reference._UTILS_FUNCTIONS, *extra)))
    subset = reference._utils_subset

    def with_wraps(path: Path) -> Any:
        module = subset(path)
        module.__dict__["wraps"] = functools.wraps
        for name in ("scatter", "segment_coo", "segment_csr"):
            module.__dict__[name] = getattr(scatter_standin, name)
        return module

    reference._utils_subset = with_wraps
    return reference


def _structures() -> list[Any]:
    env = lmdb.open(str(SOURCE), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        records = [pickle.loads(txn.get(str(i).encode())) for i in STRUCTURES]
    env.close()
    generator = torch.Generator().manual_seed(SEED + 3)
    for record in records:
        record.pos = record.pos + RATTLE * torch.randn(record.pos.shape, generator=generator)
    return records


def _ocp_config() -> dict[str, Any]:
    """The config dict OCP's trainer stores in its checkpoints (its layout, small values)."""
    return {
        "task": {"dataset": "trajectory_lmdb", "description": "fixture", "type": "regression", "metric": "mae",
                 "labels": ["potential energy"], "grad_input": "atomic forces",
                 "train_on_free_atoms": True, "eval_on_free_atoms": True},
        "trainer": "forces",
        "model": "spinconv",
        "model_attributes": dict(MODEL_ATTRIBUTES),
        "optim": {"batch_size": 3, "eval_batch_size": 3, "num_workers": 8, "lr_initial": 0.0004,
                  "optimizer": "Adam", "optimizer_params": {"amsgrad": True}, "eval_every": 5000,
                  "scheduler": "ReduceLROnPlateau", "mode": "min", "factor": 0.8, "patience": 3,
                  "max_epochs": 80, "force_coefficient": 100, "energy_coefficient": 1, "ema_decay": 0.999},
        "logger": "tensorboard",
        "amp": False,
        "gpus": 1,
        "cmd": {"identifier": "fixture", "print_every": 100, "seed": 0, "timestamp_id": "fixture",
                "commit": REFERENCE_COMMIT[:8], "checkpoint_dir": "checkpoints/fixture",
                "results_dir": "results/fixture", "logs_dir": "logs/tensorboard/fixture"},
        "slurm": {},
        "noddp": False,
        "dataset": {"src": "data/s2ef/2M/train/", "normalize_labels": True,
                    "target_mean": NORMALIZERS["target"]["mean"], "target_std": NORMALIZERS["target"]["std"],
                    "grad_target_mean": 0.0, "grad_target_std": NORMALIZERS["grad_target"]["std"]},
        "val_dataset": {"src": "data/s2ef/all/val_id/"},
    }


# Small SchNet / DimeNet++ in OCP's wrappers (SchNetWrap subclasses torch_geometric's
# SchNet; DimeNetPlusPlusWrap is OCP's own copy). Cutoff 4 A keeps every neighbour (below
# the wrappers' 50), so graph codes that order or break ties differently give one graph.
BASELINES: dict[str, dict[str, Any]] = {
    "schnet": {"hidden_channels": 16, "num_filters": 16, "num_interactions": 2, "num_gaussians": 20,
               "cutoff": 4.0, "use_pbc": True, "regress_forces": True, "otf_graph": True},
    "dimenetplusplus": {"hidden_channels": 8, "out_emb_channels": 8, "num_blocks": 1, "int_emb_size": 4,
                        "basis_emb_size": 2, "num_spherical": 3, "num_radial": 3, "cutoff": 4.0,
                        "use_pbc": True, "regress_forces": True, "otf_graph": True},
}
_BASELINE_FILES = {"schnet": "schnet.py", "dimenetplusplus": "dimenet_plus_plus.py"}


def _load_baseline_module(reference: Any, root: str, name: str) -> Any:
    """OCP's ``models/<name>.py`` loaded as the reference loader loads ``spinconv.py``.
    ``torch_sparse`` (DimeNet++'s triplets) is stood in by an empty module: the model
    builds, and its forward (which needs it) is not run."""
    import types

    from spinconv_train.benchmarks import scatter_standin

    base = Path(root) / "ocpmodels"
    with reference._restored_sys_modules(("ocpmodels", "torch_scatter", "torch_sparse")):
        if not reference.torch_scatter_available():
            sys.modules["torch_scatter"] = scatter_standin.as_module()
        sparse = types.ModuleType("torch_sparse")
        sparse.SparseTensor = object
        sys.modules.setdefault("torch_sparse", sparse)
        for package in ("ocpmodels", "ocpmodels.common", "ocpmodels.models"):
            sys.modules[package] = reference._package(package)
        reference._load_by_path("ocpmodels.common.registry", base / "common" / "registry.py")
        reference._load_by_path("ocpmodels.common.transforms", base / "common" / "transforms.py")
        sys.modules["ocpmodels.common.utils"] = reference._utils_subset(base / "common" / "utils.py")
        reference._load_by_path("ocpmodels.models.base", base / "models" / "base.py")
        return reference._load_by_path(f"ocpmodels.models.{name}", base / "models" / _BASELINE_FILES[name])


def _baseline_checkpoint(reference: Any, root: str, name: str, records: list[Any]) -> dict[str, Any]:
    """An OCP-layout checkpoint of a small ``name`` model; SchNet also with its energies."""
    from torch_geometric.data import Batch

    module = _load_baseline_module(reference, root, name)
    cls = module.SchNetWrap if name == "schnet" else module.DimeNetPlusPlusWrap
    torch.manual_seed(SEED)
    model = cls(None, None, 1, **BASELINES[name]).float()
    config = _ocp_config()
    config["model"], config["model_attributes"] = name, dict(BASELINES[name])
    payload: dict[str, Any] = {
        "epoch": 1.0, "step": 10,
        "state_dict": {f"module.{k}": v.detach().clone() for k, v in model.state_dict().items()},
        "normalizers": {key: {"mean": torch.tensor(v["mean"]), "std": torch.tensor(v["std"])}
                        for key, v in NORMALIZERS.items()},
        "config": config, "ema": None, "optimizer": {"state": {}, "param_groups": []}, "scheduler": None,
    }
    if name == "schnet":
        batch = Batch.from_data_list([r.clone() for r in records])
        batch.atomic_numbers = batch.atomic_numbers.long()
        energy, _ = model(batch)
        payload["reference"] = {"energy_raw": energy.detach().view(-1).float(),
                                "note": "OCP SchNetWrap (torch_geometric SchNet) at e7a8745e, float32, its "
                                        "radius_graph_pbc graph, raw weights (no EMA)"}
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference-root", default=os.environ.get("REFERENCE_ROOT"),
                        help="OCP checkout at e7a8745e (default: $REFERENCE_ROOT)")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    if not args.reference_root:
        parser.error("set REFERENCE_ROOT (or --reference-root) to an OCP checkout at e7a8745e")
    reference = _load_reference(args.reference_root)
    from torch_geometric.data import Batch

    torch.manual_seed(SEED)
    model = reference.build_reference_spinconv(args.reference_root, **MODEL_ATTRIBUTES).float()
    state_dict = {f"module.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    # EMA weights: the raw weights moved by a seeded perturbation (a trained run's EMA
    # differs from its last weights); the energies below are computed with them.
    generator = torch.Generator().manual_seed(SEED + 1)
    shadow = [p.detach() + EMA_NOISE * (3.0 if ".conv1." in name else 1.0) * torch.randn(p.shape, generator=generator)
              for name, p in model.named_parameters()]
    with torch.no_grad():
        for param, value in zip(model.parameters(), shadow):
            param.copy_(value)
    records = _structures()
    batch = Batch.from_data_list([r.clone() for r in records])
    wrapped = reference.ReferenceSpinConv(model)
    torch.manual_seed(SEED + 2)  # the reference's force block draws random rotations
    out = wrapped(batch)
    energy_raw = out["energy"].detach().float()
    # The same structures with their atoms permuted: only the rounding changes, and with it
    # the longitude of each reverse edge on its sphere (the reference computes it with
    # atan2 of two rounding residues), so the spread is the reference's own reproducibility.
    permuted = []
    for trial in range(PERMUTATIONS):
        generator = torch.Generator().manual_seed(SEED + 10 + trial)
        shuffled = []
        for record in records:
            order = torch.randperm(record.pos.shape[0], generator=generator)
            record = record.clone()
            for key in ("pos", "atomic_numbers", "tags", "fixed", "force"):
                if getattr(record, key, None) is not None:
                    setattr(record, key, getattr(record, key)[order])
            shuffled.append(record)
        torch.manual_seed(SEED + 2)
        permuted.append(wrapped(Batch.from_data_list(shuffled))["energy"].detach().float())
    target = NORMALIZERS["target"]
    fixture = {
        "epoch": 3.0, "step": 1200,
        "state_dict": state_dict,
        "optimizer": {"state": {}, "param_groups": []},
        "scheduler": None,
        "normalizers": {key: {"mean": torch.tensor(v["mean"]), "std": torch.tensor(v["std"])}
                        for key, v in NORMALIZERS.items()},
        "config": _ocp_config(),
        "val_metrics": None,
        "ema": {"decay": 0.999, "num_updates": 1200, "shadow_params": shadow, "collected_params": []},
        "amp": None,
        "best_val_metric": 0.01,
        "primary_metric": "energy_force_within_threshold",
        "reference": {
            "commit": REFERENCE_COMMIT,
            "structures": [{key: getattr(r, key).clone() for key in ("pos", "cell", "atomic_numbers", "natoms",
                                                                       "tags", "fixed", "pbc")}
                           for r in records],
            "energy_raw": energy_raw,
            "energy": energy_raw.double() * target["std"] + target["mean"],
            "energy_raw_permuted": torch.stack(permuted),
            "note": "reference spinconv.py at e7a8745e, float32, its radius_graph_pbc periodic graph, "
                    "EMA (shadow_params) weights, torch_scatter stand-in; energy_raw_permuted: the same "
                    "structures with their atoms permuted (the reference's own reproducibility)",
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{args.out}.tmp"
    torch.save(fixture, tmp)
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes); energies (eV): "
          f"{[round(float(e), 5) for e in fixture['reference']['energy']]}")
    baselines = {name: _baseline_checkpoint(reference, args.reference_root, name, _structures())
                 for name in BASELINES}
    baselines["structures"] = fixture["reference"]["structures"]
    out = Path(args.out).with_name(BASELINES_OUT.name)
    torch.save(baselines, f"{out}.tmp")
    os.replace(f"{out}.tmp", out)
    print(f"wrote {out} ({os.path.getsize(out)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
