#!/usr/bin/env python
"""``spinconv-preprocess-ef`` (``spinconv_train/commands/preprocess_ef.py``) run from a checkout; see ``spinconv-preprocess-ef --help``."""
import sys

from spinconv_train.commands.preprocess_ef import main, parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
