"""Import a checkpoint written by OCP's trainer as this project's exported model.

    spinconv-import-ocp CHECKPOINT --out model.pt
    spinconv-import-ocp spinconv_force_centric_2M --out spinconv_2M.pt     # a released model
    spinconv-import-ocp https://.../checkpoint.pt --out model.pt

CHECKPOINT is a file, the name of a released OCP SpinConv checkpoint
(``spinconv_force_centric_2M``, ``spinconv_force_centric_all``) or a URL; names and URLs are
downloaded once into the cache (``--cache-dir``, default ``$SPINCONV_CACHE`` or
``~/.cache/spinconv_train``) with a progress bar and a SHA-256 checksum. The result works
wherever an exported model does (``main.py --mode validate|predict|run-relaxations
--checkpoint``, ``spinconv-evaluate``, ``ModelCalculator``, ``spinconv-md``,
``finetune.checkpoint``). Imported SpinConv models use the reference's edge frames
(``model.frame: reference``); see docs/ocp.md. Prints one JSON line.
"""
from __future__ import annotations

import argparse
import sys

from spinconv_train.commands import report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="OCP checkpoint file, released model name or URL")
    p.add_argument("--out", required=True, help="exported model to write (refused if it exists, unless --overwrite)")
    p.add_argument("--weights", choices=("auto", "ema", "model"), default="auto",
                   help="auto: the EMA weights when the checkpoint has them (as OCP validated with); "
                        "ema: require them; model: the raw weights")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--cache-dir", help="where downloads are kept (default $SPINCONV_CACHE or ~/.cache/spinconv_train)")
    p.add_argument("--sha256", help="expected SHA-256 of the downloaded file")
    p.add_argument("--no-progress", action="store_true", help="no download progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from spinconv_train.ocp.checkpoint_import import OcpImportError, import_ocp_checkpoint
    from spinconv_train.ocp.released import DownloadError, resolve

    def run() -> dict:
        path = resolve(args.checkpoint, args.cache_dir, args.sha256, progress=not args.no_progress)
        return import_ocp_checkpoint(path, args.out, weights=args.weights, overwrite=args.overwrite)

    return report(run, (OcpImportError, DownloadError))


if __name__ == "__main__":
    sys.exit(main())
