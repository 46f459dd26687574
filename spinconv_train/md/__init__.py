"""Molecular dynamics with a trained force model (``spinconv-md``): ASE integrators, a log
of energies, temperature, pressure and committee spread."""
from .dynamics import MDLog, md_caveats, run_md

__all__ = ["MDLog", "md_caveats", "run_md"]
