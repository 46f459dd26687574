"""Generate OC20-mini: the OC20 S2EF / IS2RE / IS2RS pipeline in miniature with ASE's EMT.

fcc(111)/(100) 3x3x4 slabs of Cu, Ag, Au, Ni, Pd, Pt (bottom two layers fixed) with one
adsorbate (H, O, N, C, OH, CO, CH, NH, NO, CH2) at a random site, relaxed with BFGS;
every frame's energy and forces are recorded. Energies are adsorption energies:
E(slab+ads) - E(clean relaxed slab) - sum of gas references (H: H2/2, O: H2O - H2,
N: N2/2, C: CO - (H2O - H2)), all computed with EMT.

Splits are by system: ``val_ood`` holds every Au system and every NO system (an unseen
metal and an unseen adsorbate), the rest go to ``train`` / ``val_id`` by a seeded draw.
Output layout::

    OUT/s2ef/{train,val_id,val_ood}/*.lmdb + metadata.npz   (every K-th frame; K=1: all)
    OUT/is2re/{train,val_id,val_ood}/data.lmdb + metadata.npz (y_init, y_relaxed, pos_relaxed: IS2RE and IS2RS)

Deterministic for a seed (single-threaded numpy; one process per system). For larger data
(more metals, facets and adsorbates, OC20's four validation splits) see ``make_oc20_emt.py``.
EMT is a fitted potential that is reasonable for these metals and crude for H/C/N/O.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
from functools import cache  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.build import add_adsorbate, fcc100, fcc111, molecule  # noqa: E402
from ase.calculators.emt import EMT  # noqa: E402
from ase.constraints import FixAtoms  # noqa: E402
from ase.optimize import BFGS  # noqa: E402
from tqdm import tqdm  # noqa: E402

from spinconv_train.datasets.ase_convert import atoms_to_data  # noqa: E402
from spinconv_train.datasets.lmdb_io import LmdbWriter, save_npz_atomic  # noqa: E402

METALS = ("Cu", "Ag", "Au", "Ni", "Pd", "Pt")
FACETS = ("111", "100")
ADSORBATES = ("H", "O", "N", "C", "OH", "CO", "CH", "NH", "NO", "CH2")
SITES = {"111": ("ontop", "bridge", "fcc", "hcp"), "100": ("ontop", "bridge", "hollow")}
OOD_METAL, OOD_ADSORBATE = "Au", "NO"
SPLITS = ("train", "val_id", "val_ood")
VAL_ID_FRACTION = 0.2
VACUUM = 7.5  # Å on each side of the slab


# Binding atom first, at the origin; the rest above it (Å).
ADSORBATE_GEOMETRIES = {
    "H": ("H", [(0, 0, 0)]),
    "O": ("O", [(0, 0, 0)]),
    "N": ("N", [(0, 0, 0)]),
    "C": ("C", [(0, 0, 0)]),
    "OH": ("OH", [(0, 0, 0), (0, 0, 0.97)]),
    "CO": ("CO", [(0, 0, 0), (0, 0, 1.15)]),
    "CH": ("CH", [(0, 0, 0), (0, 0, 1.09)]),
    "NH": ("NH", [(0, 0, 0), (0, 0, 1.03)]),
    "NO": ("NO", [(0, 0, 0), (0, 0, 1.16)]),
    "CH2": ("CH2", [(0, 0, 0), (0.89, 0, 0.63), (-0.89, 0, 0.63)]),
}


def adsorbate_atoms(name: str) -> Atoms:
    """The adsorbate with its binding atom at the origin, pointing up (+z)."""
    symbols, positions = ADSORBATE_GEOMETRIES[name]
    return Atoms(symbols, positions=positions)


def system_specs(num_systems: int, seed: int) -> list[dict]:
    """The seeded list of systems: metal, facet, adsorbate, site, offsets, split."""
    rng = np.random.default_rng(seed)
    specs = []
    for sid in range(num_systems):
        metal = METALS[rng.integers(len(METALS))]
        facet = FACETS[rng.integers(len(FACETS))]
        ads = ADSORBATES[rng.integers(len(ADSORBATES))]
        site = SITES[facet][rng.integers(len(SITES[facet]))]
        spec = {
            "sid": sid, "metal": metal, "facet": facet, "adsorbate": ads, "site": site,
            "height": float(rng.uniform(1.4, 2.2)),
            "offset": [float(v) for v in rng.uniform(-0.25, 0.25, size=2)],
            "rotation": float(rng.uniform(0.0, 360.0)),
            "tilt": float(rng.uniform(0.0, 25.0)),
            "id_draw": float(rng.uniform()),
        }
        if metal == OOD_METAL or ads == OOD_ADSORBATE:
            spec["split"] = "val_ood"
        else:
            spec["split"] = "val_id" if spec["id_draw"] < VAL_ID_FRACTION else "train"
        specs.append(spec)
    return specs


def build_slab(metal: str, facet: str) -> Atoms:
    """A 3x3x4 slab, periodic in all directions (OC20 convention), bottom 2 layers fixed.

    Tags follow OC20: 0 subsurface (ASE layers 3, 4: fixed), 1 surface (layers 1, 2).
    """
    builder = fcc111 if facet == "111" else fcc100
    slab = builder(metal, size=(3, 3, 4), vacuum=VACUUM)
    layer = slab.get_tags()  # ASE: 1 = top layer ... 4 = bottom
    slab.set_constraint(FixAtoms(mask=layer >= 3))
    slab.set_tags(np.where(layer >= 3, 0, 1))
    slab.pbc = True
    return slab


def relax(atoms: Atoms, fmax: float, steps: int) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """BFGS-relax ``atoms`` with EMT; returns every frame's (positions, energy, raw forces)."""
    atoms.calc = EMT()
    frames = []

    def record() -> None:
        frames.append((atoms.get_positions().copy(), float(atoms.get_potential_energy()),
                       atoms.get_forces(apply_constraint=False).copy()))

    opt = BFGS(atoms, logfile=None)
    opt.attach(record, interval=1)
    opt.run(fmax=fmax, steps=steps)
    return frames


