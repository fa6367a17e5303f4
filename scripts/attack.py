"""``cereb attack``: argument parsing and printing. The experiments themselves (load the trained run,
attack it, write the run folder) are :mod:`attacks.experiment`."""
from __future__ import annotations

import argparse
import sys

from attacks.experiment import attack_run, resolve_attack_config, source_kind, spiking_attack_run
from core.errors import CerebError
from scripts.common import add_data_dir, add_run_arguments, collect_overrides, module_main

DESCRIPTION = (
    "Attack a trained run: rate/mlp (noise, FGSM, PGD with MSE/CE/margin losses, strong PGD) or spiking "
    "(surrogate white-box and transfer, hybrid, HopSkipJump); writes results/attack-<model>/<run>/robustness.csv. "
    "On a spiking run, --set attack.domain=spikes edits the mossy-fibre spike trains instead of the pixels "
    "(robustness_spikes.csv, stimulation.csv, stimulation.nwb)."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, metavar="DIR", help="a completed run folder written by 'cereb train'")
    p.add_argument("--n", type=int, help="number of test images to attack (default 1000; same as --set attack.n=N)")
    p.add_argument("--eps", metavar="E1,E2,...", help="L-inf budgets (same as --set attack.eps=E1,E2,...)")
    add_data_dir(p)
    add_run_arguments(p)
    p.add_argument("--experiment", help="experiment folder under --out (default: attack-<model kind>)")


def _args_overrides(args: argparse.Namespace) -> dict:
    """The attack configuration's overrides; the top-level ``device`` goes to ``args.device``."""
    from core.device import pop_device

    extra: dict = {"attack": {}}
    if args.n is not None:
        extra["attack"]["n"] = args.n
    if args.eps is not None:
        from core.config import parse_set

        extra["attack"]["eps"] = parse_set([f"eps={args.eps}"])["eps"]
    overrides, args.device = pop_device(collect_overrides(args, extra))
    return overrides


def _print_checks(m: dict) -> None:
    """The attack checks' outcome, one line per failed check."""
    if m.get("checks_passed", True):
        print("checks: all passed")
    else:
        print(f"checks: {len(m.get('check_messages', []))} FAILED")
        for msg in m.get("check_messages", []):
            print(f"  FAILED: {msg}")


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
    _print_checks(m)
    if m.get("evidence"):
        print(f"evidence: MSE-PGD looks more robust than the strong evaluation at eps={m['evidence_eps']:g}; "
              f"per-step traces in {run.path / m['evidence']}")


def _print_spiking_summary(run) -> None:
    from core.runs import read_csv

    rows = [r for r in read_csv(run.path / "robustness.csv") if r["model"] == "spiking" and r["noise_mode"] == "frozen"]
    m = run.metrics
    print(f"clean accuracy (spiking, frozen noise): {m.get('clean_accuracy', float('nan')):.3f}")
    print(f"surrogate: agreement {m.get('fidelity_agreement', float('nan')):.3f}, "
          f"readout R2 {m.get('fidelity_readout_r2', float('nan')):.3f}, "
          f"r grc/goc/pc {m.get('fidelity_r_grc', float('nan')):.2f}/{m.get('fidelity_r_goc', float('nan')):.2f}/"
          f"{m.get('fidelity_r_pc', float('nan')):.2f}")
    for norm in ("linf", "l2"):
        sel = [r for r in rows if r["norm"] == norm]
        eps = sorted({r["eps"] for r in sel})
        if not sel:
            continue
        print(f"robust accuracy by {norm} eps (spiking network)")
        print(f"{'attack':<14} {'loss':<7}" + "".join(f"{e:>7g}" for e in eps))
        table: dict = {}
        for r in sel:
            table.setdefault((r["attack"], r["loss"]), {})[r["eps"]] = r["robust_acc"]
        for (attack, loss), vals in table.items():
            print(f"{attack:<14} {loss:<7}" + "".join(f"{vals[e]:>7.3f}" if e in vals else f"{'':>7}" for e in eps))
    for name in ("hsja-l2", "hsja-linf", "boundary-l2"):
        if f"{name}_success_rate" in m:
            print(f"{name}: success {m[f'{name}_success_rate']:.3f}, median L2 {m[f'{name}_median_l2']:.3f}, "
                  f"median Linf {m[f'{name}_median_linf']:.3f}, {m[f'{name}_wall_s']:.0f} s, "
                  f"{m[f'{name}_queries_per_s']:.0f} queries/s")
    fresh = [r for r in read_csv(run.path / "robustness.csv")
             if r["model"] == "spiking" and r["noise_mode"] == "fresh" and r["norm"] == "linf"]
    if fresh:
        eps = sorted({r["eps"] for r in fresh})
        print(f"fresh noise (majority of {int(fresh[0].get('fresh_repeats') or 0)} trials per image): robust "
              f"accuracy [95% interval]")
        for attack, loss in dict.fromkeys((r["attack"], r["loss"]) for r in fresh):
            cells = {r["eps"]: r for r in fresh if r["attack"] == attack and r["loss"] == loss}
            print(f"{attack:<14} {loss:<7}" + "  ".join(f"eps {e:g}: {cells[e]['robust_acc']:.3f} [{cells[e]['ci_low']:.2f}, "
                                              f"{cells[e]['ci_high']:.2f}]" for e in eps if e in cells))
    for e in run.config.get("attack", {}).get("headline_eps", (0.1, 0.2)):
        if f"fresh_noise_robust_acc_eps{e:g}" in m:
            lo, hi = m[f"fresh_noise_ci_eps{e:g}"]
            print(f"fresh_noise_robust_acc@{e:g}={m[f'fresh_noise_robust_acc_eps{e:g}']:.3f} [{lo:.3f}, {hi:.3f}] "
                  f"strongest={m[f'fresh_noise_strongest_eps{e:g}']}")
    print(f"time: {m.get('attack_wall_s', 0):.0f} s")
    _print_checks(m)


