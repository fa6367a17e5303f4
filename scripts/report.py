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
    p.add_argument("--replication", action="store_true",
                   help="instead: add the rate-model attack runs under DIR to docs/replication_runs.csv and their "
                        "PGD traces (seed 0) to docs/replication_traces.csv (rows of earlier runs are kept "
                        "unless a new run replaces them) and rebuild docs/replication.md and its figures")
    p.add_argument("--findings", action="store_true",
                   help="instead: add the attack runs under DIR (spiking and rate) to docs/findings_runs.csv and "
                        "docs/findings_curves.csv (rows of earlier runs are kept unless a new run of the same "
                        "configuration and seed replaces them) and rebuild docs/findings.md: the mechanism verdicts "
                        "and robustness curves of both models")
    p.add_argument("--spikes", action="store_true",
                   help="instead: add the spike-domain attack runs under DIR (attack.domain=spikes) to "
                        "docs/spikes_runs.csv and docs/spikes_images.csv (a run already there is replaced) and "
                        "rebuild docs/spikes.md and its figure")
    p.add_argument("--docs", metavar="DIR", default=None,
                   help="with --replication, --findings or --spikes: the docs folder (default docs/)")


def _docs(args: argparse.Namespace):
    """The docs folder, after checking that DIR exists."""
    from pathlib import Path

    from core.errors import ConfigError
    from core.paths import PROJECT_ROOT

    if not Path(args.dir).is_dir():
        raise ConfigError(f"{args.dir} is not a directory")
    return Path(args.docs) if args.docs else PROJECT_ROOT / "docs"


def _committed(*paths_and_readers):
    """The committed tables, read by their readers; a file that is not such a table is one line."""
    from core.errors import ConfigError

    try:
        return [read(path) for path, read in paths_and_readers]
    except (ValueError, KeyError) as exc:
        raise ConfigError(str(exc)) from None


def _findings(args: argparse.Namespace) -> int:
    from analysis import findings

    docs = _docs(args)
    old, old_curves = _committed((docs / "findings_runs.csv", findings.read_runs),
                                 (docs / "findings_curves.csv", findings.read_curves))
    new, new_curves = findings.collect(args.dir)
    rows = findings.merge(old, new)
    curves = findings.merge_curves(old_curves, new_curves, rows)
    md = findings.write(rows, curves, docs, study=findings.study_info(args.dir))
    print(f"findings: {len(new)} runs from {args.dir}, {len(old)} rows before, {len(rows)} now; wrote {md}")
    return 0


def _replication(args: argparse.Namespace) -> int:
    from analysis import replication

    docs = _docs(args)
    old, old_traces = _committed((docs / "replication_runs.csv", replication.read_table),
                                 (docs / "replication_traces.csv", replication.read_traces))
    new = replication.collect(args.dir)
    traces = replication.merge_traces(old_traces, replication.collect_traces(args.dir))
    table, md = replication.write(replication.merge(old, new), docs, traces)
    print(f"replication: {len(new)} runs from {args.dir}, {len(old)} rows before; wrote {table} and {md}")
    return 0


def _spikes(args: argparse.Namespace) -> int:
    from analysis import spike_findings as sf

    docs = _docs(args)
    old, old_images = _committed((docs / "spikes_runs.csv", lambda p: sf.read_table(p, sf.RUN_COLUMNS)),
                                 (docs / "spikes_images.csv", lambda p: sf.read_table(p, sf.IMAGE_COLUMNS)))
    new, new_images = sf.collect(args.dir)
    md = sf.write(sf.merge(old, new), sf.merge(old_images, new_images), docs)
    print(f"spikes: {len({r['attack_run'] for r in new})} runs from {args.dir}, "
          f"{len({r['attack_run'] for r in old})} before; wrote {md}")
    return 0


def run(args: argparse.Namespace) -> int:
    if sum(map(bool, (args.replication, args.findings, args.spikes))) > 1:
        from core.errors import ConfigError

        raise ConfigError("--replication, --findings and --spikes write different documents: give one")
    if args.spikes:
        return _spikes(args)
    if args.findings:
        return _findings(args)
    if args.replication:
        return _replication(args)
    from analysis.report import write_report

    path = write_report(args.dir, args.out)
    print(f"report: {path}")
    return 0


main = module_main(sys.modules[__name__])

if __name__ == "__main__":
    sys.exit(main())
