"""Write ``results/<suite>.md``: what was run (commands, versions, hardware, budgets), a
table of the reported metric per model, training size and split (mean and range over
seeds), plots, and the rankings and crossings the numbers show."""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from spinconv_train.config import write_text_atomic
from spinconv_train.plots.figure import new_figure, save_png
from spinconv_train.plots.learning_curves import learning_curve_figure
from spinconv_train.plots.metrics_io import read_metrics
from spinconv_train.results.collect import RunResult
from spinconv_train.results.environment import environment
from spinconv_train.results.suites import Suite

Key = tuple[str, "int | None"]  # (group, training size)


def parallel_note(results: Sequence[RunResult]) -> str:
    """How many runs of the suite ran at a time, as the runs' statuses recorded it."""
    counts = sorted({r.parallel_runs for r in results if r.parallel_runs is not None})
    missing = sum(r.parallel_runs is None and r.ended != "not run" for r in results)
    parts = [" or ".join(map(str, counts))] if counts else []
    if missing:
        parts.append(f"not recorded for {missing} run(s)")
    return ("Runs of this suite at a time: " + "; ".join(parts) + ".") if parts else ""


def environment_lines(results: Sequence[RunResult], cwd: str) -> list[str]:
    """The environment the runs recorded when they trained (every distinct value of each
    key), or this machine's, marked as such, for runs that recorded none."""
    recorded = [r.environment for r in results if r.environment]
    lines = []
    if recorded:
        lines.append("Recorded by the runs when they trained:")
        keys = list(dict.fromkeys(key for env in recorded for key in env))
        for key in keys:
            values = list(dict.fromkeys(env.get(key, "not recorded") for env in recorded))
            lines.append(f"- {key}: {' / '.join(values)}")
    unrecorded = sum(r.environment is None and r.ended != "not run" for r in results)
    if unrecorded or not recorded:
        if recorded:
            lines.append("")
        lines.append(f"This machine, writing the report ({unrecorded} run(s) recorded no environment):"
                     if unrecorded else "This machine, writing the report:")
        lines += [f"- {key}: {value}" for key, value in environment(cwd).items()]
    return lines


