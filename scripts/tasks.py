"""List the tasks with their sizes, or check the MNIST files in a directory."""
from __future__ import annotations

import argparse
import sys

from scripts.common import add_data_dir, module_main

DESCRIPTION = "List the tasks and their sizes; with --data-dir, check the MNIST files there."


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_dir(p)


def run(args: argparse.Namespace) -> int:
    from tasks import describe_tasks
    from tasks.mnist import check_mnist_dir

    if args.data_dir:
        lines = check_mnist_dir(args.data_dir)  # raises DataError naming the problem
        print(f"MNIST files in {args.data_dir}: ok")
        for line in lines:
            print(f"  {line}")
    rows = describe_tasks(args.data_dir)
    print(f"{'task':<10} {'inputs':>7} {'classes':>8} {'train':>7} {'test':>6}  note")
    for r in rows:
        fmt = lambda v: "-" if v is None else str(v)
        print(f"{r['task']:<10} {fmt(r['n_inputs']):>7} {fmt(r['n_classes']):>8} {fmt(r['n_train']):>7} {fmt(r['n_test']):>6}  {r['note']}")
    return 0


main = module_main(sys.modules[__name__])

if __name__ == "__main__":
    sys.exit(main())
