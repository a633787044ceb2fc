"""Data command line: build caches and print summaries.

python -m gaga.data build qm9 [--data-dir data]
python -m gaga.data build drugs --source PATH [--data-dir data]
python -m gaga.data summary qm9|drugs [--data-dir data] [--remove-h]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from gaga.config import DATA_DIR
from gaga.data.sources import source_for


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gaga.data", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["build", "summary"])
    parser.add_argument("dataset", choices=["qm9", "drugs"])
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="where caches live")
    parser.add_argument("--source", type=Path, default=None, help="GEOM-Drugs files as downloaded (drugs only)")
    parser.add_argument("--remove-h", action="store_true", help="summary without hydrogens")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    source = source_for(args.dataset, args.data_dir, **({"source_dir": args.source} if args.source else {}))
    try:
        if args.action == "build":
            start = time.perf_counter()
            path = source.build()
            print(f"built {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s")
        else:
            from gaga.data.datamodule import MoleculeDataModule
            from gaga.data.summary import data_summary

            print(data_summary(MoleculeDataModule(source, remove_h=args.remove_h)))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
