"""Write the report of a results directory: tables, statistics, figures and the lab export."""
from __future__ import annotations

import argparse
import sys

from scripts.common import module_main

DESCRIPTION = ("Write DIR/report.md from the run folders under DIR: headline tables, attack checks, robustness "
               "curves, mechanism statistics, spikes, galleries and the lab export (files only; nothing is rerun).")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="results root holding experiment folders (e.g. results/demo)")
    p.add_argument("--out", metavar="FILE", help="report file to write (default DIR/report.md); figures, tables "
                                                 "and export go next to it")


def run(args: argparse.Namespace) -> int:
    from analysis.report import write_report

    path = write_report(args.dir, args.out)
    print(f"report: {path}")
    return 0


main = module_main(sys.modules[__name__])

if __name__ == "__main__":
    sys.exit(main())
