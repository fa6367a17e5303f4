"""Studies: a grid of configurations, each trained and attacked, run by an executor, resumably.

The study file format is described in :mod:`scripts.study` (``cereb study --help``).
:func:`load_study` expands a file into jobs, :func:`run_job` trains and attacks one job (in any
process: a worker of the local pool, a Dask worker, or a cluster array task via ``--job``), and
:func:`run_study` runs them all with the ``local`` process pool (the default) or on
``dask.distributed`` (a ``LocalCluster`` of ``jobs`` workers, or the scheduler at an address),
every worker writing its run folders under one shared ``out``. Completed runs are reused, two
workers given the same job never both compute it (:mod:`core.runs` claims), and runs left
``running`` by a dead process are marked ``interrupted`` before they are redone.
"""
from __future__ import annotations

import csv
import itertools
import logging
import os
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Mapping

from core.errors import CerebError, ConfigError

EXECUTORS = ("local", "dask")

log = logging.getLogger("cereb.study")

TOP_KEYS = {"name", "description", "model_kind", "seeds", "base", "grid", "variants", "attack", "spiking_attack",
            "train_experiment", "attack_experiment"}
STUDY_COLUMNS = ["label", "model_kind", "seed", "status", "train_run", "test_accuracy", "attack_run",
                 "clean_accuracy", "robust_acc_pgd_mse_eps0.1", "robust_acc_strong_eps0.1",
                 "strong_eps_at_target", "robust_acc_worst_eps0.1", "checks_passed", "evidence", "train_reused", "attack_reused",
                 "wall_s", "error"]


# ----------------------------------------------------------------------------- study files
def unflatten(d: Mapping) -> dict:
    """``{"model.width": 5, "task": {"name": "x"}}`` -> ``{"model": {"width": 5}, "task": {"name": "x"}}``."""
    from core.config import merge_overrides

    out: dict = {}
    for key, value in d.items():
        if isinstance(value, Mapping):
            value = unflatten(value)
        node: Any = value
        for part in reversed(str(key).split(".")):
            node = {part: node}
        out = merge_overrides(out, node)
    return out


def _label(point: Mapping) -> str:
    return ",".join(f"{k.split('.')[-1]}={v}" for k, v in point.items())


