"""Run a study: a grid of configurations, each trained and attacked, across processes, resumable.

A study file (YAML, TOML or JSON) holds::

    name: paper_width                # study name (default: the file's stem)
    description: ...                 # free text
    model_kind: rate                 # default model kind of every variant (rate, mlp)
    seeds: [0]                       # every configuration runs once per seed
    base:                            # overrides for every configuration (nested or dotted keys)
      task.name: mnist
      model.granule: fc
    grid:                            # optional: cartesian product of key -> list of values
      model.width: [1000, 2000]
      model.ltd: [none, ma]
    variants:                        # optional: explicit list (combined with the grid if both)
      - {label: Base+LTD, model.width: 5970, model.ltd: ma}
      - {label: MLP, model_kind: mlp}
      - {label: wide, model.width: 200000, seeds: [0]}   # a variant may set its own seeds
    attack:                          # attack.* overrides for 'cereb attack'; false: train only
      n: 1000

Each configuration is trained (as ``cereb train``) and attacked (as ``cereb attack``) in a
worker process. Completed train and attack runs are reused, so an interrupted study resumes
where it stopped. The study's own run folder (``study-<name>``) lists every job in
``study.csv``.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from core.errors import CerebError
from core.study import EXECUTORS, check_tasks, committed_jobs, job_cost, load_study, run_job, run_study
from scripts.common import add_data_dir, module_main

DESCRIPTION = "Run a study file: train and attack every configuration of a grid, across processes, resumably."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="CONFIG", help="study file (YAML, TOML or JSON)")
    add_data_dir(p)
    p.add_argument("--jobs", type=int, default=2, help="worker processes (default 2; with --executor dask and no "
                                                       "--scheduler: the LocalCluster's workers)")
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local: a process pool on this machine (default); dask: dask.distributed tasks")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="with --executor dask: the scheduler to submit to (e.g. tcp://head:8786); default: a "
                        "LocalCluster of --jobs workers")
    p.add_argument("--out", default="results", metavar="DIR", help="results root (default results)")
    p.add_argument("--force", action="store_true", help="recompute every run even if a completed one exists")
    p.add_argument("--dry-run", action="store_true", help="list the jobs (numbered for --job) and exit")
    p.add_argument("--skip-committed", metavar="TABLE",
                   help="do not run the jobs that a committed table already holds: docs/findings_runs.csv (from "
                        "'cereb report ROOT --findings'; same model, training configuration hash, seed and number "
                        "of attacked images) or docs/replication_runs.csv ('cereb report ROOT --replication'; same "
                        "training configuration hash and seed): a study spread over sessions on fresh machines")
    p.add_argument("--job", type=int, metavar="I",
                   help="run only job I of --dry-run's list (train + attack) and exit: one task of a cluster array "
                        "job; a later run without --job reuses the finished runs and writes study.csv")


# a training configuration's hash covers task.data_dir as spelled (--data-dir, CEREB_DATA), so a
# committed run made with another spelling of the same directory does not hold its job
_NONE_HELD = ("no job is held by {table}: none of its runs has a job's training configuration and seed "
              "(task.data_dir counts as spelled: give the --data-dir its runs were made with)")


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None or v == "" else format(v, spec)


def _print_cost(study: dict, jobs: list[dict]) -> None:
    """The estimated cost per job kind (core-hours; core.study's rough cost model)."""
    from core.study import estimate_cost

    by: dict[str, list[float]] = {}
    for job in jobs:
        t, a = estimate_cost(job, study["attack"], study.get("spiking_attack"))
        acc = by.setdefault(job["model_kind"], [0, 0.0, 0.0])
        acc[0] += 1
        acc[1] += t
        acc[2] += a
    total = 0.0
    for kind, (n, t, a) in sorted(by.items()):
        total += t + a
        print(f"estimated cost, {kind}: {n} jobs, {(t + a) / 3600:.1f} core-hours "
              f"(training {t / 3600:.1f}, attacks {a / 3600:.1f})")
    print(f"estimated cost, all: {total / 3600:.1f} core-hours (rough: a model fitted to runs on a 2-core AMD EPYC, "
          "Dec 2026; see core/study.py)")


def run(args: argparse.Namespace) -> int:
    data_dir = args.data_dir or os.environ.get("CEREB_DATA")
    study = load_study(args.config, data_dir)
    ordered = sorted(study["jobs"], key=job_cost, reverse=True)
    if args.dry_run:
        held = ({(j["label"], j["seed"]) for j in committed_jobs(study, args.skip_committed)}
                if args.skip_committed else set())
        for i, job in enumerate(ordered):
            mark = "  (committed: not run)" if (job["label"], job["seed"]) in held else ""
            print(f"{i:>4}  {job['model_kind']:<7} seed {job['seed']}  {job['label']}{mark}")
        print(f"{len(study['jobs'])} jobs" + (f", {len(held)} held by {args.skip_committed}" if held else ""))
        if args.skip_committed and not held:
            print(_NONE_HELD.format(table=args.skip_committed))
        _print_cost(study, [j for j in ordered if (j["label"], j["seed"]) not in held])
        return 0
    if args.job is not None:
        if not 0 <= args.job < len(ordered):
            raise CerebError(f"--job {args.job}: the study has jobs 0 to {len(ordered) - 1}")
        check_tasks({**study, "jobs": [ordered[args.job]]})
        if args.skip_committed and committed_jobs({**study, "jobs": [ordered[args.job]]}, args.skip_committed):
            print(f"job {args.job} ({ordered[args.job]['label']}, seed {ordered[args.job]['seed']}) is held by "
                  f"{args.skip_committed}: not run")
            return 0
        summary = run_job({**ordered[args.job], "out": args.out, "force": args.force, "attack": study["attack"],
                           "spiking_attack": study.get("spiking_attack"), "threads": None, "worker": False,
                           "train_experiment": study["train_experiment"],
                           "attack_experiment": study["attack_experiment"]})
        for key in ("label", "seed", "status", "train_run", "test_accuracy", "attack_run", "error"):
            if key != "error" or summary.get("error"):  # no empty error line under a job that ran
                print(f"{key}: {summary.get(key, '')}")
        return 0 if summary["status"] == "ok" else 1
    check_tasks(study)  # a missing data directory fails here, not in every worker
    skip = committed_jobs(study, args.skip_committed) if args.skip_committed else []
    if skip:
        print(f"{len(skip)} of {len(study['jobs'])} jobs are held by {args.skip_committed}: not run")
    elif args.skip_committed:
        print(_NONE_HELD.format(table=args.skip_committed))
    srun, summaries = run_study(study, jobs=args.jobs, out=args.out, force=args.force,
                                progress=not getattr(args, "quiet", False), argv=sys.argv,
                                executor=args.executor, scheduler=args.scheduler, skip=skip)
    if srun.reused:
        print(f"reusing completed study {srun.path} (use --force to recompute)")
    print(f"study: {srun.path}")
    print(f"{'label':<28} {'seed':>4} {'test':>7} {'mse@0.1':>8} {'strong@0.1':>10} {'eps@1%':>7}  checks")
    for s in summaries:
        checks = {True: "ok", False: "FAILED", "True": "ok", "False": "FAILED"}.get(s.get("checks_passed"), "-")
        print(f"{str(s['label']):<28} {s['seed']:>4} {_fmt(s.get('test_accuracy'), '.4f'):>7} "
              f"{_fmt(s.get('robust_acc_pgd_mse_eps0.1'), '.3f'):>8} {_fmt(s.get('robust_acc_strong_eps0.1'), '.3f'):>10} "
              f"{_fmt(s.get('strong_eps_at_target'), 'g'):>7}  {checks}")
    return 0


main = module_main(sys.modules[__name__])

if __name__ == "__main__":
    sys.exit(main())
