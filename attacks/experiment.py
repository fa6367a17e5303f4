"""Attack experiments: one attacked model, one run folder.

:func:`attack_run` attacks a rate or MLP training run with :func:`attacks.suite.run_suite` (the
seed paper's attacks, the strong evaluation, APGD, the checks); :func:`spiking_attack_run`
attacks a spiking training run with :func:`attacks.spiking.run_spiking_suite` (surrogate
calibration and fidelity, white-box on the surrogate and transferred, hybrid, EOT hybrid, Square,
decision-based, fresh-noise scoring), and writes one clean and one adversarial spike raster
(``spikes.npz``). Both write ``robustness.csv`` (:data:`attacks.evaluate.ROBUSTNESS_COLUMNS`,
one schema), ``adversarials.npz`` and ``metrics.json`` into an
``attack-<model kind>`` run folder (:func:`core.runs.open_run`: a completed run with the same
configuration and seed is reused). ``cereb attack`` (:mod:`scripts.attack`) parses arguments and
prints; ``cereb study`` calls these functions in its workers.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from attacks.config import AttackConfig
from core.errors import CerebError

__all__ = ["ATTACKABLE", "AttackExperiment", "resolve_attack_config", "check_source_run", "source_kind",
           "attack_run", "spiking_attack_run", "auto_batch_size", "strong_cost", "score_stats", "load_per_core",
           "matmul_gflops"]

ATTACKABLE = ("rate", "mlp", "spiking")
# the attack.* keys of the spike domain (attacks.spikes), left out of a pixel-domain run's configuration
SPIKE_DOMAIN_KEYS = ("domain", "spike_methods", "spike_budget", "spike_max_rate_hz", "silence_budget_ms", "spike_block",
                     "silence_block_ms", "shift_ms", "spike_lead_ms", "spike_queries", "spike_eot_trials",
                     "spike_variability_pairs", "spike_export")
N_EXAMPLES = 10
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttackExperiment:
    """What ``cereb attack`` can configure: the ``attack.*`` section."""

    attack: AttackConfig = field(default_factory=AttackConfig)


def resolve_attack_config(overrides: dict):
    """The :class:`~attacks.suite.AttackConfig` from ``{"attack": {...}}`` overrides."""
    from core.config import resolve

    return resolve(AttackExperiment, overrides).attack


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
    if kind not in ATTACKABLE:
        raise CerebError(f"run {run_dir} holds model kind {kind!r}; 'cereb attack' handles {', '.join(ATTACKABLE)}")
    if "task" not in info["config"]:
        raise CerebError(f"{run_dir / 'config.json'} has no task section")
    return info


def source_kind(run_dir) -> str | None:
    """The model kind a training run folder holds (None if unreadable: check_source_run then says why)."""
    import json

    try:
        return json.loads((Path(run_dir) / "config.json").read_text()).get("model_kind")
    except Exception:
        return None


def auto_batch_size(model) -> int:
    """Images per attack call: about 40 M granule activations per batch (<= 500)."""
    width = getattr(getattr(model, "cfg", None), "width", 0) or 0
    return int(max(16, min(500, 40_000_000 // max(width, 1))))


def attack_run(run_dir: str | Path, attack_cfg, *, seed: int = 0, out: str | Path = "results", force: bool = False,
               data_dir: str | None = None, experiment: str | None = None,
               progress: Callable[[int], object] | None = None, argv: list[str] | None = None, device: str = "auto"):
    """Evaluate the trained model in ``run_dir`` under ``attack_cfg``; returns the attack :class:`~core.runs.Run`.

    ``device``: the torch device of the model and the attacks (:mod:`core.device`; in ``meta.json``,
    not in the configuration).

    ``progress`` (optional) is a callable ``(total) -> bar`` making an object with ``update()``,
    ``set_postfix_str()`` and ``close()`` (a tqdm bar), or None for no progress display.
    """
    import foolbox as fb

    from attacks.evaluate import ROBUSTNESS_COLUMNS
    from attacks.suite import TRACE_COLUMNS, plan_size, run_suite
    from core.config import config_hash, resolve, to_dict
    from core.device import device_meta, resolve_device
    from core.runs import open_run
    from models.rate import load, predict_labels, predict_logits
    from tasks import TaskConfig, load_task

    resolved = resolve_device(device)
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
    with open_run(experiment or f"attack-{kind}", config, seed, root=out, force=force, argv=argv,
                  meta=device_meta(device, resolved)) as run:
        if run.reused:
            return run
        started = time.time()
        model = model.to(resolved)
        fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=resolved)
        predict = lambda arr: predict_labels(model, arr)  # noqa: E731
        bar = progress(plan_size(attack_cfg)) if progress else None

        def tick(label: str) -> None:
            if bar is not None:
                if bar.n >= bar.total:
                    bar.total = bar.n + 1
                bar.update(1)
                bar.set_postfix_str(label)

        partial = run.path / PARTIAL
        earlier = take_partial(run)
        try:
            result = run_suite(fmodel, predict, x, y, attack_cfg, model=kind, seed=seed,
                               batch_size=auto_batch_size(model), progress=tick, checkpoint=partial)
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
        cost = strong_cost(model, result.rows, attack_cfg) if kind == "rate" else {}
        # what came from an interrupted attempt: its run, commit, the eps taken per evaluation and the
        # seconds it had spent on them (counted in attack_wall_s too)
        resumed = {**earlier, "evaluations": result.metrics["resumed"]} if result.metrics["resumed"] else None
        run.log_metrics(**{k: v for k, v in result.metrics.items() if k != "resumed"},
                        **score_stats(predict_logits(model, x).numpy(), y), **cost,
                        readout_weight_norm=float(model.readout.weight.detach().norm()) if kind == "rate" else None,
                        source_test_accuracy=info["metrics"].get("test_accuracy"), resumed=resumed,
                        attack_wall_s=round(time.time() - started + (resumed or {}).get("earlier_wall_s", 0.0), 3),
                        load_per_core=load_per_core(), torch_threads=_torch_threads())
        shutil.rmtree(partial, ignore_errors=True)  # the run is complete: its tables hold what the folder did
    return run


# the folder of a rate attack run that holds its evaluations while it runs (attacks.suite.run_suite's
# checkpoint); removed when the run completes, taken over by the next attempt when it does not
PARTIAL = "partial"


def take_partial(run) -> dict:
    """Move the saved evaluations of the latest earlier attempt at ``run``'s configuration and seed
    (a run folder left 'failed' or 'interrupted' with a ``partial/`` folder) into ``run``'s, so the
    suite resumes from them; returns that attempt's ``{"from_run", "git_commit", "earlier_wall_s"}``
    (the seconds it recorded on the evaluations it saved), or {} when there is none."""
    from attacks.suite import load_evaluation

    for old in sorted(run.path.parent.glob(f"*_{run.config_hash}_s{run.seed}"), reverse=True):
        src = old / PARTIAL
        if old == run.path or not src.is_dir():
            continue
        try:
            meta = json.loads((old / "meta.json").read_text())
            same = json.loads((old / "config.json").read_text()) == run.config
        except (OSError, json.JSONDecodeError):
            continue
        if meta.get("status") in ("failed", "interrupted") and same:
            dst = run.path / PARTIAL
            dst.mkdir(exist_ok=True)
            wall = 0.0
            for f in sorted(src.glob("*.npz")):
                try:
                    wall += load_evaluation(f)[2]
                except CerebError as exc:  # left where it is: that evaluation runs again from the start
                    log.warning("not resuming from %s", exc)
                    continue
                os.replace(f, dst / f.name)
            log.info("resuming the attacks of %s from %s", run.path.name, old.name)
            return {"from_run": old.name, "git_commit": meta.get("git_commit"), "earlier_wall_s": round(wall, 3)}
    return {}


def _torch_threads() -> int:
    """The threads torch's matrix multiplies use in this process (the wall times depend on it)."""
    import torch

    return int(torch.get_num_threads())


