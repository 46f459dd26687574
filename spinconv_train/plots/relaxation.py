"""Relaxation traces: energy against optimiser step, one line per structure, relative to
each structure's initial energy (so many structures share one axes)."""
from __future__ import annotations

import glob
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from spinconv_train.plots.figure import new_figure, save_png

logger = logging.getLogger(__name__)

FILE_NAME = "relaxation_energies.png"
MAX_LEGEND = 12


def relaxation_figure(traces: Mapping[str, Sequence[float]]) -> Any:
    """One line per structure: E(step) - E(0) in eV against step (legend up to ``MAX_LEGEND``)."""
    if not traces:
        raise ValueError("no relaxation traces to plot")
    fig = new_figure(1, 1, width=6.0, height=4.0)
    ax = fig.axes[0]
    for name, energies in traces.items():
        ax.plot(range(len(energies)), [e - energies[0] for e in energies], label=name)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("E - E(initial) (eV)")
    ax.set_title(f"{len(traces)} relaxations")
    ax.grid(True, alpha=0.3)
    if len(traces) <= MAX_LEGEND:
        ax.legend(fontsize="small")
    return fig


def trajectory_energies(trajectory_dir: str) -> dict[str, list[float]]:
    """``{name: energies}`` of every ``*.traj`` in ``trajectory_dir`` (name: the file name
    without ``.traj``), sorted by name; frames without an energy are an error."""
    from ase.io import read

    traces: dict[str, list[float]] = {}
    for path in sorted(glob.glob(os.path.join(trajectory_dir, "*.traj"))):
        energies = []
        for k, atoms in enumerate(read(path, index=":")):
            if atoms.calc is None or "energy" not in atoms.calc.results:
                raise ValueError(f"{path}, frame {k}: no energy stored")
            energies.append(float(atoms.calc.results["energy"]))
        traces[os.path.basename(path)[:-len(".traj")]] = energies
    return traces


def result_energies(results: Sequence[Any]) -> dict[str, list[float]]:
    """``{name: energies}`` of relaxation results (``RelaxResult``: ``sid``, ``index``,
    ``energies``); the name is the sid, with the dataset index when sids repeat."""
    sids = [str(r.sid) for r in results]
    return {(sid if sids.count(sid) == 1 else f"{sid} (#{r.index})"): list(r.energies)
            for sid, r in zip(sids, results) if r.energies}


def write_relaxation_plot(run_dir: str, results: Sequence[Any]) -> str | None:
    """Write ``run_dir/relaxation_energies.png`` (energy against step of every relaxation in
    ``results``); ``None`` (nothing written) when no result recorded its energies."""
    traces = result_energies(results)
    if not traces:
        logger.info("no relaxation energies recorded: %s not written", FILE_NAME)
        return None
    return save_png(relaxation_figure(traces), os.path.join(run_dir, FILE_NAME))
