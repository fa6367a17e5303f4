"""The ``cereb`` command: one subcommand per module in ``scripts/``."""
from __future__ import annotations

import argparse
import importlib
import sys

from scripts.common import add_verbosity, run_command

SUBCOMMANDS = {
    "tasks": "scripts.tasks",
    "train": "scripts.train",
    "bench": "scripts.bench",
    "diagnose": "scripts.diagnose",
    "demo": "scripts.demo",
    "attack": "scripts.attack",
    "study": "scripts.study",
    "report": "scripts.report",
    "simulate": "scripts.simulate",
}


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(
        prog="cereb",
        description="Spiking and rate cerebellum models under adversarial attack.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = {}
    for name, modname in SUBCOMMANDS.items():
        mod = importlib.import_module(modname)
        modules[name] = mod
        p = sub.add_parser(name, help=mod.DESCRIPTION.splitlines()[0], description=mod.DESCRIPTION)
        mod.add_arguments(p)
        add_verbosity(p)
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    return run_command(modules[args.command].run, args)


if __name__ == "__main__":
    sys.exit(main())
