"""ASE files → OC20-layout LMDBs (the library behind scripts/preprocess_*.py)."""
from __future__ import annotations

import multiprocessing as mp
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from .ase_convert import atoms_to_data, file_records, frame_results, load_refs, read_frames
from .errors import DatasetError
from .lmdb_io import LmdbWriter, save_npz_atomic
from .records import validate_structure
from .transforms import RadiusGraph


def _write_shard(job: tuple) -> List[int]:
    """Convert the files of one shard and write its LMDB; returns natoms per record."""
    shard, files, path, refs, progress, graph, with_stress, sidecars, subtract_reference = job
    transform = None if graph is None else RadiusGraph(*graph)
    natoms = []
    with LmdbWriter(path) as writer:
        for file_index, name in tqdm(files, desc=f"shard {shard}", position=shard, leave=False, disable=not progress):
            for fid, data in file_records(name, file_index, refs, stress=with_stress, sidecars=sidecars,
                                          subtract_reference=subtract_reference):
                validate_structure(data, name, fid, ("y", "force"))
                writer.append(data if transform is None else transform(data))
                natoms.append(int(data.natoms))
    return natoms


def preprocess_ef(
    inputs: Sequence[str],
    out: str,
    num_shards: int = 1,
    workers: int = 1,
    refs=None,
    progress: bool = True,
    graph: Optional[Tuple[float, int]] = None,
    stress: bool = False,
    oc20_sidecars: bool = False,
    subtract_reference: bool = False,
) -> Dict[str, int]:
    """Write S2EF shards ``out/data.XXXX.lmdb`` and ``out/metadata.npz`` from ASE files.

    ``graph=(cutoff, max_neighbors)`` also stores each record's radius graph
    (``edge_index``, ``cell_offsets``, as OC20's preprocessed files can), so that loading
    needs no graph construction; the records grow ~20x (1500 edges for a 38-atom slab).

    Every frame needs stored energy and forces (and with ``stress=True`` a stored stress,
    kept as ``stress`` (1,3,3) eV/Å^3 for training on it). ``refs``: element reference energies
    (dict or JSON path; keys symbols or Z) subtracted from ``y``. Files keep their order;
    shard ``k`` holds a contiguous block of them, written by one worker process.
    ``sid`` is the frame's ``atoms.info["sid"]`` if set, else the file's position in
    ``inputs``; ``fid`` the frame's index in its file. ``oc20_sidecars``: the inputs are OC20
    S2EF files (``N.extxyz.xz``), each with its ``N.txt.xz`` of ``random<sid>,frame<fid>,<ref>``
    rows, which then give ``sid`` and ``fid``; ``subtract_reference`` subtracts ``<ref>``
    from the energy (OC20's adsorption energies, as its released LMDBs store them).
    """
    if subtract_reference and not oc20_sidecars:
        raise DatasetError("subtract_reference needs oc20_sidecars (the reference energies are in the .txt files)")
    inputs = [str(p) for p in inputs]
    if not inputs:
        raise DatasetError("preprocess_ef needs at least one input file")
    for name in inputs:
        if not os.path.isfile(name):
            raise DatasetError("input file not found", name)
    refs = load_refs(refs)
    num_shards = max(1, min(int(num_shards), len(inputs)))
    bounds = np.linspace(0, len(inputs), num_shards + 1).astype(int)
    numbered = list(enumerate(inputs))
    os.makedirs(out, exist_ok=True)
    graph = None if graph is None else (float(graph[0]), int(graph[1]))
    jobs = [(k, numbered[bounds[k]:bounds[k + 1]], os.path.join(out, f"data.{k:04d}.lmdb"), refs, progress, graph,
             bool(stress), bool(oc20_sidecars), bool(subtract_reference)) for k in range(num_shards)]
    if workers > 1 and num_shards > 1:
        with mp.get_context().Pool(min(int(workers), num_shards)) as pool:
            per_shard = pool.map(_write_shard, jobs)
    else:
        per_shard = [_write_shard(job) for job in jobs]
    natoms = np.array([n for shard in per_shard for n in shard], dtype=np.int64)
    save_npz_atomic(os.path.join(out, "metadata.npz"), natoms=natoms)
    return {"records": int(len(natoms)), "shards": num_shards}


def _relaxed_pairs(trajectories: Sequence[str], initial: Optional[str], relaxed: Optional[str]):
    """Yield ``(source, index, initial Atoms, relaxed Atoms)``."""
    for name in trajectories:
        frames = read_frames(name)
        yield name, 0, frames[0], frames[-1]
    if (initial is None) != (relaxed is None):
        raise DatasetError("give both initial and relaxed files, or neither", initial or relaxed)
    if initial is not None:
        first, last = read_frames(initial), read_frames(relaxed)
        if len(first) != len(last):
            raise DatasetError(f"{len(first)} initial frames but {len(last)} relaxed frames in {relaxed}", initial)
        for index, (a, b) in enumerate(zip(first, last)):
            yield f"{initial} / {relaxed}", index, a, b


def preprocess_relaxed(
    out: str,
    trajectories: Sequence[str] = (),
    initial: Optional[str] = None,
    relaxed: Optional[str] = None,
    refs=None,
) -> Dict[str, int]:
    """Write an IS2RE/IS2RS ``data.lmdb`` + ``metadata.npz`` into the folder ``out``.

    Pairs come from relaxation trajectories (first frame initial, last frame relaxed)
    and/or from two files whose frames pair up in order. A record holds the initial
    structure with ``y_init``, ``y_relaxed`` (minus ``refs`` if given), ``pos_relaxed``.
    """
    refs = load_refs(refs)
    natoms = []
    with LmdbWriter(os.path.join(out, "data.lmdb")) as writer:
        for sid, (source, index, first, last) in enumerate(_relaxed_pairs(trajectories, initial, relaxed)):
            if len(first) != len(last) or (first.numbers != last.numbers).any():
                raise DatasetError("initial and relaxed structures have different atoms", source, index,
                                   "atomic_numbers")
            e_init, _ = frame_results(first, source, index, need_forces=False)
            e_relaxed, _ = frame_results(last, source, index, need_forces=False)
            data = atoms_to_data(first, sid=first.info.get("sid", sid), fid=0, source=source, index=index)
            probe = atoms_to_data(last, e_relaxed, refs=refs, source=source, index=index)
            data.y_relaxed = probe.y
            data.y_init = atoms_to_data(first, e_init, refs=refs, source=source, index=index).y
            data.pos_relaxed = probe.pos.to(torch.float32)
            validate_structure(data, source, index, ("y_init", "y_relaxed", "pos_relaxed"))
            writer.append(data)
            natoms.append(len(first))
    if not natoms:
        raise DatasetError("no input structures given", out)
    save_npz_atomic(os.path.join(out, "metadata.npz"), natoms=np.array(natoms, dtype=np.int64))
    return {"records": len(natoms)}
