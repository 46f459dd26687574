#!/usr/bin/env python
"""``spinconv-preprocess-relaxed`` (``spinconv_train/commands/preprocess_relaxed.py``) run from a checkout; see ``spinconv-preprocess-relaxed --help``."""
import sys

from spinconv_train.commands.preprocess_relaxed import main, parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
