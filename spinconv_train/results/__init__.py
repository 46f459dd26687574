"""Reproducible result suites (``scripts/reproduce.py``): named sets of training runs
(``suites``), run locally under a CPU budget or submitted to SLURM (``execute``), their
metrics gathered (``collect``) and written up as ``results/<suite>.md`` with plots (``report``)."""
