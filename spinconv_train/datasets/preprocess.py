"""ASE files → OC20-layout LMDBs (the library behind scripts/preprocess_*.py).

The output folder is built as a hidden sibling (``.<name>.tmp-*``) and moved into place
when every shard and ``metadata.npz`` are written: a failed run leaves nothing, and a
folder that already holds files is refused unless ``overwrite``, which then replaces its
content as a whole (no shard of an earlier run survives beside the new ones).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from tqdm import tqdm

from spinconv_train.atomic_files import DiskFullError, exchange_paths

from .ase_convert import atoms_to_data, file_records, frame_results, load_refs, read_frames
from .errors import DatasetError
from .lmdb_dataset import METADATA_NAME, record_summary
from .lmdb_io import LmdbWriter
from .lmdb_metadata import save_metadata
from .records import validate_structure
from .transforms import RadiusGraph

# What preprocessing writes into its folder: ``overwrite`` replaces only folders of these.
OUTPUT_PATTERNS = ("*.lmdb", "*.lmdb-lock", METADATA_NAME, ".tmp-*")


def _folder_mode() -> int:
    """Mode of a new folder: 0o777 less the process umask (mkdtemp gives 0o700)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


def _swap_in(staging: str, out: str) -> None:
    """Move the finished folder ``staging`` to ``out``, replacing ``out``'s content: in one
    step where the system can exchange two paths, else by two renames."""
    if not os.path.isdir(out):
        os.rename(staging, out)
        return
    if exchange_paths(staging, out):  # ``staging`` now holds the old content
        shutil.rmtree(staging, ignore_errors=True)
        return
    old = staging + ".old"
    os.rename(out, old)
    os.rename(staging, out)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def output_folder(out: str, overwrite: bool = False) -> Iterator[str]:
    """A new hidden folder beside ``out`` to write the output to, moved to ``out`` when
    the block ends without an error and removed otherwise (``out`` is then untouched).

    ``out`` must be absent or empty unless ``overwrite``, which replaces its content
    (only a folder holding nothing but LMDB output: ``OUTPUT_PATTERNS``)."""
    import fnmatch

    out = os.path.abspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise DatasetError("the output path exists and is not a folder", out)
    held = sorted(os.listdir(out)) if os.path.isdir(out) else []
    if held and not overwrite:
        shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
        raise DatasetError(f"the output folder is not empty ({len(held)} entries: {shown}); writing into it would "
                           "mix this run's records with what is there. Choose a new folder, or pass --overwrite "
                           "to replace its content", out)
    foreign = [name for name in held if not any(fnmatch.fnmatch(name, p) for p in OUTPUT_PATTERNS)]
    if foreign:
        raise DatasetError(f"--overwrite replaces folders of LMDB output only, and this one also holds "
                           f"{', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}: choose a new folder",
                           out)
    parent = os.path.dirname(out)
    missing = parent
    while not os.path.exists(os.path.dirname(missing)):
        missing = os.path.dirname(missing)
    created = None if os.path.exists(parent) else missing
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    done = False
    try:
        os.chmod(staging, _folder_mode())
        yield staging
        _swap_in(staging, out)
        done = True
    except DiskFullError:  # named by the hidden folder's file: name the output instead
        raise DiskFullError(out) from None
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)
        if not done and created is not None:
            _remove_empty(parent, created)


def _remove_empty(folder: str, top: str) -> None:
    """Remove ``folder`` and its parents up to ``top`` while they are empty."""
    while True:
        try:
            os.rmdir(folder)
        except OSError:
            return
        if folder == top:
            return
        folder = os.path.dirname(folder)


