"""The main job: train the rate model and the spiking cerebellum on digits, attack, report."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from scripts.common import module_main

DESCRIPTION = ("The demo on the embedded digits task, a miniature of the answer study: train the rate model "
               "(the paper's protocol), the MLP and the spiking network (K = 4, width 2,000), attack the rate model "
               "and the spiking network (surrogate white-box, transfer, hybrid, the EOT hybrid under fresh noise, "
               "HopSkipJump), and write <out>/report.md and <out>/findings/findings.md. The rate branch runs in a "
               "second process while the spiking network trains.")

# Demo-sized attack settings (the full defaults are in attacks/config.py and attacks/spiking.py):
RATE_TRAIN = ["--set", "model.granule=random", "--set", "model.k=4", "--set", "model.width=2000",
              "--set", "model.ltd=ma", "--set", "train.batch_size=1"]
RATE_ATTACK = ["--n", "100"]
SPIKING_ATTACK = ["--n", "60", "--set", "attack.eps=0,0.1,0.2",
                  "--set", "attack.l2_eps=0.5,1,2", "--set", "attack.losses=margin", "--set", "attack.decision=hsja-l2",
                  "--set", "attack.decision_n=20", "--set", "attack.max_queries=300", "--set", "attack.fresh_repeats=3",
                  "--set", "attack.decision_fresh=[]", "--set", "attack.fresh_eps=0,0.1,0.2",
                  "--set", "attack.apgd=false", "--set", "surrogate.n_calibration=300"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="results/demo", metavar="DIR", help="where the demo's runs and report go")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="recompute runs that already exist")


def _cereb(argv: list[str]) -> int:
    """Run one ``cereb`` command; exit code 1 of ``attack`` means a check failed (printed, and
    reported in the report), anything else non-zero stops the demo."""
    from core.errors import CerebError
    from scripts.cli import main

    print(f"\n$ cereb {' '.join(argv)}", flush=True)
    rc = main(argv)
    if rc != 0 and not (rc == 1 and argv[0] == "attack"):
        raise CerebError(f"'cereb {' '.join(argv)}' failed with exit code {rc}")
    return rc


def _rate_branch(common: list[str], log_path: str) -> list[str]:
    """The rate model and the MLP, trained, and the rate model attacked (in a second process, its
    output to ``log_path``); returns the failed attack kinds."""
    import contextlib

    import torch

    from analysis.runs import latest_run

    torch.set_num_threads(1)  # the other core trains the spiking network
    out = common[common.index("--out") + 1]
    failed = []
    with open(log_path, "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        _cereb(["train", "--model", "rate", "--task", "digits", *RATE_TRAIN, *common, "-q"])
        _cereb(["train", "--model", "mlp", "--task", "digits", *common, "-q"])
        rate = latest_run(out, "rate", model_kind="rate")
        if rate is not None and _cereb(["attack", "--run", str(rate["path"]), *RATE_ATTACK, *common, "-q"]):
            failed.append("rate")
    return failed


def run(args: argparse.Namespace) -> int:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from analysis import findings
    from analysis.demo_report import write_demo_report
    from analysis.runs import latest_run

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = ["--out", str(out), "--seed", str(args.seed)] + (["--force"] if args.force else [])
    t0 = time.time()
    log_path = out / "demo_rate.log"
    print(f"rate model and MLP: training and attacking in a second process (output: {log_path})", flush=True)
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        rate_branch = pool.submit(_rate_branch, common, str(log_path))
        _cereb(["train", "--model", "spiking", "--task", "digits", *common])
        failed = rate_branch.result()
    print(f"\nrate branch finished ({time.time() - t0:.0f} s since the start):")
    print("\n".join(line for line in log_path.read_text().splitlines() if line.startswith(("$ cereb", "run:", "train",
                                                                                         "test", "robust", "checks",
                                                                                         "fresh", "clean"))))
    rate = latest_run(out, "rate", model_kind="rate")
    mlp = latest_run(out, "mlp", model_kind="mlp")
    spiking = latest_run(out, "spiking", model_kind="spiking")
    if spiking is not None:
        sources = ",".join(str(r["path"]) for r in (rate, mlp) if r is not None)
        extra = ["--set", f"attack.transfer_runs={sources}"] if sources else []
        if _cereb(["attack", "--run", str(spiking["path"]), *SPIKING_ATTACK, *extra, *common]):
            failed.append("spiking")
    if failed:
        print(f"\nattack checks failed for: {', '.join(failed)} (see the report)")
    report = write_demo_report(out)
    rows, curves = findings.collect(out)
    page = findings.write(rows, curves, out / "findings", study=None)
    print(f"\ndemo finished in {time.time() - t0:.0f} s; report: {report}; findings layout (one seed): {page}")
    return 0


main = module_main(sys.modules[__name__])

if __name__ == "__main__":
    sys.exit(main())
