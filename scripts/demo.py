"""The main job: train the rate model and the spiking cerebellum on digits, attack, report."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from scripts.common import module_main

DESCRIPTION = ("The demo on the embedded digits task: train the rate model and the spiking network "
               "(K = 4, width 2,000), attack the rate model, and write <out>/report.md.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="results/demo", metavar="DIR", help="where the demo's runs and report go")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="recompute runs that already exist")


def _cereb(argv: list[str]) -> None:
    from core.errors import CerebError
    from scripts.cli import main

    print(f"\n$ cereb {' '.join(argv)}", flush=True)
    rc = main(argv)
    if rc != 0:
        raise CerebError(f"'cereb {' '.join(argv)}' failed with exit code {rc}")


def run(args: argparse.Namespace) -> int:
    from analysis.demo_report import write_demo_report
    from analysis.runs import latest_run

    out = Path(args.out)
    common = ["--out", str(out), "--seed", str(args.seed)] + (["--force"] if args.force else [])
    t0 = time.time()
    _cereb(["train", "--model", "rate", "--task", "digits", "--set", "model.granule=random", "--set", "model.k=4",
            "--set", "model.width=2000", "--set", "model.ltd=ma", *common])
    _cereb(["train", "--model", "spiking", "--task", "digits", *common])
    rate = latest_run(out, "rate", model_kind="rate")
    if rate is not None:
        _cereb(["attack", "--run", str(rate["path"]), "--n", "359", *common])
    report = write_demo_report(out)
    print(f"\ndemo finished in {time.time() - t0:.0f} s; report: {report}")
    return 0


main = module_main(sys.modules[__name__])

if __name__ == "__main__":
    sys.exit(main())
