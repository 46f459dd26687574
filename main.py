"""Command-line entry point: ``python main.py --mode train --config-yml configs/...yml``
(the same as the ``spinconv-train`` command)."""
import sys

from spinconv_train.launch.entry import main

if __name__ == "__main__":
    sys.exit(main())
