#!/usr/bin/env python
"""``spinconv-import-ocp`` (``spinconv_train/commands/import_ocp.py``) run from a checkout; see its ``--help``."""
import sys

from spinconv_train.commands.import_ocp import main, parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