@cache
def clean_slab_energy(metal: str, facet: str, fmax: float, steps: int) -> float:
    """Energy of the relaxed clean slab."""
    return relax(build_slab(metal, facet), fmax, steps)[-1][1]


@cache
def gas_references(fmax: float) -> dict[int, float]:
    """Per-element gas-phase references from relaxed EMT molecules (H2, H2O, N2, CO)."""
    energy = {}
    for name in ("H2", "H2O", "N2", "CO"):
        mol = molecule(name)
        mol.center(vacuum=5.0)
        energy[name] = relax(mol, fmax / 5, 200)[-1][1]
    e_h = 0.5 * energy["H2"]
    e_o = energy["H2O"] - energy["H2"]
    return {1: e_h, 8: e_o, 7: 0.5 * energy["N2"], 6: energy["CO"] - e_o}


def run_system(args: tuple[dict, float, int]) -> dict:
    """Build, relax and reference one system; returns its frames and metadata."""
    spec, fmax, steps = args
    slab = build_slab(spec["metal"], spec["facet"])
    ads = adsorbate_atoms(spec["adsorbate"])
    ads.rotate(spec["tilt"], "x")
    ads.rotate(spec["rotation"], "z")
    add_adsorbate(slab, ads, spec["height"], position=spec["site"], offset=tuple(spec["offset"]))
    tags = slab.get_tags()
    tags[-len(ads):] = 2
    slab.set_tags(tags)
    initial = slab.copy()
    frames = relax(slab, fmax, steps)
    refs = gas_references(fmax)
    reference = clean_slab_energy(spec["metal"], spec["facet"], fmax, steps)
    reference += sum(refs[int(z)] for z in ads.get_atomic_numbers())
    return {"spec": spec, "initial": initial, "frames": frames, "reference": reference}


