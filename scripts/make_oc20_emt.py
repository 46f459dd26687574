"""Generate an OC20-style EMT dataset of any size: adsorbate+slab BFGS relaxations with an
OC20-like in-/out-of-distribution split, in parallel and reproducibly.

    python scripts/make_oc20_emt.py --size 300 --out data/oc20_emt --workers 2

``--size`` systems, each one adsorbate on an fcc(111), (100), (110) or (211) slab of 36 atoms
(Al, Cu, Ag, Au, Ni, Pd, Pt: the metals of ASE's EMT) at a random point near a random
top-layer atom, relaxed with BFGS (fmax 0.05 eV/Å, at most 100 steps, lower half fixed);
every frame's energy and forces are kept. Energies are adsorption energies as in
OC20-mini (``make_oc20_mini.py``): E(slab+ads) - E(relaxed clean slab) - gas references.

Splits, as OC20 splits its validation data (unseen adsorbates, unseen catalysts, both):

- catalyst out of distribution: every Au surface (an unseen metal) and Cu(211), Pd(110)
  (unseen surfaces of known metals);
- adsorbate out of distribution: NO and NH2;
- ``val_ood_both``: both; ``val_ood_ads`` / ``val_ood_cat``: one of them; the rest go to
  ``train`` and ``val_id`` by a seeded draw (``--val-id-fraction``).

Output::

    OUT/s2ef/{train,val_id,val_ood_ads,val_ood_cat,val_ood_both}/*.lmdb + metadata.npz
    OUT/s2ef/train_<N>/    nested training subsets of whole systems (``--train-subsets``)
    OUT/is2re/<split>/data.lmdb + metadata.npz   (y_init, y_relaxed, pos_relaxed)
    OUT/manifest.json      arguments, versions, per-split counts, every system's spec

System ``k`` is drawn from its own generator seeded by ``(seed, k)``: it is the same for any
``--size`` above ``k`` and any ``--workers`` (each relaxation is single-threaded and
deterministic; results are written in system order).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from functools import cache  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.build import fcc100, fcc110, fcc111, fcc211  # noqa: E402
from ase.constraints import FixAtoms  # noqa: E402
from ase.geometry import find_mic  # noqa: E402
from tqdm import tqdm  # noqa: E402


def _mini() -> Any:
    """``make_oc20_mini.py`` next to this file (relaxation, references, records, writer)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "make_oc20_mini.py")
    spec = importlib.util.spec_from_file_location("make_oc20_mini_for_emt", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mini = _mini()

METALS = ("Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt")
FACETS = ("111", "100", "110", "211")
BUILDERS = {"111": fcc111, "100": fcc100, "110": fcc110, "211": fcc211}
SLAB_SIZE = (3, 3, 4)  # 36 atoms for every facet
ADSORBATES = ("H", "O", "N", "C", "OH", "CO", "CH", "NH", "CH2", "CH3", "NO", "NH2")
OOD_METALS = ("Au",)
OOD_SURFACES = (("Cu", "211"), ("Pd", "110"))
OOD_ADSORBATES = ("NO", "NH2")
SPLITS = ("train", "val_id", "val_ood_ads", "val_ood_cat", "val_ood_both")
VACUUM = 7.5  # Å on each side of the slab

# OC20-mini's adsorbates (binding atom first, at the origin; the rest above it, Å) and two more.
GEOMETRIES = {
    **mini.ADSORBATE_GEOMETRIES,
    "NH2": ("NH2", [(0, 0, 0), (0.82, 0, 0.58), (-0.82, 0, 0.58)]),
    "CH3": ("CH3", [(0, 0, 0), (1.03, 0, 0.36), (-0.51, 0.89, 0.36), (-0.51, -0.89, 0.36)]),
}


def split_of(metal: str, facet: str, adsorbate: str, id_draw: float, val_id_fraction: float) -> str:
    """The split of a system (see the module docstring)."""
    ood_cat = metal in OOD_METALS or (metal, facet) in OOD_SURFACES
    ood_ads = adsorbate in OOD_ADSORBATES
    if ood_cat and ood_ads:
        return "val_ood_both"
    if ood_ads:
        return "val_ood_ads"
    if ood_cat:
        return "val_ood_cat"
    return "val_id" if id_draw < val_id_fraction else "train"


def system_spec(sid: int, seed: int, val_id_fraction: float = 0.1) -> dict:
    """System ``sid``: metal, facet, adsorbate, placement and split, from its own seeded draw."""
    rng = np.random.default_rng([seed, sid])
    metal = METALS[rng.integers(len(METALS))]
    facet = FACETS[rng.integers(len(FACETS))]
    ads = ADSORBATES[rng.integers(len(ADSORBATES))]
    spec = {
        "sid": sid, "metal": metal, "facet": facet, "adsorbate": ads,
        "anchor_draw": float(rng.uniform()),  # which top-layer atom the site is near
        "radius": float(rng.uniform(0.0, 1.6)), "angle": float(rng.uniform(0.0, 2 * np.pi)),
        "height": float(rng.uniform(1.3, 2.1)),
        "rotation": float(rng.uniform(0.0, 360.0)), "tilt": float(rng.uniform(0.0, 25.0)),
        "id_draw": float(rng.uniform()),
    }
    spec["split"] = split_of(metal, facet, ads, spec["id_draw"], val_id_fraction)
    return spec


def build_slab(metal: str, facet: str) -> Atoms:
    """A 36-atom slab, periodic in all directions (OC20 convention), its lower half fixed.

    Tags follow OC20 by height: 0 for the fixed lower half, 1 for the free upper half."""
    slab = BUILDERS[facet](metal, size=SLAB_SIZE, vacuum=VACUUM)
    z = slab.positions[:, 2]
    lower = z < 0.5 * (z.min() + z.max())
    slab.set_constraint(FixAtoms(mask=lower))
    slab.set_tags(np.where(lower, 0, 1))
    slab.pbc = True
    return slab


def place_adsorbate(slab: Atoms, spec: dict) -> Atoms:
    """``slab`` plus the adsorbate of ``spec`` (tag 2) near one of the topmost atoms,
    ``spec["height"]`` Å above the highest slab atom within 2.6 Å laterally."""
    symbols, positions = GEOMETRIES[spec["adsorbate"]]
    ads = Atoms(symbols, positions=positions)
    ads.rotate(spec["tilt"], "x")
    ads.rotate(spec["rotation"], "z")
    z = slab.positions[:, 2]
    top = np.flatnonzero(z > z.max() - 1.0)
    anchor = slab.positions[top[int(spec["anchor_draw"] * len(top))]]
    site = anchor[:2] + spec["radius"] * np.array([np.cos(spec["angle"]), np.sin(spec["angle"])])
    lateral = np.zeros((len(slab), 3))
    lateral[:, :2] = slab.positions[:, :2] - site
    lateral, _ = find_mic(lateral, slab.cell, pbc=[True, True, False])
    near = np.linalg.norm(lateral[:, :2], axis=1) < 2.6
    base = z[near].max() if near.any() else z.max()
    ads.translate([site[0], site[1], base + spec["height"]])
    system = slab.copy()
    system.extend(ads)
    system.set_tags(np.concatenate([slab.get_tags(), np.full(len(ads), 2)]))
    system.set_constraint(FixAtoms(mask=np.concatenate([slab.get_tags() == 0, np.zeros(len(ads), bool)])))
    return system


@cache
def clean_slab_energy(metal: str, facet: str, fmax: float, steps: int) -> float:
    """Energy of the relaxed clean slab."""
    return mini.relax(build_slab(metal, facet), fmax, steps)[-1][1]


def run_system(job: tuple) -> dict:
    """Build, relax and reference one system (a worker's job: ``(spec, fmax, steps)``)."""
    spec, fmax, steps = job
    system = place_adsorbate(build_slab(spec["metal"], spec["facet"]), spec)
    initial = system.copy()
    frames = mini.relax(system, fmax, steps)
    refs = mini.gas_references(fmax)
    reference = clean_slab_energy(spec["metal"], spec["facet"], fmax, steps)
    reference += sum(refs[int(z)] for z in initial.get_atomic_numbers()[initial.get_tags() == 2])
    return {"spec": spec, "initial": initial, "frames": frames, "reference": reference}


def nested_subsets(results: list, sizes: list) -> dict:
    """``{size: first train systems}``: whole systems in order until at least ``size`` frames
    (sizes larger than the training split are left out)."""
    subsets = {}
    total = sum(len(r["frames"]) for r in results)
    for size in sizes:
        if size > total:
            continue
        chosen, frames = [], 0
        for result in results:
            if frames >= size:
                break
            chosen.append(result)
            frames += len(result["frames"])
        subsets[size] = chosen
    return subsets


def generate(out: str, size: int, seed: int = 0, workers: int = 1, fmax: float = 0.05, steps: int = 100,
             val_id_fraction: float = 0.1, train_shards: int = 4, train_subsets: tuple = (),
             s2ef_every: int = 1, progress: bool = True) -> dict:
    """Generate ``size`` systems into ``out``; returns the summary also written to ``manifest.json``."""
    if size < 1:
        raise ValueError(f"--size {size}: give at least one system")
    start = time.time()
    specs = [system_spec(sid, seed, val_id_fraction) for sid in range(size)]
    jobs = [(spec, fmax, steps) for spec in specs]
    bar = dict(total=len(jobs), desc="relaxations", unit="system", disable=not progress)
    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            results = list(tqdm(pool.imap(run_system, jobs, chunksize=4), **bar))
    else:
        results = [run_system(job) for job in tqdm(jobs, **bar)]
    summary: dict = {"splits": {}, "train_subsets": {}}
    for split in SPLITS:
        chosen = [r for r in results if r["spec"]["split"] == split]
        s2ef = [rec for r in chosen for rec in mini.s2ef_records(r, s2ef_every)]
        if chosen:
            mini.write_split(os.path.join(out, "s2ef", split), s2ef, max(1, min(train_shards, len(s2ef)))
                             if split == "train" else 1)
            mini.write_split(os.path.join(out, "is2re", split), [mini.is2re_record(r) for r in chosen], 1)
        summary["splits"][split] = {"systems": len(chosen), "frames": len(s2ef)}
    train = [r for r in results if r["spec"]["split"] == "train"]
    for subset_size, chosen in nested_subsets(train, list(train_subsets)).items():
        records = [rec for r in chosen for rec in mini.s2ef_records(r, s2ef_every)]
        mini.write_split(os.path.join(out, "s2ef", f"train_{subset_size}"), records, 1)
        summary["train_subsets"][str(subset_size)] = {"systems": len(chosen), "frames": len(records)}
    summary["seconds"] = round(time.time() - start, 1)
    import ase

    manifest = {
        "generator": "scripts/make_oc20_emt.py",
        "arguments": {"size": size, "seed": seed, "fmax": fmax, "steps": steps, "val_id_fraction": val_id_fraction,
                      "s2ef_every": s2ef_every, "train_subsets": list(train_subsets)},
        "versions": {"python": platform.python_version(), "ase": ase.__version__, "numpy": np.__version__},
        "workers": workers, **summary,
        "systems": [{**r["spec"], "frames": len(r["frames"])} for r in results],
    }
    from spinconv_train.config import write_text_atomic

    os.makedirs(out, exist_ok=True)
    write_text_atomic(os.path.join(out, "manifest.json"), json.dumps(manifest, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, required=True, help="number of systems (relaxations)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--workers", type=int, default=1, help="processes (results do not depend on it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fmax", type=float, default=0.05, help="BFGS force threshold, eV/Å")
    parser.add_argument("--steps", type=int, default=100, help="BFGS step limit")
    parser.add_argument("--val-id-fraction", type=float, default=0.1)
    parser.add_argument("--train-shards", type=int, default=4, help="LMDB shards of the S2EF train split")
    parser.add_argument("--train-subsets", default="",
                        help="comma-separated frame counts, e.g. 300,1000,3000,10000: nested training subsets "
                             "of whole systems written as s2ef/train_<N>")
    parser.add_argument("--s2ef-every", type=int, default=1, help="keep every K-th frame of each relaxation")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    subsets = tuple(int(v) for v in args.train_subsets.split(",") if v.strip())
    summary = generate(args.out, args.size, args.seed, args.workers, args.fmax, args.steps, args.val_id_fraction,
                       args.train_shards, subsets, args.s2ef_every, progress=not args.no_progress)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
