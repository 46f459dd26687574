#!/usr/bin/env python
"""``spinconv-inspect`` (``spinconv_train/commands/inspect_checkpoint.py``) run from a checkout; see ``spinconv-inspect --help``."""
import sys

from spinconv_train.commands.inspect_checkpoint import main, parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
