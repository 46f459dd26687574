"""Data-loading throughput: OC20-mini S2EF records/s through a DataLoader with graph building.

One process, one thread (``num_workers=0``, ``torch.set_num_threads(1)``): each record is
read from LMDB, unpickled, normalised and validated, gets its radius graph
(``spinconv_train.graph.radius_graph`` via the ``RadiusGraph`` transform, cutoff 6 Å,
40 neighbours) and is batched. Prints one JSON line with the median over ``--runs``
passes, the same without graphs (to show where the time goes), and reading records
whose graphs were stored at preprocessing (``preprocess_ef.py --graph-cutoff``).
Target: >= 2000/s.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import torch
from torch.utils.data import DataLoader

from spinconv_train.datasets import LmdbDataset, RadiusGraph, collate
from spinconv_train.datasets.lmdb_io import write_lmdb


def records_per_second(src: str, graph: bool, batch_size: int, runs: int, cutoff: float,
                       max_neighbors: int) -> tuple:
    """``(median records/s wall, per-run wall rates, median records per CPU second, records, edges/structure)``.

    The CPU-time rate (``time.process_time``) is the robust number on a shared machine:
    it does not count time the process waited for a core.
    """
    transform = RadiusGraph(cutoff, max_neighbors) if graph else None
    ds = LmdbDataset({"src": src, "required_fields": ["y", "force"]}, transform=transform)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=collate)
    rates, cpu_rates, edges = [], [], 0
    for run in range(runs + 1):  # the first pass warms the page cache and is not counted
        start, cpu_start = time.perf_counter(), time.process_time()
        count, edges = 0, 0
        for batch in loader:
            count += int(batch.num_graphs)
            if graph:
                edges += int(batch.edge_index.shape[1])
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        if run:
            rates.append(count / elapsed)
            cpu_rates.append(count / cpu)
    return statistics.median(rates), rates, statistics.median(cpu_rates), len(ds), edges / max(len(ds), 1)


def with_stored_graphs(src: str, out: str, cutoff: float, max_neighbors: int) -> str:
    """Copy ``src`` into one LMDB at ``out`` whose records carry their radius graphs."""
    ds = LmdbDataset({"src": src})
    graph = RadiusGraph(cutoff, max_neighbors)
    write_lmdb(out, (graph(ds.raw_record(i)) for i in range(len(ds))))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", default="data/oc20_mini/s2ef/train")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cutoff", type=float, default=6.0)
    parser.add_argument("--max-neighbors", type=int, default=40)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with_graph, rates, with_graph_cpu, n, edges = records_per_second(
        args.src, True, args.batch_size, args.runs, args.cutoff, args.max_neighbors)
    read_only, _, read_only_cpu, _, _ = records_per_second(
        args.src, False, args.batch_size, args.runs, args.cutoff, args.max_neighbors)
    with tempfile.TemporaryDirectory() as tmp:
        stored = with_stored_graphs(args.src, os.path.join(tmp, "graphs.lmdb"), args.cutoff, args.max_neighbors)
        precomputed, _, precomputed_cpu, _, _ = records_per_second(
            stored, False, args.batch_size, args.runs, args.cutoff, args.max_neighbors)
    print(json.dumps({
        "src": args.src, "records": n, "batch_size": args.batch_size, "threads": 1, "num_workers": 0,
        "records_per_s": round(with_graph, 1), "runs_records_per_s": [round(r, 1) for r in rates],
        "records_per_cpu_s": round(with_graph_cpu, 1),
        "records_per_s_without_graph": round(read_only, 1),
        "records_per_cpu_s_without_graph": round(read_only_cpu, 1),
        "records_per_s_stored_graph": round(precomputed, 1),
        "records_per_cpu_s_stored_graph": round(precomputed_cpu, 1),
        "edges_per_structure": round(edges, 1), "target_records_per_s": 2000,
    }))


if __name__ == "__main__":
    main()
