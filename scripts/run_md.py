#!/usr/bin/env python
"""``spinconv-md`` (``spinconv_train/commands/run_md.py``) run from a checkout; see ``spinconv-md --help``."""
import sys

from spinconv_train.commands.run_md import main, parse_args  # noqa: F401 (parse_args: used by tests)

if __name__ == "__main__":
    sys.exit(main())
