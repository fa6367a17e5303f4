"""Attack a trained model: the seed paper's attacks and a strong evaluation, checked, in a run folder."""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from attacks.config import AttackConfig
from core.errors import CerebError
from scripts.common import add_data_dir, add_run_arguments, collect_overrides, module_main

DESCRIPTION = (
    "Attack a trained rate or mlp run (noise, FGSM, PGD with MSE/CE/margin losses, strong PGD); "
    "writes results/attack-<model>/<run>/robustness.csv."
)
ATTACKABLE = ("rate", "mlp")
N_EXAMPLES = 10


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, metavar="DIR", help="a completed run folder written by 'cereb train'")
    p.add_argument("--n", type=int, help="number of test images to attack (default 1000; same as --set attack.n=N)")
    p.add_argument("--eps", metavar="E1,E2,...", help="L-inf budgets (same as --set attack.eps=E1,E2,...)")
    add_data_dir(p)
    add_run_arguments(p)
    p.add_argument("--experiment", help="experiment folder under --out (default: attack-<model kind>)")


@dataclass(frozen=True)
class AttackExperiment:
    """What ``cereb attack`` can configure: the ``attack.*`` section."""

    attack: AttackConfig = field(default_factory=AttackConfig)


def resolve_attack_config(overrides: dict):
    """The :class:`~attacks.suite.AttackConfig` from ``{"attack": {...}}`` overrides."""
    from core.config import resolve

    return resolve(AttackExperiment, overrides).attack


def _args_overrides(args: argparse.Namespace) -> dict:
    extra: dict = {"attack": {}}
    if args.n is not None:
        extra["attack"]["n"] = args.n
    if args.eps is not None:
        from core.config import parse_set

        extra["attack"]["eps"] = parse_set([f"eps={args.eps}"])["eps"]
    return collect_overrides(args, extra)


def check_source_run(run_dir: str | Path) -> dict:
    """Read a training run folder and make sure it can be attacked; returns :func:`load_run`'s dict."""
    from core.runs import load_run

    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise CerebError(f"run folder {run_dir} does not exist")
    if not run_dir.is_dir():
        raise CerebError(f"{run_dir} is not a run folder (not a directory)")
    info = load_run(run_dir)
    status = info["meta"].get("status")
    if status != "completed":
        raise CerebError(f"run {run_dir} has status '{status}', not 'completed': only finished training runs can be attacked")
    kind = info["config"].get("model_kind")
    if kind is None:
        raise CerebError(f"{run_dir / 'config.json'} names no model_kind; is this a training run?")
    if kind == "spiking":
        raise CerebError(
            f"run {run_dir} is a spiking model: spiking attacks (surrogate white-box, transfer, "
            "decision-based) are not available yet; 'cereb attack' handles rate and mlp runs"
        )
    if kind not in ATTACKABLE:
        raise CerebError(f"run {run_dir} holds model kind {kind!r}; 'cereb attack' handles {', '.join(ATTACKABLE)}")
    if "task" not in info["config"]:
        raise CerebError(f"{run_dir / 'config.json'} has no task section")
    return info


