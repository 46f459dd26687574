"""The command line (``main.py`` / ``spinconv-train``), sweeps, SLURM submission."""
