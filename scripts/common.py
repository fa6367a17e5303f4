"""Argument parsing, logging and error handling shared by every subcommand."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from core.config import load_overrides, merge_overrides, parse_set
from core.errors import CerebError

log = logging.getLogger("cereb")


def add_run_arguments(p: argparse.ArgumentParser, *, seed: bool = True, out: str = "results") -> None:
    """The options every run-producing command shares."""
    p.add_argument("--config", metavar="FILE", help="YAML or TOML file of overrides")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one configuration value (repeatable)")
    if seed:
        p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    p.add_argument("--out", default=out, metavar="DIR", help=f"results root (default {out})")
    p.add_argument("--force", action="store_true", help="recompute even if a completed run with this config exists")


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", metavar="DIR", help="directory with the MNIST IDX files (or set CEREB_DATA)")


def add_verbosity(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only, no progress bars")


def collect_overrides(args: argparse.Namespace, extra: dict | None = None) -> dict:
    """Overrides from ``--config`` then ``--set`` (later wins), then command-specific extras."""
    layers = []
    if getattr(args, "config", None):
        layers.append(load_overrides(args.config))
    layers.append(parse_set(getattr(args, "sets", [])))
    if extra:
        layers.append(extra)
    return merge_overrides(*layers)


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose >= 2 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr, force=True)
    if verbose < 2:
        for noisy in ("brian2", "matplotlib", "PIL", "numba", "compilers", "distutils", "setuptools"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        logging.getLogger().handlers[0].addFilter(_drop_compiler_chatter)


def _drop_compiler_chatter(record: logging.LogRecord) -> bool:
    """Brian2's Cython builds log every compiler call through the root logger."""
    return not (record.name == "root" and record.levelno < logging.WARNING)


def run_command(run: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Call ``run(args)``; a :class:`CerebError` becomes one line on stderr and exit code 2."""
    setup_logging(getattr(args, "verbose", 0), getattr(args, "quiet", False))
    try:
        return int(run(args) or 0)
    except CerebError as exc:
        print(f"cereb: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cereb: interrupted", file=sys.stderr)
        return 130


def module_main(module) -> Callable[[list[str] | None], int]:
    """A ``main(argv)`` for ``python -m scripts.NAME``."""

    def main(argv: list[str] | None = None) -> int:
        p = argparse.ArgumentParser(prog=f"python -m {module.__name__}", description=module.DESCRIPTION)
        module.add_arguments(p)
        add_verbosity(p)
        args = p.parse_args(argv)
        return run_command(module.run, args)

    return main
