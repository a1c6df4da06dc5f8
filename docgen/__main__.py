"""`python -m docgen`: write every generated page; `--check`: exit 1 naming each stale page instead."""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from docgen.pages import ROOT, stale_pages, write_pages


def main(argv: Sequence[str] | None = None, root: Path = ROOT) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m docgen", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a page differs from what is generated"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_pages(root)
        for path in stale:
            print(f"stale: {path} (run python -m docgen)", file=sys.stderr)
        return 1 if stale else 0
    for path in write_pages(root):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
