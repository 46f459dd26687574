#!/usr/bin/env python
"""``spinconv-export`` (``spinconv_train/commands/export_model.py``) run from a checkout; see ``spinconv-export --help``."""
import sys

from spinconv_train.commands.export_model import main, parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
