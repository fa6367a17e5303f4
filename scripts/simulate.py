"""Present chosen inputs to a trained spiking network and record every population's spikes."""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np

from core.errors import CerebError, DataError
from scripts.common import add_data_dir, module_main

DESCRIPTION = (
    "Simulate a trained spiking network on chosen inputs (test indices, a .npy file, or an attack run's "
    "adversarials) and record its spikes; writes results/simulate/<run>/ with spikes.npz, spikes.nwb, "
    "rates.csv and figures."
)
DEFAULT_ATTACK_KEYS = ("hybrid_margin", "pgd_margin")  # preferred examples of a spiking attack run


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True, metavar="DIR", help="a completed 'cereb train --model spiking' run folder")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--npy", metavar="FILE", help=".npy file of inputs (n, n_fibres) in [0, 1]")
    src.add_argument("--from-attack", metavar="DIR", help="an attack run folder: present its stored clean and "
                                                          "adversarial examples")
    p.add_argument("--index", metavar="I,J,...", help="test-set indices (default 0); with --from-attack, indices of "
                                                      "the attack run's stored examples (default: the first two "
                                                      "that fooled the frozen-noise network)")
    p.add_argument("--attack", metavar="KEY", help="with --from-attack: which examples (e.g. hybrid_margin, "
                                                   "pgd_margin, hsja-l2; default hybrid_margin)")
    p.add_argument("--eps", type=float, default=0.1, help="with --from-attack: the eps of the examples (default 0.1)")
    p.add_argument("--record", metavar="POPS", help="comma-separated populations: mf, grc, goc, mli, pc, cf "
                                                    "(default all)")
    p.add_argument("--repeats", type=int, default=1, help="trials per input (default 1)")
    p.add_argument("--noise", choices=("fresh", "frozen"), default="fresh",
                   help="fresh: a new mossy-fibre draw per trial (default); frozen: noise slot 0 of the network's "
                        "seed in every trial (identical repeats)")
    p.add_argument("--olive", action="store_true", help="simulate with the inferior olive on (teaching towards the "
                                                        "input's label, or --label) and plasticity off")
    p.add_argument("--label", type=int, help="the label of every input (taught by the olive with --olive)")
    add_data_dir(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the fresh-noise draws (default 0)")
    p.add_argument("--out", default="results", metavar="DIR", help="results root (default results)")
    p.add_argument("--force", action="store_true", help="recompute even if a completed run with this config exists")
    p.add_argument("--experiment", default="simulate", help="experiment folder under --out (default simulate)")


def parse_index(text: str | None, default: list[int]) -> list[int]:
    if text is None:
        return list(default)
    try:
        out = [int(v) for v in text.split(",") if v.strip() != ""]
    except ValueError:
        raise CerebError(f"--index expects comma-separated integers, got {text!r}") from None
    if not out:
        raise CerebError("--index names no input")
    if min(out) < 0:
        raise CerebError(f"--index {min(out)} is negative")
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def inputs_from_test(net, index: list[int], data_dir: str | None) -> tuple[np.ndarray, np.ndarray, list, dict]:
    x_test, y_test = net.test_set(data_dir)
    past = [i for i in index if i >= len(x_test)]
    if past:
        raise CerebError(f"--index {past[0]} is past the end of the test set ({len(x_test)} images, 0 to {len(x_test) - 1})")
    return x_test[index], y_test[index], ["test"] * len(index), {"kind": "test", "index": index}


def inputs_from_npy(net, path: str, index: list[int] | None) -> tuple[np.ndarray, np.ndarray, list, dict]:
    f = Path(path)
    if not f.is_file():
        raise DataError(f"--npy file {f} does not exist")
    try:
        x = np.load(f, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"--npy file {f} is not a readable .npy array: {exc}") from None
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != net.n_inputs:
        raise DataError(f"--npy file {f} holds an array of shape {x.shape}; this network takes (n, {net.n_inputs})")
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 1:
        raise DataError(f"--npy file {f}: inputs must be finite numbers in [0, 1]")
    idx = list(range(len(x))) if index is None else index
    past = [i for i in idx if i >= len(x)]
    if past:
        raise CerebError(f"--index {past[0]} is past the end of {f} ({len(x)} inputs)")
    return x[idx].astype(np.float64), np.full(len(idx), -1), ["npy"] * len(idx), \
        {"kind": "npy", "file": str(f), "sha256": _sha256(f), "index": idx}


def fooling_examples(net, x_clean: np.ndarray, x_adv: np.ndarray, y: np.ndarray, k: int = 2) -> list[int]:
    """The first ``k`` stored examples whose clean input the frozen-noise network (the one the
    attacks searched) classifies correctly and whose adversarial it does not; [0, ..., k-1] when
    there are none."""
    from models.spiking.api import simulate

    xs = np.clip(np.concatenate([x_clean, x_adv]).astype(np.float64), 0, 1)
    pred = simulate(net, xs, repeats=1, noise="frozen", record=("pc",)).predicted
    n = len(x_clean)
    fooled = np.flatnonzero((pred[:n] == y) & (pred[n:] != y))
    if not len(fooled):
        return list(range(min(k, n)))
    return fooled[:k].tolist()


def inputs_from_attack(net, run_dir: str, attack: str | None, eps: float, index: list[int] | None):
    """Clean and adversarial inputs, alternating, from an attack run's stored examples
    (``index`` None: the first two that fooled the frozen-noise network)."""
    from core.runs import load_npz, load_run

    d = Path(run_dir)
    if not d.is_dir():
        raise CerebError(f"attack run folder {d} does not exist")
    info = load_run(d)
    if info["meta"].get("status") != "completed":
        raise CerebError(f"attack run {d} has status '{info['meta'].get('status')}', not 'completed'")
    adv_file = d / "adversarials.npz"
    stored = load_npz(adv_file) if adv_file.exists() else {}
    eps_keys = sorted(k[: -len(".x_adv")] for k in stored if k.endswith(".x_adv"))
    decision = sorted(p.stem[len("decision_"):] for p in d.glob("decision_*.npz"))
    if attack is None:
        attack = next((k for k in DEFAULT_ATTACK_KEYS if k in eps_keys), None) or (decision[0] if decision else None) \
            or (eps_keys[0] if eps_keys else None)
    if attack is None:
        raise DataError(f"{d} holds no adversarial examples (no adversarials.npz or decision_*.npz)")
    if attack in eps_keys:
        eps_all = np.asarray(stored[f"{attack}.eps"], dtype=float)
        match = np.flatnonzero(np.abs(eps_all - eps) < 1e-9)
        if not match.size:
            raise CerebError(f"{d}: examples of {attack} exist at eps {', '.join(f'{e:g}' for e in eps_all)}, "
                             f"not at --eps {eps:g}")
        x_clean, y = stored["x_clean"], stored["y"]
        x_adv = stored[f"{attack}.x_adv"][int(match[0])]
        where = {"attack": attack, "eps": float(eps)}
    elif attack in decision:
        arrays = load_npz(d / f"decision_{attack}.npz")
        x_clean, x_adv, y = arrays["x_clean"], arrays["x_adv"], arrays["y"]
        where = {"attack": attack, "eps": None}
    else:
        raise CerebError(f"{d} has no examples of attack {attack!r} (available: {', '.join(eps_keys + decision)})")
    if x_clean.shape[1] != net.n_inputs:
        raise DataError(f"the examples in {d} have {x_clean.shape[1]} pixels; this network takes {net.n_inputs}")
    if index is None:
        index = fooling_examples(net, x_clean, x_adv, np.asarray(y))
        where["chosen"] = "first examples that fooled the frozen-noise network"
    past = [i for i in index if i >= len(x_clean)]
    if past:
        raise CerebError(f"--index {past[0]} is past the {len(x_clean)} stored examples of {attack} in {d}")
    xs, ys, conds = [], [], []
    for j in index:
        xs += [x_clean[j], x_adv[j]]
        ys += [int(y[j])] * 2
        conds += ["clean", "adversarial"]
    source_run = info["config"].get("source_run")
    return np.clip(np.asarray(xs, dtype=np.float64), 0, 1), np.asarray(ys), conds, \
        {"kind": "attack", "run": f"{d.parent.name}/{d.name}", "attack_source_run": source_run, "index": index, **where}


def simulate_run(args: argparse.Namespace):
    """Resolve the inputs, simulate, and write the run folder; returns the :class:`~core.runs.Run`."""
    from analysis import figures, nwb, spikes
    from core.config import config_hash
    from core.runs import load_run, open_run
    from models.spiking.api import POPULATIONS, _check_record, load_network, simulate

    if not args.from_attack and args.attack is not None:
        raise CerebError("--attack selects examples of an attack run: give --from-attack DIR")
    record = _check_record(None if args.record is None else [p.strip() for p in args.record.split(",") if p.strip()])
    if args.repeats < 1:
        raise CerebError(f"--repeats must be >= 1, got {args.repeats}")
    net = load_network(args.run)
    if args.label is not None and not 0 <= args.label < net.n_classes:
        raise CerebError(f"--label {args.label} is not a class of this network (0 to {net.n_classes - 1})")
    if args.from_attack:
        x, y, conds, inputs = inputs_from_attack(net, args.from_attack, args.attack, args.eps,
                                                 None if args.index is None else parse_index(args.index, []))
        source = np.repeat(inputs["index"], 2)
    elif args.npy:
        x, y, conds, inputs = inputs_from_npy(net, args.npy, None if args.index is None else parse_index(args.index, []))
        source = np.asarray(inputs["index"])
    else:
        x, y, conds, inputs = inputs_from_test(net, parse_index(args.index, [0]), args.data_dir)
        source = np.asarray(inputs["index"])
    if args.label is not None:
        y = np.full(len(x), args.label)
    if args.olive and (y < 0).any():
        raise CerebError("--olive teaches towards each input's label: give --label for inputs from a .npy file")
    run_dir = Path(args.run)
    config = {"source_run": f"{run_dir.parent.name}/{run_dir.name}",
              "source_config_hash": config_hash(load_run(run_dir)["config"]), "inputs": inputs,
              "record": list(record), "repeats": args.repeats, "noise": args.noise, "olive": bool(args.olive),
              "label": args.label}
    with open_run(args.experiment, config, args.seed, root=args.out, force=args.force, argv=sys.argv) as run:
        if run.reused:
            return run
        t0 = time.time()
        rec = simulate(net, x, labels=y, repeats=args.repeats, noise=args.noise, record=record, olive=args.olive,
                       seed=args.seed)
        t_sim = time.time() - t0
        trials = rec.as_trials(conds, source)
        spikes.write_trial_spikes(run.file("spikes.npz"), trials)
        nwb.write_nwb(run.file("spikes.nwb"), trials, identifier=run.path.name,
                      session_description=f"cereb simulate: network {config['source_run']}, {len(x)} inputs x "
                                          f"{args.repeats} trials, {args.noise} noise, olive {'on' if args.olive else 'off'}",
                      source="cereb simulate " + " ".join(sys.argv[2:] if len(sys.argv) > 2 else []))
        problems = nwb.validate_nwb(run.file("spikes.nwb"))
        run.write_csv("rates.csv", spikes.trial_rate_rows(trials), spikes.TRIAL_RATE_COLUMNS)
        figs = [figures.plot_trial_rasters(trials, run.figures / "raster.png"),
                figures.plot_trial_psth(trials, run.figures / "psth.png"),
                figures.plot_trial_class_rates(trials, run.figures / "class_rates.png")]
        pred = rec.predicted
        labelled = rec.labels[rec.trial_input] >= 0
        majority = [np.bincount(pred[rec.trial_input == q]).argmax() for q in range(len(x))]
        agree = float(np.mean([np.mean(pred[rec.trial_input == q] == majority[q]) for q in range(len(x))]))
        run.log_metrics(n_inputs=int(len(x)), n_trials=int(rec.n_trials), populations=list(record),
                        trial_accuracy=float(np.mean(pred[labelled] == rec.labels[rec.trial_input][labelled]))
                        if labelled.any() else None,
                        trial_agreement=agree, nwb_valid=not problems, nwb_problems=problems[:10],
                        n_spikes={p: int(sum(len(i) for i, _ in rec.trains[p])) for p in rec.populations},
                        figures=[f.name for f in figs if f is not None],
                        wall_s_simulate=round(t_sim, 3), wall_s_total=round(time.time() - t0, 3))
        if problems:
            raise CerebError(f"{run.file('spikes.nwb')} failed NWB validation: {problems[0]}")
    return run


def _print_summary(run) -> None:
    from analysis.spikes import load_trial_spikes

    trials = load_trial_spikes(run.file("spikes.npz"))
    m = run.metrics
    inputs = np.asarray(trials["trial_input"])
    for q in dict.fromkeys(inputs.tolist()):
        ks = np.flatnonzero(inputs == q)
        label = int(trials["input_label"][q])
        preds = " ".join(str(int(trials["trial_predicted"][k])) for k in ks)
        print(f"input {q} ({trials['input_condition'][q]} #{int(trials['input_source'][q])}"
              + (f", label {label}" if label >= 0 else "") + f"): predicted {preds} over {len(ks)} trials")
    rates = {p: np.mean([len(i) for i, _ in trials["trains"][p]]) * 1000.0 / trials["window_ms"] / max(trials["n"][p], 1)
             for p in trials["pops"]}
    print("mean rate per cell (Hz): " + ", ".join(f"{p} {r:.1f}" for p, r in rates.items()))
    print(f"noise {trials['noise']}, olive {'on' if trials['olive'] else 'off'}; "
          f"NWB {'valid' if m.get('nwb_valid') else 'INVALID'}; simulation {m.get('wall_s_simulate', float('nan')):.1f} s")
    print(f"wrote spikes.npz, spikes.nwb, rates.csv, figures/{', figures/'.join(m.get('figures', []))}")


def run(args: argparse.Namespace) -> int:
    res = simulate_run(args)
    if res.reused:
        print(f"reusing completed run {res.path} (use --force to recompute)")
    print(f"run: {res.path}")
    _print_summary(res)
    return 0


main = module_main(sys.modules[__name__])

if __name__ == "__main__":
    sys.exit(main())
