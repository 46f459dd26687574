#!/usr/bin/env python
"""``spinconv-plot`` (``spinconv_train/commands/plot.py``) run from a checkout; see ``spinconv-plot --help``."""
import sys

from spinconv_train.commands.plot import main, parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