def load_per_core() -> float | None:
    """The machine's 1-minute load average per core at the end of the run: above ~1, other work
    shared the cores and the wall times overstate the cost."""
    import os

    try:
        return round(os.getloadavg()[0] / (os.cpu_count() or 1), 3)
    except OSError:
        return None


def matmul_gflops(n_inputs: int, width: int, rows: int = 1024, repeats: int = 5, seconds: float = 0.2) -> float:
    """This machine's float32 matrix-multiply throughput (GFLOP/s) at the granule layer's shape
    (``rows`` images x ``n_inputs`` times ``n_inputs`` x ``width``, width capped at 50,000), measured
    now, in this process: the best of ``repeats`` windows of ``seconds``."""
    import torch

    a, b = torch.rand(rows, n_inputs), torch.rand(n_inputs, min(width, 50_000))
    torch.mm(a, b)
    best = 0.0
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or n == 0:
            torch.mm(a, b)
            n += 1
        best = max(best, 2.0 * rows * n_inputs * b.shape[1] * n / (time.perf_counter() - t0) / 1e9)
    return best


def strong_cost(model, rows: list[dict], cfg: AttackConfig) -> dict:
    """What the strong evaluation cost: image-gradient steps (images attacked x restarts x steps,
    summed over eps), the granule layer's share of their FLOPs (forward and input gradient:
    4 x fan-in x width per image-step; the readout is a small fraction of that), the achieved GFLOP/s
    and the fraction of this machine's matrix-multiply throughput measured in the same run."""
    strong = [r for r in rows if r["attack"] == "strong"]
    wall = sum(r["wall_s"] for r in strong)
    steps = sum(r.get("n_attacked", 0) for r in strong) * cfg.strong_steps
    if not strong or not steps or wall <= 0:
        return {"strong_image_steps": int(steps)}
    g = model.granule
    gflop = 4.0 * g.fan_in * g.width * steps / 1e9
    peak = matmul_gflops(g.n_inputs, g.width)
    return {"strong_image_steps": int(steps), "strong_gflop": gflop, "strong_gflops": gflop / wall,
            "matmul_gflops": peak, "strong_fraction_of_matmul": gflop / wall / peak}