def load_study(path: str | Path, data_dir: str | None = None) -> dict:
    """Read and expand a study file: ``{"name", "description", "jobs": [...], "attack": {...} | None}``.

    Every job is ``{"label", "model_kind", "seed", "overrides"}``; every configuration is resolved
    (so an unknown key fails here, before anything runs).
    """
    from core.config import flatten, load_overrides, merge_overrides, resolve
    from core.device import pop_device
    from scripts.train import experiment_config_class

    path = Path(path)
    spec = load_overrides(path)
    unknown = sorted(set(spec) - TOP_KEYS)
    if unknown:
        raise ConfigError(f"study file {path}: unknown key '{unknown[0]}' (known: {', '.join(sorted(TOP_KEYS))})")
    name = str(spec.get("name") or path.stem)
    default_kind = spec.get("model_kind", "rate")
    seeds = spec.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"study file {path}: seeds must be a non-empty list of integers, got {seeds!r}")
    base = unflatten(spec.get("base") or {})
    grid = spec.get("grid") or {}
    if not isinstance(grid, Mapping) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ConfigError(f"study file {path}: grid must map keys to non-empty lists")
    variants = spec.get("variants") or [{}]
    if not isinstance(variants, list) or not all(isinstance(v, Mapping) for v in variants):
        raise ConfigError(f"study file {path}: variants must be a list of mappings")
    attack = spec.get("attack", {})
    if attack is False or attack is None:
        attack = None
    elif not isinstance(attack, Mapping):
        raise ConfigError(f"study file {path}: attack must be a mapping of attack.* overrides, or false")
    else:
        from attacks.experiment import resolve_attack_config

        resolve_attack_config({"attack": dict(attack)})  # validate now

    spiking_attack = spec.get("spiking_attack", {})
    if spiking_attack is False or spiking_attack is None:
        spiking_attack = None
    elif not isinstance(spiking_attack, Mapping):
        raise ConfigError(f"study file {path}: spiking_attack must be a mapping of attack.*/surrogate.*/engine.* "
                          "overrides, or false")
    else:
        from attacks.spiking import SpikingAttackExperiment
        from core.config import resolve as _resolve

        spiking_attack = unflatten(spiking_attack)
        try:
            _resolve(SpikingAttackExperiment, spiking_attack)  # validate now
        except ValueError as exc:
            raise ConfigError(f"study file {path}: spiking_attack: {exc}") from None

    keys = list(grid)
    points = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))] or [{}]
    jobs = []
    for variant in variants:
        variant = dict(variant)
        vlabel = variant.pop("label", None)
        kind = variant.pop("model_kind", default_kind)
        vseeds = variant.pop("seeds", seeds)
        if not isinstance(vseeds, list) or not vseeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                                 for s in vseeds):
            raise ConfigError(f"study file {path}: a variant's seeds must be a non-empty list of integers, "
                              f"got {vseeds!r}")
        for point in points:
            overrides = merge_overrides(base, unflatten(point), unflatten(variant))
            if data_dir and not overrides.get("task", {}).get("data_dir"):
                overrides = merge_overrides(overrides, {"task": {"data_dir": data_dir}})
            try:
                rest, device = pop_device(overrides)
                if device.strip().lower() not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
                    raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
                resolve(experiment_config_class(kind), rest)
            except CerebError as exc:
                raise ConfigError(f"study file {path}, variant {vlabel or _label(point) or kind}: {exc}") from None
            label = " ".join(p for p in (vlabel or _label(flatten(unflatten(variant))), _label(point)) if p) or kind
            for seed in vseeds:
                jobs.append({"label": label, "model_kind": kind, "seed": seed, "overrides": overrides})
    return {"name": name, "description": spec.get("description", ""), "jobs": jobs, "attack": attack,
            "spiking_attack": spiking_attack,
            "train_experiment": spec.get("train_experiment"), "attack_experiment": spec.get("attack_experiment")}