def _print_spike_summary(run) -> None:
    m = run.metrics
    print(f"spike-domain attacks: {m.get('spike_images', 0)} images, {m.get('spike_attacked', 0)} attacked (correct "
          f"with a clear winner on the frozen trial)")
    print(f"{'method':<13} {'fooled frozen':>13} {'median edits frozen':>20} {'success fresh':>14} "
          f"{'median edits fresh':>19} {'median queries':>15}")
    for method in run.config.get("attack", {}).get("spike_methods", ()):
        if f"spike_{method}_fooled_frozen" not in m:
            continue
        fresh = m.get(f"spike_{method}_success_fresh_mean")
        print(f"{method:<13} {m[f'spike_{method}_fooled_frozen']:>13.3f} "
              f"{m[f'spike_{method}_median_edits_frozen']:>20g} "
              f"{'-' if fresh is None else f'{fresh:.3f}':>14} "
              f"{m.get(f'spike_{method}_median_edits_fresh', '-'):>19} {m[f'spike_{method}_queries_median']:>15g}")
    print(f"natural variability (two Poisson draws of one image, sum over fibres of |count difference|): median "
          f"{m.get('natural_variability_median', float('nan')):g} spikes")
    print(f"pixel attack (surrogate PGD, smallest eps that flips the frozen trial): median "
          f"{m.get('pixel_edits_median', float('nan')):g} spike edits")
    print(f"exported: {m.get('spike_exported', 0)} adversarial patterns (image and method) to "
          f"{run.path / 'stimulation.nwb'} and stimulation.csv")
    print(f"time: {m.get('attack_wall_s', 0):.0f} s")


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    quiet = getattr(args, "quiet", False)
    kind = source_kind(args.run)
    if kind == "spiking":
        from attacks.spiking import SpikingAttackExperiment
        from core.config import resolve

        try:
            exp = resolve(SpikingAttackExperiment, _args_overrides(args))
        except ValueError as exc:
            raise CerebError(str(exc)) from None
        res = spiking_attack_run(args.run, exp, seed=args.seed, out=args.out, force=args.force, data_dir=args.data_dir,
                                 experiment=args.experiment, progress=not quiet, device=args.device)
        if res.reused:
            print(f"reusing completed run {res.path} (use --force to recompute)")
        print(f"run: {res.path}")
        if exp.attack.domain == "spikes":
            _print_spike_summary(res)
            return 0
        _print_spiking_summary(res)
        return 0 if res.metrics.get("checks_passed", True) else 1
    overrides = _args_overrides(args)
    if "domain" in overrides.get("attack", {}) and kind in ("rate", "mlp"):
        raise CerebError(f"attack.domain (spike-domain attacks) applies to spiking runs; {args.run} holds a {kind} model")
    cfg = resolve_attack_config(overrides)  # bad eps etc. fail before anything is loaded
    progress = None if quiet else (lambda total: tqdm(total=total, desc="attack", unit="cell"))
    res = attack_run(args.run, cfg, seed=args.seed, out=args.out, force=args.force, data_dir=args.data_dir,
                     experiment=args.experiment, progress=progress, device=args.device)
    if res.reused:
        print(f"reusing completed run {res.path} (use --force to recompute)")
    print(f"run: {res.path}")
    _print_summary(res)
    return 0 if res.metrics.get("checks_passed", True) else 1


main = module_main(sys.modules[__name__])

if __name__ == "__main__":
    sys.exit(main())