def score_stats(scores: np.ndarray, y: np.ndarray) -> dict:
    """What the attacked outputs look like on the clean images (:func:`attacks.losses.score_summary`,
    prefixed ``clean_``), with the mean training loss to one-hot (half the summed squares)."""
    from attacks.losses import score_summary

    scores = np.asarray(scores, dtype=np.float64)
    onehot = np.zeros_like(scores)
    onehot[np.arange(len(y)), y] = 1.0
    return {**{f"clean_{k}": v for k, v in score_summary(scores, y).items()},
            "clean_mse_mean": float(0.5 * ((scores - onehot) ** 2).sum(axis=1).mean())}


def spiking_attack_run(run_dir: str | Path, exp, *, seed: int = 0, out: str | Path = "results", force: bool = False,
                       data_dir: str | None = None, experiment: str | None = None, progress: bool = False,
                       argv: list[str] | None = None, device: str = "auto"):
    """Attack the spiking network of ``run_dir`` (a :class:`~attacks.spiking.SpikingAttackExperiment`):
    calibrate the surrogate and report its fidelity, run the suite, write the files, check.
    Everything runs on the CPU (``meta.json`` says so); ``device`` is checked like elsewhere."""
    from attacks.evaluate import ROBUSTNESS_COLUMNS
    from attacks.spiking import SpikingBlackBox, run_spiking_suite
    from core.config import config_hash, resolve, to_dict
    from core.runs import open_run
    from models.spiking.train import load_checkpoint
    from models.surrogate import CerebellumSurrogate, calibrate, fidelity, save_surrogate, spiking_rates
    from tasks import TaskConfig, load_task

    run_dir = Path(run_dir)
    info = check_source_run(run_dir)
    acfg = exp.attack
    task_over = dict(info["config"]["task"])
    if data_dir:
        task_over["data_dir"] = data_dir
    ds = load_task(resolve(TaskConfig, task_over))
    if acfg.n > len(ds.y_test):
        raise CerebError(f"attack.n={acfg.n} but the test split of task {ds.name} has only {len(ds.y_test)} images")
    ckpt = run_dir / "checkpoint.npz"
    cfg, conn, weights, net_seed, _ = load_checkpoint(ckpt)
    if conn.n_mf != ds.n_inputs:
        raise CerebError(f"the network in {run_dir} takes {conn.n_mf} inputs but task {ds.name} has {ds.n_inputs}")
    transfer_models = {}
    for tr in acfg.transfer_runs:
        tinfo = check_source_run(tr)
        tkind = tinfo["config"]["model_kind"]
        if tkind not in ("rate", "mlp"):
            raise CerebError(f"attack.transfer_runs: {tr} holds a {tkind} model; transfer sources are rate or mlp runs")
        if tinfo["config"]["task"].get("name") != ds.name:
            raise CerebError(f"attack.transfer_runs: {tr} was trained on task {tinfo['config']['task'].get('name')}, "
                             f"not {ds.name}")
        from models.rate import load as load_rate, predict_labels

        m = load_rate(tr)
        transfer_models[tkind] = (m, lambda a, m=m: predict_labels(m, np.asarray(a, dtype=np.float32)))
    x, y = ds.x_test[:acfg.n].copy(), ds.y_test[:acfg.n].copy()
    config = {"model_kind": "spiking", "source_run": f"{run_dir.parent.name}/{run_dir.name}",
              "source_config_hash": config_hash(info["config"]), **to_dict(exp)}
    if acfg.domain == "pixels":  # the spike-domain settings do not change the identity of a pixel-domain run
        config["attack"] = {k: v for k, v in config["attack"].items() if k not in SPIKE_DOMAIN_KEYS}
    from core.device import device_meta, resolve_device

    # the spiking suite (engine, surrogate, decision-based attacks) runs on the CPU; a device=cuda
    # request without a GPU still fails here, as everywhere
    resolve_device(device)
    with open_run(experiment or "attack-spiking", config, seed, root=out, force=force, argv=argv,
                  meta=device_meta(device, "cpu")) as run:
        if run.reused:
            return run
        from models.spiking.engine import SpikingEngine

        from models.rate import _torch_threads

        started = time.time()
        e = exp.engine
        bar = None
        # the surrogate's many small ops on one torch thread; the engine's workers use the cores
        with _torch_threads(1), SpikingEngine(cfg, conn, weights, 
                                              batch_size=e.copies(cfg.width), chunks_per_run=e.chunks_per_run,
                                              workers=e.workers, noise="frozen", seed=net_seed) as engine:
            try:
                bb = SpikingBlackBox(engine)
                # surrogate: calibrate on training inputs, fidelity on held-out test inputs (slot 0, frozen)
                scfg = exp.surrogate
                n_cal = min(scfg.n_calibration, len(ds.x_train))
                n_fid = min(scfg.n_fidelity, len(ds.x_test))
                zeros = lambda k: np.zeros(k, dtype=np.int64)  # noqa: E731
                p_cal = engine.predict(ds.x_train[:n_cal], slots=zeros(n_cal))
                p_fid = engine.predict(ds.x_test[:n_fid], slots=zeros(n_fid))
                sur = CerebellumSurrogate(cfg, conn, weights, scfg)
                t0 = time.time()
                rms = calibrate(sur, ds.x_train[:n_cal], spiking_rates(p_cal, cfg), seed=seed)
                fid_metrics, fid_arrays = fidelity(sur, ds.x_test[:n_fid], spiking_rates(p_fid, cfg))
                save_surrogate(run.path / "surrogate.npz", sur, str(ckpt))
                run.save_npz("fidelity.npz", **fid_arrays)
                log.info("surrogate: agreement %.3f, r(grc) %.3f, r(pc) %.3f, readout R2 %.3f (calibration %.1f s)",
                         fid_metrics["fidelity_agreement"], fid_metrics["fidelity_r_grc"], fid_metrics["fidelity_r_pc"],
                         fid_metrics["fidelity_readout_r2"], time.time() - t0)
                if acfg.domain == "spikes":
                    metrics = _spike_domain(run, engine, sur, x, y, acfg, cfg, conn, weights, net_seed, seed,
                                            progress)
                    # the network, so that the tables need not find its training run
                    run.log_metrics(**metrics, **fid_metrics, **{f"surrogate_rms_{k}_hz": v for k, v in rms.items()},
                                    source_test_accuracy=info["metrics"].get("test_accuracy"),
                                    network_width=cfg.width, network_k=cfg.k, network_ltd=cfg.ltd,
                                    network_seed=info["meta"].get("seed"),
                                    attack_wall_s=round(time.time() - started, 3))
                    return run
                if progress:
                    from tqdm.auto import tqdm

                    n_steps = 1 + acfg.noise + (acfg.fgsm + acfg.pgd) * len(acfg.losses) + acfg.apgd + acfg.pgd_l2 \
                        + len(transfer_models) + acfg.hybrid + acfg.eot_hybrid + acfg.square + len(acfg.decision) \
                        + len(acfg.decision_fresh)
                    bar = tqdm(total=n_steps, desc="spiking attacks", unit="attack")

                def tick(label):
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix_str(label)

                result = run_spiking_suite(bb, sur, x, y, acfg, seed=seed, transfer_models=transfer_models,
                                           x_pool=ds.x_train, y_pool=ds.y_train, progress=tick)
                if bar is not None:
                    bar.close()
                    bar = None
                run.write_csv("robustness.csv", result.rows, ROBUSTNESS_COLUMNS)
                run.write_csv("transfer.csv", result.transfer, ["source", "target", "attack", "loss", "eps", "n",
                                                                 "success_rate"])
                for name, arrays in result.decision.items():
                    run.save_npz(f"decision_{name}.npz", **arrays)
                run.save_npz("adversarials.npz", **result.examples)
                _write_spikes(run, cfg, conn, weights, net_seed, x, y, result)
                run.log_metrics(**result.metrics, **fid_metrics, **{f"surrogate_rms_{k}_hz": v for k, v in rms.items()},
                                source_test_accuracy=info["metrics"].get("test_accuracy"),
                                spiking_queries=int(bb.queries), spiking_wall_s=round(bb.wall_s, 2),
                                attack_wall_s=round(time.time() - started, 3))
            finally:
                if bar is not None:
                    bar.close()
    return run