def check_tasks(study: dict) -> None:
    """Load each distinct task of the study once, so bad data fails before any job starts."""
    import json

    from core.config import resolve
    from tasks import TaskConfig, load_task

    seen = set()
    for job in study["jobs"]:
        task = job["overrides"].get("task", {})
        key = json.dumps(task, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            ds = load_task(resolve(TaskConfig, task))
            n_test = len(ds.y_test)
            for section, n in (("attack", (study.get("attack") or {}).get("n")),
                               ("spiking_attack", ((study.get("spiking_attack") or {}).get("attack") or {}).get("n"))):
                if isinstance(n, int) and n > n_test:
                    raise ConfigError(f"study {study.get('name', '')}: {section} attack.n={n} but the test split of task "
                                      f"{ds.name} has only {n_test} images")


def job_cost(job: Mapping) -> float:
    """Rough relative cost, to start the most expensive jobs first."""
    model = job["overrides"].get("model", {})
    if job["model_kind"] == "spiking":
        return 1e12 + float(model.get("width", 2000))
    if job["model_kind"] != "rate":
        return 784 * 50
    width = float(model.get("width", 5000))
    if model.get("granule", "fc") == "fc":
        return width * 784
    return width * max(float(model.get("k", 4)), 50.0)


# ----------------------------------------------------------------------------- cost estimate
# A rough cost model for ``--dry-run`` (core-seconds per job: a job's wall time when jobs run two at
# a time on 2 cores), fitted to the answer study's runs on a 2-core AMD EPYC (AVX-512) on
# 3 December 2026 (the compiled kernel engine, the Newton/Anderson surrogate); expect +-50% elsewhere:
# - spiking training: width 2,000: 248-277 s, width 4,000: 457 s (12 epochs of 1,438 samples and
#   359 evaluation samples): ~80 s of build and calibration plus 4.3 us per granule cell and sample
#   of 100 ms (the standalone trainer is one thread; the other job shares the memory bus);
# - spiking attack: ~60 s of surrogate calibration, then ~2.0 us per granule cell per simulated
#   query, the surrogate's gradient steps included (width 2,000: 653 s for 149,966 queries; width
#   4,000: 1,318 s for 157,527; ~430 queries per image in the answer study's suite);
# - rate attack, dense granule matrix: refitted to the paper-protocol width sweep (MNIST, 1,000
#   images, batch size 1, one core each; Dec 2026): width x inputs x images, times
#   max(1, width / 10,000) ** 0.4 (wider readouts leave more images to the strong evaluation after
#   the paper's attacks, and a wide matrix reaches a smaller fraction of the matmul rate), times 1.4
#   with LTD at batch size 1 (its MSE-PGD prunes almost nothing), plus ~60 s of start-up. Without
#   LTD: 10,000: 153-197 s (model 217 s); 20,000: 379-429 s (model 474 s); 50,000: 1,276-1,505 s
#   (1,552 s); 100,000: 4,244 s (3,999 s). With LTD: 20,000: 571-661 s (639 s); 50,000: 1,962 s
#   (2,148 s). A small-K gather layer (16 K < inputs) is evaluated block
#   by block instead (models.rate._BlockedGatherHead), bound by memory traffic (a second thread
#   barely helps): ~1.85 us per granule cell x (K + 0.4) per attacked image, with or without LTD,
#   refitted on 8 Dec 2026 to the paper-protocol runs on 1,000 images (7-8 Dec 2026, a 2-core AMD
#   EPYC with AVX-512; LTD at batch size 1 unless said): K = 1 at width 228,571: 593 s (model
#   592 s); K = 2 at 218,182: 908 s (969 s); K = 4 at
#   200,000 without LTD: 1,993 s at batch size 1, 1,911 s at 16 on 2 threads alone (1,628 s);
#   K = 10 at 160,000: 2,917 s (3,078 s); K = 20 at 120,000: 4,147 s (4,529 s); rate
#   training under the paper's protocol: the batch-size-1 loop, ~2.4e-8 s per granule cell, sample
#   and epoch (width 228,571, 8,000 images, 10 epochs: 415-470 s).
_TASK_SIZE = {"digits": (1438, 359, 64)}


def _task_size(task: Mapping) -> tuple[int, int, int]:
    name = task.get("name", "digits")
    if name == "mnist":
        n_in = int(task.get("image_size", 28)) ** 2
        size = (int(task.get("mnist_train_size", 8000)), 10000 - int(task.get("mnist_train_size", 8000)), n_in)
    elif name == "patterns":
        size = (int(task.get("n_patterns", 200)) * 4, int(task.get("n_patterns", 200)), int(task.get("dim", 64)))
    else:
        size = _TASK_SIZE["digits"]
    n_train = task.get("n_train") or size[0]
    n_test = task.get("n_test") or size[1]
    return int(n_train), int(n_test), size[2]


def estimate_cost(job: Mapping, attack: Mapping | None, spiking_attack: Mapping | None) -> tuple[float, float]:
    """``(train, attack)`` core-seconds of one job, from the rough model above."""
    model = job["overrides"].get("model", {})
    train = job["overrides"].get("train", {})
    n_train, n_test, n_in = _task_size(job["overrides"].get("task", {}))
    if job["model_kind"] == "spiking":
        width = float(model.get("width", 2000))
        epochs = int(train.get("epochs", 12))
        t_train = 80.0 + 4.3e-6 * width * epochs * (n_train + n_test)
        if spiking_attack is None:
            return t_train, 0.0
        a = spiking_attack.get("attack", {})
        n = min(int(a.get("n", 100)), n_test)
        steps, reps = int(a.get("hybrid_steps", 40)), int(a.get("fresh_repeats", 5))
        eps = [float(e) for e in a.get("eps", (0.0, 0.05, 0.1, 0.15, 0.2, 0.3))]
        fresh = [float(e) for e in a.get("fresh_eps", (0.0, 0.1, 0.2))]
        eot = sum(e > 0 and any(abs(e - f) < 1e-9 for f in eps) for e in fresh) if a.get("eot_hybrid", True) else 0
        # queries per image: the hybrid (~half its steps per eps), the EOT hybrid (~0.8 of steps x
        # repeats per fresh eps), the fresh-noise scoring of ~4 attacks, the decision-based attacks
        queries = len(eps) * steps / 2 + 0.8 * eot * steps * reps + 4 * reps * len(fresh)
        mq = int(a.get("max_queries", 1000))
        queries += len(a.get("decision", ("hsja-l2", "hsja-linf"))) * mq
        queries += len(a.get("decision_fresh", ("hsja-linf",))) * mq * reps
        return t_train, 60.0 + 2.0e-6 * width * n * queries
    width = float(model.get("width" if job["model_kind"] == "rate" else "hidden", 5000 if job["model_kind"] == "rate" else 50))
    t_train = 5.0 + 2.4e-8 * width * n_train * int(train.get("epochs", 10))
    if attack is None:
        return t_train, 0.0
    n = min(int(attack.get("n", 1000)), n_test)
    k = int(model.get("k", 4))
    from models.rate import gathers  # the layer's own rule for a gather or a dense product

    if job["model_kind"] == "rate" and gathers(None if model.get("granule", "fc") == "fc" else k, n_in):
        return t_train, 5.0 + 1.85e-6 * width * (k + 0.4) * n  # the blocked gather path
    ltd = 1.4 if model.get("ltd", "none") != "none" and int(train.get("batch_size", 16)) == 1 else 1.0
    # a dense granule matrix (fc, or K >= inputs / 16)
    return t_train, 60.0 + 2.0e-8 * width * n_in * n * max(1.0, width / 1e4) ** 0.4 * ltd


def train_config_hash(job: Mapping) -> str:
    """The configuration hash of the training run that ``job`` makes (as :func:`train_job` names it)."""
    from core.config import config_hash, resolve, to_dict
    from core.device import pop_device
    from scripts.train import experiment_config_class

    overrides, _ = pop_device(dict(job["overrides"]))
    cfg = resolve(experiment_config_class(job["model_kind"]), overrides)
    return config_hash({"model_kind": job["model_kind"], **to_dict(cfg)})


def committed_jobs(study: dict, table: str | Path) -> list[dict]:
    """The jobs of ``study`` that a committed table already holds.

    Two tables are read: a findings table (``docs/findings_runs.csv``, written by ``cereb report
    ROOT --findings``) holds a job when a row has the same model kind, training configuration hash
    and seed, with an attack run on as many images as the study attacks; a replication table
    (``docs/replication_runs.csv``, ``cereb report ROOT --replication``) holds a rate-model or MLP
    job when a row's training run carries the job's configuration hash and seed (its attack runs
    are the paper studies' evaluation on 1,000 images; the table does not record the number).

    A study spread over sessions on fresh machines (``results/`` is not kept) skips them instead
    of redoing them; ``cereb report`` merges the new runs into that table."""
    path = Path(table)
    if not path.is_file():
        raise CerebError(f"--skip-committed: no committed table at {path}")
    with open(path, newline="") as fh:
        header = set(next(csv.reader(fh), []))
    if "config_hash" not in header and {"granule", "train_run"} <= header:  # a findings table names the hash
        return _replication_held(study, path)
    from analysis.findings import read_runs
    from core.config import resolve
    from tasks import TaskConfig, load_task

    try:
        rows = read_runs(path)
    except ValueError as exc:
        raise CerebError(f"--skip-committed: {exc} (nor a replication table)") from None
    held = {}
    for r in rows:
        if r.get("attack_run") not in (None, ""):
            held[(str(r["model_kind"]), str(r["config_hash"]), int(r["seed"]))] = r
    n_test: dict[str, int] = {}
    out = []
    for job in study["jobs"]:
        r = held.get((job["model_kind"], train_config_hash(job), int(job["seed"])))
        if r is None:
            continue
        section = (study.get("spiking_attack") or {}).get("attack") if job["model_kind"] == "spiking" else study.get("attack")
        n = (section or {}).get("n")
        if n is not None and r.get("n_images") not in (None, ""):
            task = job["overrides"].get("task", {})
            key = repr(sorted(task.items()))
            if key not in n_test:
                n_test[key] = len(load_task(resolve(TaskConfig, task)).y_test)
            if int(float(r["n_images"])) != min(int(n), n_test[key]):
                continue  # attacked on another number of images: not this study's evaluation
        out.append(job)
    return out


def _replication_held(study: dict, path: Path) -> list[dict]:
    """The rate/MLP jobs of ``study`` whose training hash and seed a replication table's
    ``train_run`` names (``<stamp>_<hash>_s<seed>``) with an attack run beside it."""
    from analysis.replication import read_table

    try:
        rows = read_table(path)
    except (ValueError, KeyError) as exc:
        raise CerebError(f"--skip-committed: {exc}") from None
    held = set()
    for r in rows:
        parts = str(r.get("train_run") or "").rsplit("_", 2)
        if len(parts) == 3 and parts[2] == f"s{r['seed']}" and str(r.get("attack_run") or ""):
            held.add((parts[1], int(r["seed"])))
    return [job for job in study["jobs"]
            if job["model_kind"] in ("rate", "mlp") and (train_config_hash(job), int(job["seed"])) in held]


# ----------------------------------------------------------------------------- one job
def train_job(kind: str, overrides: dict, seed: int, *, out: str, force: bool, experiment: str | None = None,
              progress: bool = False):
    """Train (or reuse) one configuration, exactly as ``cereb train`` would; returns the Run."""
    from core.config import resolve, to_dict
    from core.device import device_meta, pop_device, resolve_device
    from core.runs import open_run
    from models.registry import model_module
    from scripts.train import TORCH_MODELS, experiment_config_class
    from tasks import load_task

    overrides, device_spec = pop_device(overrides)
    device = resolve_device(device_spec)
    cfg = resolve(experiment_config_class(kind), overrides)
    ds = load_task(cfg.task)
    config = {"model_kind": kind, **to_dict(cfg)}
    used = device if kind in TORCH_MODELS else "cpu"
    with open_run(experiment or kind, config, seed, root=out, force=force, meta=device_meta(device_spec, used)) as run:
        if not run.reused:
            kw = {"device": device} if kind in TORCH_MODELS else {}
            metrics = model_module(kind).fit(kind, ds, cfg.model, cfg.train, seed, run, progress=progress, **kw)
            run.log_metrics(**metrics)
    return run


def _terminate(signum, frame):
    # one signal is enough: a second one (the study's own terminate() after a SIGTERM to the whole
    # process group) must not interrupt the way out, where the open run is marked 'failed'
    signal.signal(signum, signal.SIG_IGN)
    raise SystemExit(f"terminated by signal {signum}")


def run_job(job: dict) -> dict:
    """Train and attack one job (called in a worker process); never raises."""
    started = time.time()
    threads = job.get("threads")
    if threads:
        import torch

        torch.set_num_threads(threads)
    if job.get("worker"):
        logging.basicConfig(level=logging.WARNING, force=True)
        # a terminated worker marks its open run 'failed' (open_run sees the exception) instead of
        # leaving it 'running' forever (a Dask task runs in a worker thread: no handler there)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _terminate)
    summary = {"label": job["label"], "model_kind": job["model_kind"], "seed": job["seed"], "status": "ok", "error": ""}
    device = job["overrides"].get("device", "auto")
    try:
        run = train_job(job["model_kind"], job["overrides"], job["seed"], out=job["out"], force=job["force"],
                        experiment=job.get("train_experiment"))
        summary.update(train_run=str(run.path), test_accuracy=run.metrics.get("test_accuracy"), train_reused=run.reused)
        if job["model_kind"] == "spiking" and job.get("spiking_attack") is not None:
            from attacks.spiking import SpikingAttackExperiment
            from core.config import resolve
            from attacks.experiment import spiking_attack_run

            exp = resolve(SpikingAttackExperiment, job["spiking_attack"])
            arun = spiking_attack_run(run.path, exp, seed=job["seed"], out=job["out"], force=job["force"],
                                      experiment=job.get("attack_experiment"), device=device)
            m = arun.metrics
            summary.update(attack_run=str(arun.path), attack_reused=arun.reused, clean_accuracy=m.get("clean_accuracy"),
                           checks_passed=m.get("checks_passed"))
            summary["robust_acc_worst_eps0.1"] = m.get("robust_acc_worst_eps0.1")
        elif job["model_kind"] != "spiking" and job.get("attack") is not None:
            from attacks.experiment import attack_run, resolve_attack_config

            cfg = resolve_attack_config({"attack": job["attack"]})
            arun = attack_run(run.path, cfg, seed=job["seed"], out=job["out"], force=job["force"],
                              experiment=job.get("attack_experiment"), device=device)
            m = arun.metrics
            summary.update(attack_run=str(arun.path), attack_reused=arun.reused, clean_accuracy=m.get("clean_accuracy"),
                           checks_passed=m.get("checks_passed"), evidence=m.get("evidence"),
                           strong_eps_at_target=m.get("strong_eps_at_target"))
            for key in ("robust_acc_pgd_mse_eps0.1", "robust_acc_strong_eps0.1", "robust_acc_worst_eps0.1"):
                summary[key] = m.get(key)
    except BaseException as exc:  # a failed job must not stop the others
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            if job.get("worker") and threading.current_thread() is threading.main_thread():
                # a terminated pool worker (SIGTERM to the study's process group) has marked its run
                # 'failed' on the way out; it must not go on to the next job (the pool hands a task's
                # exception back and keeps the worker), so it leaves now
                logging.getLogger("cereb.study").warning("job %s seed %s: %s", job["label"], job["seed"], exc)
                os._exit(143)
            raise
        summary.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        logging.getLogger("cereb.study").debug("job failed:\n%s", traceback.format_exc())
    summary["wall_s"] = round(time.time() - started, 3)
    return summary


# ----------------------------------------------------------------------------- the command
def _run_local(todo: list[dict], jobs: int, done) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    if jobs == 1:
        for job in todo:
            done(run_job(job))
        return
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"))
    try:
        futures = [pool.submit(run_job, job) for job in todo]
        for fut in as_completed(futures):
            done(fut.result())
    except BaseException:
        # stop the workers too (each marks its open run 'failed'), without waiting for them
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _run_dask(todo: list[dict], jobs: int, scheduler: str | None, done) -> None:
    """The jobs as Dask tasks: on the scheduler at ``scheduler``, or on a ``LocalCluster`` of
    ``jobs`` single-threaded worker processes. Every task returns its summary."""
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError as exc:  # pragma: no cover - a pinned dependency
        raise CerebError(f"--executor dask needs dask.distributed ({exc})") from None
    cluster = None
    try:
        if scheduler:
            try:
                client = Client(scheduler, timeout="30s")
            except (OSError, TimeoutError) as exc:
                raise CerebError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        else:
            cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=None,
                                   silence_logs=logging.WARNING)
            client = Client(cluster)
        with client:
            futures = [client.submit(run_job, job, key=f"cereb-job-{i}-{job['label']}-s{job['seed']}", pure=False)
                       for i, job in enumerate(todo)]
            try:
                for fut in as_completed(futures):
                    done(fut.result())
            except BaseException:
                client.cancel(futures)
                raise
    finally:
        if cluster is not None:
            cluster.close()