def _write_shard(job: tuple) -> list[tuple[int, int, int]]:
    """Convert the files of one shard and write its LMDB; returns ``(natoms, z_min, z_max)``
    per record."""
    shard, files, path, refs, progress, graph, with_stress, sidecars, subtract_reference = job
    transform = None if graph is None else RadiusGraph(*graph)
    rows = []
    with LmdbWriter(path) as writer:
        for file_index, name in tqdm(files, desc=f"shard {shard}", position=shard, leave=False, disable=not progress):
            for fid, data in file_records(name, file_index, refs, stress=with_stress, sidecars=sidecars,
                                          subtract_reference=subtract_reference):
                validate_structure(data, name, fid, ("y", "force"))
                rows.append(record_summary(data))
                writer.append(data if transform is None else transform(data))
    return rows


def preprocess_ef(
    inputs: Sequence[str],
    out: str,
    num_shards: int = 1,
    workers: int = 1,
    refs=None,
    progress: bool = True,
    graph: tuple[float, int] | None = None,
    stress: bool = False,
    oc20_sidecars: bool = False,
    subtract_reference: bool = False,
    overwrite: bool = False,
) -> dict[str, int]:
    """Write S2EF shards ``out/data.XXXX.lmdb`` and ``out/metadata.npz`` from ASE files.

    ``out`` must be absent or empty; ``overwrite`` replaces the content of a folder of
    earlier output (see ``output_folder``). A shard holds whole input files, so at most
    one shard per input file is written (fewer than ``num_shards``: a warning says so).

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
    requested = int(num_shards)
    if requested < 1:
        raise DatasetError(f"num_shards must be >= 1, got {requested}", out, field="num_shards")
    num_shards = min(requested, len(inputs))
    if num_shards < requested:
        warnings.warn(f"--num-shards {requested} but {len(inputs)} input file(s): writing {num_shards} shard(s), "
                      "as a shard holds whole files (split the input into more files for more shards)",
                      UserWarning, stacklevel=2)
    bounds = np.linspace(0, len(inputs), num_shards + 1).astype(int)
    numbered = list(enumerate(inputs))
    graph = None if graph is None else (float(graph[0]), int(graph[1]))
    with output_folder(out, overwrite) as folder:
        jobs = [(k, numbered[bounds[k]:bounds[k + 1]], os.path.join(folder, f"data.{k:04d}.lmdb"), refs, progress,
                 graph, bool(stress), bool(oc20_sidecars), bool(subtract_reference)) for k in range(num_shards)]
        if workers > 1 and num_shards > 1:
            with mp.get_context().Pool(min(int(workers), num_shards)) as pool:
                per_shard = pool.map(_write_shard, jobs)
        else:
            per_shard = [_write_shard(job) for job in jobs]
        rows = np.array([row for shard in per_shard for row in shard], dtype=np.int64).reshape(-1, 3)
        save_metadata(os.path.join(folder, METADATA_NAME), rows)
    summary = {"records": int(len(rows)), "shards": num_shards}
    if num_shards < requested:
        summary["shards_requested"] = requested
    return summary


def _relaxed_pairs(trajectories: Sequence[str], initial: str | None, relaxed: str | None):
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
    initial: str | None = None,
    relaxed: str | None = None,
    refs=None,
    overwrite: bool = False,
) -> dict[str, int]:
    """Write an IS2RE/IS2RS ``data.lmdb`` + ``metadata.npz`` into the folder ``out``.

    Pairs come from relaxation trajectories (first frame initial, last frame relaxed)
    and/or from two files whose frames pair up in order. A record holds the initial
    structure with ``y_init``, ``y_relaxed`` (minus ``refs`` if given), ``pos_relaxed``.
    ``out`` must be absent or empty unless ``overwrite`` (as ``preprocess_ef``).
    """
    refs = load_refs(refs)
    rows = []
    with output_folder(out, overwrite) as folder:
        with LmdbWriter(os.path.join(folder, "data.lmdb")) as writer:
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
                rows.append(record_summary(data))
            if not rows:
                raise DatasetError("no input structures given", out)
        save_metadata(os.path.join(folder, METADATA_NAME), np.array(rows, dtype=np.int64))
    return {"records": len(rows)}