def _spike_domain(run, engine, sur, x, y, acfg, cfg, conn, weights, net_seed, seed, progress) -> dict:
    """``attack.domain=spikes``: the attacks of :mod:`attacks.spikes`; writes ``robustness_spikes.csv``,
    ``spike_variability.csv``, ``stimulation.csv``, ``stimulation.nwb`` (the exported edits with the
    clean and adversarial responses) and ``spike_example.npz`` (one clean and one adversarial
    pattern, in the layout of ``spikes.npz``); returns the metrics."""
    from attacks.spikes import SPIKE_COLUMNS, STIMULATION_COLUMNS, VARIABILITY_COLUMNS, run_spike_attacks

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(y), desc="spike-domain attacks", unit="image")
    tick = (lambda label: (bar.update(1), bar.set_postfix_str(label))) if bar is not None else None
    try:
        res = run_spike_attacks(engine, sur, x, y, acfg, seed=seed, progress=tick)
    finally:
        if bar is not None:
            bar.close()
    rows = [{**r, "fooled_frozen": int(r["fooled_frozen"])} for r in res["rows"]]
    run.write_csv("robustness_spikes.csv", rows, SPIKE_COLUMNS)
    run.write_csv("spike_variability.csv", res["variability"], VARIABILITY_COLUMNS)
    run.write_csv("stimulation.csv", res["stimulation"], STIMULATION_COLUMNS)
    metrics = dict(res["metrics"])
    metrics["spike_budget_inserted"] = res["budget"].max_inserted
    metrics["spike_budget_silence_ms"] = res["budget"].silence_ms
    exported = _export_spike_edits(run, cfg, conn, weights, net_seed, x, res)
    metrics["spike_exported"] = exported
    return metrics