def run_study(study: dict, *, jobs: int, out: str, force: bool, progress: bool = True, argv: list[str] | None = None,
              executor: str = "local", scheduler: str | None = None, skip: list[dict] | None = None):
    """Run every job of ``study`` (from :func:`load_study`); returns ``(study_run, summaries)``.

    ``executor``: ``local`` (a process pool of ``jobs`` workers) or ``dask`` (see :func:`_run_dask`).
    Both give the same summaries; runs left ``running`` under ``out`` by a dead process are
    marked ``interrupted`` first, and redone. ``skip``: jobs not to run (from :func:`committed_jobs`);
    ``study.csv`` lists them with status ``committed``.
    """
    from tqdm.auto import tqdm

    from core.runs import mark_interrupted_runs, open_run

    if jobs < 1:
        raise CerebError(f"--jobs must be >= 1, got {jobs}")
    if executor not in EXECUTORS:
        raise CerebError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if scheduler and executor != "dask":
        raise CerebError("--scheduler needs --executor dask")
    marked = mark_interrupted_runs(out)
    if marked:
        log.warning("%d run(s) left 'running' by a dead process marked interrupted; they are redone", len(marked))
    from core.device import usable_cores

    threads = max(1, usable_cores() // jobs)
    # seed by seed (a study stopped part-way holds every configuration at the first seeds, which is
    # what a study spread over several sessions needs), the most expensive jobs first within a seed
    seed_rank = {s: i for i, s in enumerate(dict.fromkeys(j["seed"] for j in study["jobs"]))}
    skipped = {(j["label"], j["seed"]) for j in (skip or [])}
    todo = sorted(
        ({**job, "out": out, "force": force, "attack": study["attack"], "spiking_attack": study.get("spiking_attack"),
          "threads": threads, "worker": jobs > 1 or executor == "dask",
          "train_experiment": study["train_experiment"], "attack_experiment": study["attack_experiment"]}
         for job in study["jobs"] if (job["label"], job["seed"]) not in skipped),
        key=lambda job: (seed_rank[job["seed"]], -job_cost(job)),
    )
    config = {"name": study["name"], "description": study["description"], "attack": study["attack"],
              "spiking_attack": study.get("spiking_attack"),
              "jobs": [{k: j[k] for k in ("label", "model_kind", "seed", "overrides")} for j in study["jobs"]]}
    summaries: list[dict] = []
    with open_run(f"study-{study['name']}", config, 0, root=out, force=force, argv=argv) as srun:
        if srun.reused:
            from core.runs import read_csv

            return srun, read_csv(srun.path / "study.csv")
        started = time.time()
        summaries.extend({"label": j["label"], "model_kind": j["model_kind"], "seed": j["seed"], "status": "committed",
                          "error": ""} for j in study["jobs"] if (j["label"], j["seed"]) in skipped)
        if skipped:
            log.info("%d job(s) held by the committed findings table are not run", len(skipped))
        bar = tqdm(total=len(todo), desc=f"study {study['name']}", unit="run", disable=not progress)

        def done(summary: dict) -> None:
            summaries.append(summary)
            bar.update(1)
            state = "reused" if summary.get("train_reused") and summary.get("attack_reused", True) else summary["status"]
            acc = summary.get("test_accuracy")
            msg = f"{summary['label']} seed {summary['seed']}: {state}"
            if acc is not None:
                msg += f", test acc {acc:.4f}"
            if summary["status"] != "ok":
                msg += f" ({summary['error']})"
            if progress:
                bar.write(msg)
            else:
                log.info(msg)
            srun.write_csv("study.csv", summaries, STUDY_COLUMNS)

        previous = signal.signal(signal.SIGTERM, _terminate)  # so that this run is marked 'failed'
        try:
            if executor == "dask":
                _run_dask(todo, jobs, scheduler, done)
            else:
                _run_local(todo, jobs, done)
        finally:
            signal.signal(signal.SIGTERM, previous)
        bar.close()
        order = {(j["label"], j["seed"]): i for i, j in enumerate(study["jobs"])}
        summaries.sort(key=lambda s: order.get((s["label"], s["seed"]), 0))
        srun.write_csv("study.csv", summaries, STUDY_COLUMNS)
        n_failed = sum(s["status"] not in ("ok", "committed") for s in summaries)
        srun.log_metrics(n_jobs=len(summaries), n_failed=n_failed, jobs=jobs, executor=executor,
                         study_wall_s=round(time.time() - started, 3),
                         n_checks_failed=sum(s.get("checks_passed") is False for s in summaries))
        if n_failed:
            raise CerebError(f"{n_failed} of {len(summaries)} jobs failed (see {srun.path / 'study.csv'})")
    return srun, summaries