def auto_batch_size(model) -> int:
    """Images per attack call: about 40 M granule activations per batch (<= 500)."""
    width = getattr(getattr(model, "cfg", None), "width", 0) or 0
    return int(max(16, min(500, 40_000_000 // max(width, 1))))


def attack_run(run_dir: str | Path, attack_cfg, *, seed: int = 0, out: str | Path = "results", force: bool = False,
               data_dir: str | None = None, experiment: str | None = None,
               progress: Callable[[int], object] | None = None, argv: list[str] | None = None):
    """Evaluate the trained model in ``run_dir`` under ``attack_cfg``; returns the attack :class:`~core.runs.Run`.

    ``progress`` (optional) is a callable ``(total) -> bar`` making an object with ``update()``,
    ``set_postfix_str()`` and ``close()`` (a tqdm bar), or None for no progress display.
    """
    import foolbox as fb

    from attacks.evaluate import ROBUSTNESS_COLUMNS
    from attacks.suite import TRACE_COLUMNS, plan_size, run_suite
    from core.config import config_hash, resolve, to_dict
    from core.runs import open_run
    from models.rate import load, predict_labels
    from tasks import TaskConfig, load_task

    run_dir = Path(run_dir)
    info = check_source_run(run_dir)
    kind = info["config"]["model_kind"]
    task_over = dict(info["config"]["task"])
    if data_dir:
        task_over["data_dir"] = data_dir
    task_cfg = resolve(TaskConfig, task_over)
    ds = load_task(task_cfg)
    n_test = len(ds.y_test)
    if attack_cfg.n > n_test:
        raise CerebError(f"attack.n={attack_cfg.n} but the test split of task {task_cfg.name} has only {n_test} images")
    model = load(run_dir)
    if model.n_inputs != ds.n_inputs:
        raise CerebError(f"the model in {run_dir} takes {model.n_inputs} inputs but task {task_cfg.name} has {ds.n_inputs}")
    x, y = ds.x_test[: attack_cfg.n].copy(), ds.y_test[: attack_cfg.n].copy()

    config = {
        "model_kind": kind,
        "source_run": f"{run_dir.parent.name}/{run_dir.name}",
        "source_config_hash": config_hash(info["config"]),
        "attack": to_dict(attack_cfg),
    }
    with open_run(experiment or f"attack-{kind}", config, seed, root=out, force=force, argv=argv) as run:
        if run.reused:
            return run
        started = time.time()
        fmodel = fb.PyTorchModel(model, bounds=(0, 1), device="cpu")
        predict = lambda arr: predict_labels(model, arr)  # noqa: E731
        bar = progress(plan_size(attack_cfg)) if progress else None

        def tick(label: str) -> None:
            if bar is not None:
                if bar.n >= bar.total:
                    bar.total = bar.n + 1
                bar.update(1)
                bar.set_postfix_str(label)

        try:
            result = run_suite(fmodel, predict, x, y, attack_cfg, model=kind, seed=seed,
                               batch_size=auto_batch_size(model), progress=tick)
        finally:
            if bar is not None:
                bar.close()
        run.write_csv("robustness.csv", result.rows, ROBUSTNESS_COLUMNS)
        if result.traces:
            run.write_csv("pgd_traces.csv", result.traces, TRACE_COLUMNS)
        examples = {"x_clean": x[:N_EXAMPLES], "y": y[:N_EXAMPLES]}
        for name, ev in result.evaluations.items():
            key = name.replace("/", "_")
            examples[f"{key}.eps"] = ev.epsilons
            examples[f"{key}.x_adv"] = ev.adversarial[:, :N_EXAMPLES]
        run.save_npz("adversarials.npz", **examples)
        run.log_metrics(**result.metrics, source_test_accuracy=info["metrics"].get("test_accuracy"),
                        attack_wall_s=round(time.time() - started, 3))
    return run


def _print_summary(run) -> None:
    from core.runs import read_csv

    rows = read_csv(run.path / "robustness.csv")
    eps = sorted({r["eps"] for r in rows})
    table: dict = {}
    for r in rows:
        table.setdefault((r["attack"], r["loss"]), {})[r["eps"]] = r["robust_acc"]
    head = f"{'attack':<8} {'loss':<10}" + "".join(f"{e:>7g}" for e in eps)
    print("robust accuracy by eps")
    print(head)
    for (attack, loss), vals in table.items():
        print(f"{attack:<8} {loss:<10}" + "".join(f"{vals[e]:>7.3f}" if e in vals else f"{'':>7}" for e in eps))
    m = run.metrics
    target = m.get("strong_eps_at_target")
    if "strong_target_acc" in m:
        reached = f"eps={target:g}" if target is not None else "not reached"
        print(f"strong evaluation: robust accuracy <= {m['strong_target_acc']:g} at {reached}")
    if m.get("checks_passed", True):
        print("checks: all passed")
    else:
        print(f"checks: {len(m.get('check_messages', []))} FAILED")
        for msg in m.get("check_messages", []):
            print(f"  FAILED: {msg}")
    if m.get("evidence"):
        print(f"evidence: MSE-PGD looks more robust than the strong evaluation at eps={m['evidence_eps']:g}; "
              f"per-step traces in {run.path / m['evidence']}")


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    cfg = resolve_attack_config(_args_overrides(args))  # bad eps etc. fail before anything is loaded
    quiet = getattr(args, "quiet", False)
    progress = None if quiet else (lambda total: tqdm(total=total, desc="attack", unit="cell"))
    res = attack_run(args.run, cfg, seed=args.seed, out=args.out, force=args.force, data_dir=args.data_dir,
                     experiment=args.experiment, progress=progress)
    if res.reused:
        print(f"reusing completed run {res.path} (use --force to recompute)")
    print(f"run: {res.path}")
    _print_summary(res)
    return 0 if res.metrics.get("checks_passed", True) else 1


main = module_main(sys.modules[__name__])

if __name__ == "__main__":
    sys.exit(main())