def _export_spike_edits(run, cfg, conn, weights, net_seed, x, res) -> int:
    """The flipped images' edits (insert and silence methods; the ``-eot`` ones first) as a stimulation
    protocol with the clean and adversarial responses, frozen trial (slot 0): ``stimulation.nwb``
    and ``spike_example.npz`` (the first of them). Returns the number of exported images."""
    from analysis.nwb import write_nwb
    from models.spiking.engine import SpikingEngine

    chosen = []
    for method in ("gradient-eot", "search-eot", "gradient", "search"):
        chosen += [(method, ex) for ex in res["examples"].get(method, [])]
    if not chosen:
        return 0
    pops = ("mf", "grc", "pc")
    dt = float(cfg.dt_ms)
    with SpikingEngine(cfg, conn, weights, workers=1, noise="frozen", seed=net_seed, record=pops) as eng:
        n_steps = eng.n_steps
        masks, xs = [], []
        for _, ex in chosen:
            xs += [x[ex["image"]], x[ex["image"]]]
            masks += [np.zeros((n_steps, conn.n_mf), np.int8), ex["edit"].mask(n_steps, conn.n_mf)]
        pred = eng.predict(np.asarray(xs, np.float64), slots=np.zeros(len(xs), np.int64), mf_edits=np.stack(masks))
    k = len(chosen)
    trials = {"pops": list(pops), "n": {"mf": conn.n_mf, "grc": conn.n_grc, "pc": conn.n_pc},
              "trains": {p: pred.spikes[p] for p in pops}, "x": np.asarray(xs),
              "trial_input": np.arange(2 * k), "trial_repeat": np.zeros(2 * k, np.int64),
              "trial_label": np.repeat([ex["label"] for _, ex in chosen], 2),
              "trial_predicted": pred.labels, "trial_noise_seed": np.full(2 * k, net_seed),
              "trial_noise_slot": np.zeros(2 * k, np.int64),
              "input_condition": np.array(["clean", "adversarial"] * k),
              "window_ms": float(cfg.window_ms), "dt_ms": dt, "readout_start_ms": float(cfg.readout_start_ms),
              "n_classes": int(conn.n_classes), "mf_rate_min_hz": float(cfg.mf_rate_min_hz),
              "mf_rate_max_hz": float(cfg.mf_rate_max_hz), "noise": "frozen", "olive": False,
              "stimulation": [None if j % 2 == 0 else chosen[j // 2][1]["edit"].as_protocol(dt) for j in range(2 * k)]}
    write_nwb(run.path / "stimulation.nwb", trials, identifier=f"{run.path.name}-stimulation",
              session_description="spike-domain adversarial edits of mossy-fibre input: per image a clean and an "
                                  "adversarial trial on the same frozen noise; the edits as a stimulation protocol",
              source="cereb attack --set attack.domain=spikes")
    method, ex = chosen[0]
    edit = ex["edit"]
    out = {"window_ms": np.float64(cfg.window_ms), "x_clean": x[ex["image"]], "x_adv": x[ex["image"]],
           "label": np.int64(ex["label"]), "image": np.int64(ex["image"]), "method": np.str_(method),
           "pred_clean": np.int64(pred.labels[0]), "pred_adv": np.int64(pred.labels[1]),
           "scores_clean": pred.scores[0], "scores_adv": pred.scores[1],
           "edit_inserted_fibre": edit.inserted[:, 0], "edit_inserted_t_ms": edit.inserted[:, 1] * dt,
           "edit_silenced_fibre": edit.silenced[:, 0], "edit_silenced_start_ms": edit.silenced[:, 1] * dt,
           "edit_silenced_stop_ms": edit.silenced[:, 2] * dt,
           "mf_rate_min_hz": np.float64(cfg.mf_rate_min_hz), "mf_rate_max_hz": np.float64(cfg.mf_rate_max_hz)}
    for pop in pops:
        out[f"n_{pop}"] = np.int64(trials["n"][pop])
        for q, cond in enumerate(("clean", "adv")):
            i, t = pred.spikes[pop][q]
            out[f"{cond}_{pop}_i"] = np.asarray(i, dtype=np.int32)
            out[f"{cond}_{pop}_t_ms"] = np.asarray(t, dtype=np.float64)
    run.save_npz("spike_example.npz", **out)
    return k


def _write_spikes(run, cfg, conn, weights, net_seed, x, y, result) -> None:
    """Spike trains of every population for one clean image and its adversarial, same noise (slot 0).

    The example is the first correctly classified image that an attack fooled with a clear
    winner (no tie at the top score), decision-based attacks first, else the hybrid; a tied
    adversarial only when there is no other. Climbing fibres come from the same inputs simulated
    with the olive on (teaching towards the true label) and plasticity off
    (:func:`models.spiking.network.simulate_with_olive`); that simulation's Purkinje spikes are
    checked against the engine's (``olive_pc_matches``).
    """
    from models.spiking.engine import SpikingEngine
    from models.spiking.network import simulate_with_olive

    candidates = []  # (x_clean, x_adv, label, tied)
    for arrays in result.decision.values():
        tied = arrays.get("tied", np.zeros(len(arrays["y"]), bool))
        ok = arrays["success"] & (arrays["pred_clean"] == arrays["y"])
        candidates += [(arrays["x_clean"][k], arrays["x_adv"][k], int(arrays["y"][k]), bool(tied[k]))
                       for k in np.flatnonzero(ok)]
    if not candidates:
        candidates = [(x[0], x[0], int(y[0]), False)]
    x0, x_adv, label, tied = next((c for c in candidates if not c[3]), candidates[0])
    with SpikingEngine(cfg, conn, weights, batch_size=2, chunks_per_run=1,
                       workers=1, noise="frozen", seed=net_seed, record=("mf", "grc", "goc", "mli", "pc")) as eng:
        pred = eng.predict(np.stack([x0, x_adv]).astype(np.float64), slots=np.zeros(2, dtype=np.int64))
        start = eng.steady_state()
    olive = simulate_with_olive(cfg, conn, weights, np.stack([x0, x_adv]), np.array([label, label]), net_seed, start)
    matches = all(np.array_equal(olive[q]["pc"][0], pred.spikes["pc"][q][0])
                  and np.allclose(olive[q]["pc"][1], pred.spikes["pc"][q][1], atol=1e-6) for q in range(2))
    if not matches:
        log.warning("the olive simulation's Purkinje spikes differ from the engine's: climbing-fibre raster not "
                    "aligned with the other populations")
    out = {"window_ms": np.float64(cfg.window_ms), "x_clean": x0, "x_adv": x_adv, "label": np.int64(label),
           "pred_clean": np.int64(pred.labels[0]), "pred_adv": np.int64(pred.labels[1]),
           "scores_clean": pred.scores[0], "scores_adv": pred.scores[1], "tied_adv": np.bool_(tied),
           "olive_pc_matches": np.bool_(matches),
           "mf_rate_min_hz": np.float64(cfg.mf_rate_min_hz), "mf_rate_max_hz": np.float64(cfg.mf_rate_max_hz)}
    sizes = {"mf": conn.n_mf, "grc": conn.n_grc, "goc": conn.n_goc, "mli": conn.n_mli, "pc": conn.n_pc, "cf": conn.n_pc}
    trains = dict(pred.spikes)
    trains["cf"] = [olive[q]["cf"] for q in range(2)]
    for pop, per_query in trains.items():
        out[f"n_{pop}"] = np.int64(sizes[pop])
        for q, cond in enumerate(("clean", "adv")):
            i, t = per_query[q]
            out[f"{cond}_{pop}_i"] = np.asarray(i, dtype=np.int32)
            out[f"{cond}_{pop}_t_ms"] = np.asarray(t, dtype=np.float64)
    run.save_npz("spikes.npz", **out)
