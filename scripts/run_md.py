#!/usr/bin/env python
"""``spinconv-md`` (``spinconv_train/commands/run_md.py``) run from a checkout; see ``spinconv-md --help``."""
import sys

from spinconv_train.commands.run_md import main, parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
