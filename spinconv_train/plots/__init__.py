"""Figures of runs, predictions, relaxations and molecular dynamics (matplotlib, headless).

Each module builds a ``matplotlib.figure.Figure`` from plain arrays (``*_figure``), so tests
can inspect the series before anything is saved, and writes it as a PNG atomically
(``write_*``). matplotlib is imported, with the Agg backend, only when a figure is made.

- ``metrics_io``: the rows of a run's ``metrics.jsonl`` / ``metrics.csv``
- ``learning_curves``: train loss and validation MAEs against step, epoch and wall time
- ``parity``: predicted against reference energies and forces, MAE in the legend
- ``relaxation``: energy against optimiser step, one line per structure
- ``md``: conserved energy and temperature against MD step
"""
