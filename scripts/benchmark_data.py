"""Data-loading throughput: OC20-mini S2EF records/s through a DataLoader with graph building.

One process, one thread (``num_workers=0``, ``torch.set_num_threads(1)``, vesin on one
thread): each record is read from LMDB, unpickled, normalised and validated, gets its
radius graph (``RadiusGraph`` transform, cutoff 6 Å, 40 neighbours: built anew for every
record on every pass, nothing cached) and is batched by ``collate``. The DataLoader asks
the dataset for a batch's records at once (``LmdbDataset.__getitems__``), so the
transform builds the batch's graphs in one numpy pass (``RadiusGraph.apply_many``).

Prints one JSON line: the median over ``--runs`` passes (wall clock, and per CPU second,
which does not count time spent waiting for a core on a shared machine), then the same
pipeline fetching records one by one (``dataset[i]``, one graph per call), without
graphs (to show where the time goes), and reading graphs stored at preprocessing
(``preprocess_ef.py --graph-cutoff``). Target: >= 2000 records/s.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import torch
from torch.utils.data import DataLoader, Dataset

from spinconv_train.datasets import LmdbDataset, RadiusGraph, collate
from spinconv_train.datasets.lmdb_io import write_lmdb


class OneByOne(Dataset):
    """The dataset without ``__getitems__``: the DataLoader then calls ``dataset[i]``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset[index]


def make_loader(src: str, graph: bool, batch_size: int, cutoff: float, max_neighbors: int,
                one_by_one: bool = False) -> DataLoader:
    """The benchmarked DataLoader over ``src`` (S2EF fields required and validated)."""
    transform = RadiusGraph(cutoff, max_neighbors) if graph else None
    ds = LmdbDataset({"src": src, "required_fields": ["y", "force"]}, transform=transform)
    return DataLoader(OneByOne(ds) if one_by_one else ds, batch_size=batch_size, shuffle=False,
                      num_workers=0, collate_fn=collate)


def records_per_second(loaders: dict, runs: int) -> dict:
    """For each named loader: median records/s (wall and per CPU second) over ``runs``
    passes, the per-pass wall rates, the record count and the mean edges per structure.

    The loaders take turns, one pass each per round, so that a change in the load of a
    shared machine touches them alike; a first round warms the page cache, uncounted.
    """
    stats = {name: {"runs": [], "cpu_runs": [], "records": 0, "edges": 0.0} for name in loaders}
    for run in range(runs + 1):
        for name, loader in loaders.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            count, edges = 0, 0
            for batch in loader:
                count += int(batch.num_graphs)
                if "edge_index" in batch:
                    edges += int(batch.edge_index.shape[1])
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            if run:
                stats[name]["runs"].append(count / elapsed)
                stats[name]["cpu_runs"].append(count / cpu)
            stats[name]["records"], stats[name]["edges"] = count, edges / max(count, 1)
    for entry in stats.values():
        entry["wall"] = statistics.median(entry["runs"])
        entry["cpu"] = statistics.median(entry.pop("cpu_runs"))
    return stats


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
    torch.set_num_threads(1)  # also sets vesin's threads (spinconv_train.graph follows torch)
    common = (args.batch_size, args.cutoff, args.max_neighbors)
    with tempfile.TemporaryDirectory() as tmp:
        stored = with_stored_graphs(args.src, os.path.join(tmp, "graphs.lmdb"), args.cutoff, args.max_neighbors)
        stats = records_per_second({
            "graph": make_loader(args.src, True, *common),
            "one_by_one": make_loader(args.src, True, *common, one_by_one=True),
            "no_graph": make_loader(args.src, False, *common),
            "stored_graph": make_loader(stored, False, *common),
        }, args.runs)
    with_graph, one_by_one = stats["graph"], stats["one_by_one"]
    read_only, precomputed = stats["no_graph"], stats["stored_graph"]
    print(json.dumps({
        "src": args.src, "records": with_graph["records"], "batch_size": args.batch_size, "threads": 1,
        "num_workers": 0,
        "records_per_s": round(with_graph["wall"], 1),
        "runs_records_per_s": [round(r, 1) for r in with_graph["runs"]],
        "records_per_cpu_s": round(with_graph["cpu"], 1),
        "records_per_s_one_by_one": round(one_by_one["wall"], 1),
        "records_per_cpu_s_one_by_one": round(one_by_one["cpu"], 1),
        "records_per_s_without_graph": round(read_only["wall"], 1),
        "records_per_cpu_s_without_graph": round(read_only["cpu"], 1),
        "records_per_s_stored_graph": round(precomputed["wall"], 1),
        "records_per_cpu_s_stored_graph": round(precomputed["cpu"], 1),
        "edges_per_structure": round(with_graph["edges"], 1), "target_records_per_s": 2000,
    }))


if __name__ == "__main__":
    main()
