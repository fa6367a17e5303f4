"""Train a model on a task and write a run folder with its checkpoint and learning curve."""
from __future__ import annotations

import argparse
import sys
from dataclasses import make_dataclass, field

from scripts.common import add_data_dir, add_run_arguments, collect_overrides, module_main

DESCRIPTION = "Train a model (rate, mlp or spiking) on a task; writes results/<model>/<run>/."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="spiking", help="model kind: rate, mlp or spiking (default spiking)")
    p.add_argument("--task", help="task name (same as --set task.name=...)")
    add_data_dir(p)
    add_run_arguments(p)
    p.add_argument("--experiment", help="experiment folder under --out (default: the model kind)")


TORCH_MODELS = ("rate", "mlp")  # the models that run on the torch device


def experiment_config_class(kind: str):
    """The dataclass ``{task, model, train}`` for model ``kind``."""
    from models.registry import model_module
    from tasks import TaskConfig

    mod = model_module(kind)
    mcls, tcls = mod.model_config(kind), mod.train_config(kind)
    return make_dataclass(
        f"{kind.capitalize()}Experiment",
        [("task", TaskConfig, field(default_factory=TaskConfig)),
         ("model", mcls, field(default_factory=mcls)),
         ("train", tcls, field(default_factory=tcls))],
        frozen=True,
    )


def resolve_config(args: argparse.Namespace):
    """``(config, device)``: the resolved ``{task, model, train}`` and the requested ``device``
    (a top-level key outside the configuration; see :mod:`core.device`)."""
    from core.config import resolve
    from core.device import pop_device

    extra = {"task": {}}
    if args.task:
        extra["task"]["name"] = args.task
    if args.data_dir:
        extra["task"]["data_dir"] = args.data_dir
    overrides, device = pop_device(collect_overrides(args, extra))
    return resolve(experiment_config_class(args.model), overrides), device


def run(args: argparse.Namespace) -> int:
    from core.config import to_dict
    from core.runs import open_run
    from models.registry import model_module
    from tasks import load_task

    from core.device import device_meta, resolve_device

    cfg, device_spec = resolve_config(args)
    device = resolve_device(device_spec)  # device=cuda without a GPU fails here
    ds = load_task(cfg.task)  # bad data fails before a run folder is made
    config = {"model_kind": args.model, **to_dict(cfg)}
    used = device if args.model in TORCH_MODELS else "cpu"  # the spiking network runs in Brian2 on the CPU
    with open_run(args.experiment or args.model, config, args.seed, root=args.out, force=args.force,
                  meta=device_meta(device_spec, used)) as run:
        if run.reused:
            print(f"reusing completed run {run.path} (use --force to recompute)")
        else:
            kw = {"device": device} if args.model in TORCH_MODELS else {}
            metrics = model_module(args.model).fit(args.model, ds, cfg.model, cfg.train, args.seed, run,
                                                   progress=not getattr(args, "quiet", False), **kw)
            run.log_metrics(**metrics)
    m = run.metrics
    print(f"run: {run.path}")
    print(f"train_accuracy={m.get('train_accuracy', float('nan')):.4f} test_accuracy={m.get('test_accuracy', float('nan')):.4f}")
    return 0


main = module_main(sys.modules[__name__])

if __name__ == "__main__":
    sys.exit(main())
