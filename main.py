"""Command-line entry point: ``python main.py --mode train --config-yml configs/...yml``."""
import os
import sys

# Idle OpenMP threads sleep instead of spinning (unless the user chose otherwise): on a
# shared or oversubscribed machine, spinning threads made 2-thread steps many times slower
# (docs/benchmarks.md, "OpenMP"). Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from spinconv_train.launch.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
