"""Command-line entry point: ``python main.py --mode train --config-yml configs/...yml``."""
import sys

from spinconv_train.cli import main

if __name__ == "__main__":
    sys.exit(main())