def s2ef_records(result: dict, every: int = 1) -> list:
    """One S2EF record per ``every``-th frame of a relaxation (``fid`` = frame number)."""
    atoms = result["initial"].copy()
    records = []
    for fid, (pos, energy, forces) in enumerate(result["frames"]):
        if fid % every:
            continue
        atoms.set_positions(pos)
        records.append(atoms_to_data(atoms, energy - result["reference"], forces,
                                     sid=result["spec"]["sid"], fid=fid))
    return records


def is2re_record(result: dict):
    """One IS2RE/IS2RS record: initial structure, initial and relaxed energy, relaxed positions."""
    frames = result["frames"]
    data = atoms_to_data(result["initial"], sid=result["spec"]["sid"], fid=0)
    data.y_init = frames[0][1] - result["reference"]
    data.y_relaxed = frames[-1][1] - result["reference"]
    data.pos_relaxed = torch.tensor(frames[-1][0], dtype=torch.float32)
    return data


def write_split(folder: str, records: list, shards: int) -> None:
    """Write ``records`` into ``shards`` LMDB files plus ``metadata.npz`` (natoms per record)."""
    os.makedirs(folder, exist_ok=True)
    bounds = np.linspace(0, len(records), shards + 1).astype(int)
    for k in range(shards):
        name = "data.lmdb" if shards == 1 else f"data.{k:04d}.lmdb"
        with LmdbWriter(os.path.join(folder, name)) as writer:
            writer.extend(records[bounds[k]:bounds[k + 1]])
    natoms = np.array([int(r.natoms) for r in records], dtype=np.int64)
    save_npz_atomic(os.path.join(folder, "metadata.npz"), natoms=natoms)


def generate(out: str, num_systems: int = 40, seed: int = 0, fmax: float = 0.05, steps: int = 100,
             workers: int = 1, train_shards: int = 2, max_systems: int = 0, s2ef_every: int = 1) -> dict:
    """Generate OC20-mini into ``out``; returns a summary (systems and frames per split)."""
    specs = system_specs(num_systems, seed)
    if max_systems:
        specs = specs[:max_systems]
    jobs = [(spec, fmax, steps) for spec in specs]
    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            results = list(tqdm(pool.imap(run_system, jobs), total=len(jobs), desc="relaxations"))
    else:
        results = [run_system(job) for job in tqdm(jobs, desc="relaxations")]
    summary = {}
    for split in SPLITS:
        chosen = [r for r in results if r["spec"]["split"] == split]
        s2ef = [rec for r in chosen for rec in s2ef_records(r, s2ef_every)]
        is2re = [is2re_record(r) for r in chosen]
        write_split(os.path.join(out, "s2ef", split), s2ef, train_shards if split == "train" else 1)
        write_split(os.path.join(out, "is2re", split), is2re, 1)
        summary[split] = {"systems": len(chosen), "frames": len(s2ef)}
    return summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="data/oc20_mini", help="output folder")
    parser.add_argument("--num-systems", type=int, default=40, help="systems drawn (before --max-systems)")
    parser.add_argument("--max-systems", type=int, default=0, help="only the first N systems (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fmax", type=float, default=0.05, help="BFGS force threshold, eV/Å")
    parser.add_argument("--steps", type=int, default=100, help="BFGS step limit")
    parser.add_argument("--s2ef-every", type=int, default=1,
                        help="keep every K-th frame of each relaxation in S2EF (1: all frames)")
    parser.add_argument("--workers", type=int, default=1, help="processes (results do not depend on it)")
    parser.add_argument("--train-shards", type=int, default=2, help="LMDB shards for the S2EF train split")
    args = parser.parse_args(argv)
    summary = generate(args.out, args.num_systems, args.seed, args.fmax, args.steps, args.workers,
                       args.train_shards, args.max_systems, args.s2ef_every)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
