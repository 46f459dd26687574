#!/usr/bin/env python
"""``spinconv-evaluate`` (``spinconv_train/commands/evaluate_structures.py``) run from a checkout; see ``spinconv-evaluate --help``."""
import sys

from spinconv_train.commands.evaluate_structures import main, parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