def aggregate(results: Sequence[RunResult], splits: Sequence[str]) -> dict[Key, dict[str, Any]]:
    """Per (group, training size): ``{split: [values over seeds]}`` and ``"cpu_s": [...]``,
    in the order the runs are listed."""
    table: dict[Key, dict[str, Any]] = {}
    for result in results:
        entry = table.setdefault((result.spec.group, result.spec.train_size), {"cpu_s": [], "ended": []})
        entry["cpu_s"].append(result.cpu_s)
        entry["ended"].append(result.ended)
        for split in splits:
            entry.setdefault(split, []).append(result.metrics.get(split, math.nan))
    return table


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _cell(values: Sequence[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "–"
    if len(finite) == 1:
        return f"{finite[0]:.4f}"
    return f"{_mean(finite):.4f} ({min(finite):.4f}–{max(finite):.4f})"


def metric_table(suite: Suite, table: dict[Key, dict[str, Any]]) -> str:
    """The Markdown table: one row per (model, training size)."""
    sized = any(size is not None for _, size in table)
    head = ["model", *(["train frames"] if sized else []), *suite.splits, "CPU s (mean)", "ended"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (group, size), entry in table.items():
        cpu = _mean(entry["cpu_s"])
        ended = ", ".join(sorted(set(entry["ended"])))
        cells = [group, *([str(size)] if sized else []), *(_cell(entry[s]) for s in suite.splits),
                 "–" if math.isnan(cpu) else f"{cpu:.0f}", ended]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def size_figure(suite: Suite, table: dict[Key, dict[str, Any]]) -> Any:
    """One axes per split: the metric (mean over seeds, bars: range) against training size, one line per model."""
    fig = new_figure(1, len(suite.splits), width=4.2, height=3.6)
    groups = list(dict.fromkeys(group for group, _ in table))
    for ax, split in zip(fig.axes, suite.splits):
        for group in groups:
            xs, ys, low, high = [], [], [], []
            for (g, size), entry in sorted(table.items(), key=lambda item: item[0][1] or 0):
                finite = [v for v in entry[split] if math.isfinite(v)]
                if g != group or not size or not finite:
                    continue
                mean = sum(finite) / len(finite)
                xs.append(size)
                ys.append(mean)
                low.append(mean - min(finite))
                high.append(max(finite) - mean)
            if xs:
                ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, label=group)
        ax.set_xscale("log")
        ax.set_xlabel("training frames")
        ax.set_ylabel(f"{suite.metric} ({suite.unit})")
        ax.set_title(split)
        ax.grid(True, alpha=0.3)
    fig.axes[0].legend(fontsize="small")
    return fig


def cpu_figure(suite: Suite, results: Sequence[RunResult]) -> Any:
    """The metric on the first split against each run's CPU seconds, one marker series per model."""
    fig = new_figure(1, 1, width=5.5, height=4.0)
    ax = fig.axes[0]
    split = suite.splits[0]
    seconds = []
    for group in dict.fromkeys(r.spec.group for r in results):
        points = [(r.cpu_s, r.metrics[split]) for r in results
                  if r.spec.group == group and split in r.metrics and math.isfinite(r.cpu_s)]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], "o", label=group)
            seconds += [p[0] for p in points]
    if seconds and min(seconds) > 0 and max(seconds) > 10 * min(seconds):
        ax.set_xscale("log")
    ax.set_xlabel("training CPU seconds")
    ax.set_ylabel(f"{split} {suite.metric} ({suite.unit})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def findings(suite: Suite, table: dict[Key, dict[str, Any]]) -> list[str]:
    """Plain statements the numbers support: the ranking per split and size, and where two
    models' mean curves cross as the training set grows."""
    lines = []
    sizes = sorted({size for _, size in table if size is not None}) or [None]
    groups = list(dict.fromkeys(group for group, _ in table))
    for split in suite.splits:
        for size in sizes:
            ranked = sorted(((_mean(table[(g, size)][split]), g) for g in groups if (g, size) in table),
                            key=lambda item: item[0])
            ranked = [(v, g) for v, g in ranked if math.isfinite(v)]
            if ranked:
                where = f" at {size} frames" if size is not None else ""
                lines.append(f"{split}{where}: " + " < ".join(f"{g} {v:.4f}" for v, g in ranked))
        if len(sizes) > 1:
            for i, a in enumerate(groups):
                for b in groups[i + 1:]:
                    diffs = [(size, _mean(table[(a, size)][split]) - _mean(table[(b, size)][split]))
                             for size in sizes if (a, size) in table and (b, size) in table]
                    diffs = [(s, d) for s, d in diffs if math.isfinite(d)]
                    for (s0, d0), (s1, d1) in zip(diffs, diffs[1:]):
                        if d0 * d1 < 0:
                            better = a if d1 < 0 else b
                            lines.append(f"{split}: {a} and {b} cross between {s0} and {s1} frames "
                                         f"({better} better at {s1})")
    return lines


READING_FILE = "reading.md"


def reading_section(path: str) -> list[str]:
    """The hand-written interpretation kept in ``results/<suite>/reading.md``, if there is one.

    The generated parts of a report are rewritten on every collect; what a person wrote about
    them lives in its own file so that collecting again never erases it.
    """
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        text = handle.read().strip()
    return ["", "## Reading", "", f"(Written by hand after the runs; from `{os.path.basename(path)}`.)", "", text] if text else []


def write_report(suite: Suite, results: Sequence[RunResult], root: str, out_dir: str, commands: Sequence[str],
                 cwd: str, budget_note: str) -> str:
    """Write ``out_dir/<suite>.md`` and its plots in ``out_dir/<suite>/``; return the Markdown path."""
    figures = os.path.join(out_dir, suite.name)
    table = aggregate(results, suite.splits)
    parts = [f"# {suite.name}", "", suite.description, ""]
    parts += ["## What the numbers show", "",
              f"Metric: `{suite.metric}` ({suite.unit}, lower is better) of each run's best checkpoint "
              "(lowest val), mean over seeds with the range in brackets.", ""]
    parts += [f"- {line}" for line in findings(suite, table)] or ["- no finished runs yet"]
    stopped = sum(r.ended == "budget" for r in results)
    if stopped:
        parts += ["", f"{stopped} of {len(results)} runs were stopped by their CPU budget before early stopping: "
                  "their numbers are what that budget buys, not converged values."]
    parts += reading_section(os.path.join(figures, READING_FILE))
    parts += ["", "## Results", "", metric_table(suite, table), ""]
    if any(r.spec.train_size for r in results) and len({r.spec.train_size for r in results}) > 1:
        parts += [f"![metric against training size]({suite.name}/size_curves.png)", ""]
        save_png(size_figure(suite, table), os.path.join(figures, "size_curves.png"))
    if any(math.isfinite(r.cpu_s) and suite.splits[0] in r.metrics for r in results):
        parts += [f"![metric against CPU time]({suite.name}/cpu_time.png)", ""]
        save_png(cpu_figure(suite, results), os.path.join(figures, "cpu_time.png"))
    for size in dict.fromkeys(r.spec.train_size for r in results):
        runs = {r.spec.name: read_metrics(os.path.join(root, r.spec.name)) for r in results
                if r.spec.train_size == size and os.path.exists(os.path.join(root, r.spec.name, "metrics.jsonl"))}
        runs = {name: rows for name, rows in runs.items() if rows}
        if runs:
            name = "learning_curves.png" if size is None else f"learning_curves_n{size}.png"
            try:
                save_png(learning_curve_figure(runs), os.path.join(figures, name))
            except ValueError:
                continue
            parts += [f"![learning curves{'' if size is None else f', {size} frames'}]({suite.name}/{name})", ""]
    if suite.notes:
        parts += ["## Notes", "", *[f"- {note}" for note in suite.notes], ""]
    parts += ["## How it was run", "", f"{budget_note} {parallel_note(results)}", "", "```", *commands, "```", "",
              "## Environment", ""]
    parts += environment_lines(results, cwd)
    path = os.path.join(out_dir, f"{suite.name}.md")
    write_text_atomic(path, "\n".join(parts) + "\n")
    return path
