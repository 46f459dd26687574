#!/usr/bin/env python
"""``spinconv-lmdb-metadata`` (``spinconv_train/commands/write_lmdb_metadata.py``) run from a checkout; see ``spinconv-lmdb-metadata --help``."""
import sys

from spinconv_train.commands.write_lmdb_metadata import main, parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
