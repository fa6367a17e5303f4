"""Run folders: one folder per run, written atomically, with its configuration and provenance.

Layout::

    <root>/<experiment>/<timestamp>_<confighash>_s<seed>/
        config.json    fully resolved configuration
        meta.json      status (running|completed|failed|interrupted), start, end, wall_s, argv,
                       seed, config_hash, git commit and dirty flag, host, pid, versions
        metrics.json   scalar results
        *.csv          tidy tables
        *.npz          checkpoints and arrays (never pickled)
        figures/       PNG figures

A completed run with the same resolved configuration and seed is reused unless
``force=True``. An exception inside :func:`open_run` marks the run ``failed`` and is re-raised;
other run folders are never touched. A new run first takes an atomic claim on its configuration
and seed (``.claim_<hash>_s<seed>`` beside the runs, with a heartbeat), so two workers given the
same job never both compute it: the second waits and reuses the first one's result. A run whose
process died (SIGKILL, a lost node) stays ``running`` on disk until the next attempt at it, or
:func:`mark_interrupted_runs`, marks it ``interrupted`` (by pid on the same host, by the age of
its heartbeat on another).
"""
from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from core.config import config_hash
from core.errors import CerebError

log = logging.getLogger(__name__)

__all__ = [
    "Run",
    "open_run",
    "find_runs",
    "load_run",
    "atomic_write_text",
    "atomic_write_bytes",
    "write_json",
    "write_csv",
    "read_csv",
    "save_npz",
    "load_npz",
    "versions",
    "git_state",
]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_PACKAGES = ("numpy", "scipy", "brian2", "torch", "foolbox", "matplotlib")


# ----------------------------------------------------------------------------- atomic files
def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def write_csv(path: str | Path, rows: Iterable[Mapping[str, Any]], columns: list[str] | None = None) -> Path:
    """Write a tidy table: one dict per row; ``columns`` fixes the order (others follow)."""
    rows = list(rows)
    cols = list(columns or [])
    for row in rows:
        for key in row:
            if key not in cols:
                cols.append(key)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(v) for k, v in row.items()})
    return atomic_write_text(path, buf.getvalue())


def _csv_value(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, np.integer):
        return int(v)
    return v


def read_csv(path: str | Path) -> list[dict]:
    """Read a CSV written by :func:`write_csv`; numbers come back as int or float."""
    with open(path, newline="") as fh:
        return [{k: _parse_cell(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _parse_cell(v: str) -> Any:
    if v is None or v == "":
        return v
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v


def save_npz(path: str | Path, **arrays: Any) -> Path:
    """Save arrays as an uncompressed ``.npz`` (no object arrays: loadable without pickle)."""
    buf = io.BytesIO()
    clean = {}
    for name, value in arrays.items():
        arr = np.asarray(value)
        if arr.dtype == object:
            raise TypeError(f"array {name!r} has dtype object; npz checkpoints must not need pickle")
        clean[name] = arr
    np.savez(buf, **clean)
    return atomic_write_bytes(path, buf.getvalue())


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` file, with ``allow_pickle=False``."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


# ----------------------------------------------------------------------------- provenance
def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in _PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def git_state(cwd: Path = PROJECT_ROOT) -> dict[str, Any]:
    def _git(*args: str) -> str | None:
        try:
            res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return res.stdout.strip() if res.returncode == 0 else None

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": bool(status) if status is not None else None}


# ----------------------------------------------------------------------------- runs
@dataclass
class Run:
    """A run folder being written (or a completed one being reused)."""

    path: Path
    experiment: str
    config: dict
    seed: int
    config_hash: str
    reused: bool = False
    metrics: dict = field(default_factory=dict)

    @property
    def figures(self) -> Path:
        p = self.path / "figures"
        p.mkdir(exist_ok=True)
        return p

    def file(self, name: str) -> Path:
        return self.path / name

    def log_metrics(self, **values: Any) -> None:
        """Merge scalar metrics into ``metrics.json`` (rewritten atomically)."""
        self.metrics.update(values)
        write_json(self.path / "metrics.json", self.metrics)

    def write_csv(self, name: str, rows: Iterable[Mapping[str, Any]], columns: list[str] | None = None) -> Path:
        return write_csv(self.path / name, rows, columns)

    def write_json(self, name: str, obj: Any) -> Path:
        return write_json(self.path / name, obj)

    def save_npz(self, name: str, **arrays: Any) -> Path:
        return save_npz(self.path / name, **arrays)


def find_runs(root: str | Path, experiment: str | None = None) -> list[Path]:
    """All run folders (those holding ``meta.json``) under ``root[/experiment]``, sorted."""
    base = Path(root) / experiment if experiment else Path(root)
    if not base.is_dir():
        return []
    return sorted(p.parent for p in base.rglob("meta.json"))


def load_run(path: str | Path) -> dict:
    """Read a run folder: ``{"path", "config", "meta", "metrics"}`` (metrics may be empty)."""
    path = Path(path)
    out: dict[str, Any] = {"path": path}
    for name in ("config", "meta", "metrics"):
        f = path / f"{name}.json"
        try:
            out[name] = json.loads(f.read_text()) if f.exists() else {}
        except json.JSONDecodeError as exc:
            raise CerebError(f"{f} is not valid JSON: {exc}") from None
    if not out["meta"]:
        raise CerebError(f"{path} is not a run folder (no meta.json)")
    return out


# ----------------------------------------------------------------------------- claims and liveness
HEARTBEAT_S = 30.0      # a running run touches its claim file this often
STALE_AFTER_S = 600.0   # a claim from another host not touched for this long belongs to a dead process
POLL_S = 2.0            # how often a worker waiting for another one's claim looks again


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    except OSError:
        return False
    return True


def holder_alive(info: Mapping[str, Any], touched: float | None = None) -> bool:
    """Whether the process recorded in ``info`` (``host``, ``pid``) still runs: by pid on this host,
    by the heartbeat (``touched``: when its claim file was last touched) on another."""
    if info.get("host") == socket.gethostname() and info.get("pid"):
        return _pid_alive(int(info["pid"]))
    return touched is not None and time.time() - touched < STALE_AFTER_S


def mark_interrupted(path: str | Path) -> bool:
    """Mark the run folder ``path`` ``interrupted`` if its meta says ``running`` but the process that
    wrote it is gone (see :func:`holder_alive`; the heartbeat is its claim file, else its meta.json).
    Returns whether it was marked. Nothing else in the folder changes."""
    path = Path(path)
    mfile = path / "meta.json"
    try:
        meta = json.loads(mfile.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if meta.get("status") != "running":
        return False
    claim = path.parent / f".claim_{path.name.split('_', 1)[1]}"
    try:
        touched = claim.stat().st_mtime if json.loads(claim.read_text()).get("run") == path.name else None
    except (OSError, json.JSONDecodeError):
        touched = None
    if touched is None:
        try:
            touched = mfile.stat().st_mtime
        except OSError:
            touched = None
    if holder_alive(meta, touched):
        return False
    meta.update(status="interrupted",
                error=f"interrupted: process {meta.get('pid')} on {meta.get('host')} ended without finishing")
    write_json(mfile, meta)
    log.warning("marked %s interrupted (its process is gone)", path)
    return True


def mark_interrupted_runs(root: str | Path) -> list[Path]:
    """Mark every run under ``root`` left ``running`` by a dead process ``interrupted``."""
    return [p for p in find_runs(root) if mark_interrupted(p)]


class _Claim:
    """An atomic claim on one (configuration, seed) of an experiment: the file
    ``.claim_<hash>_s<seed>`` created with ``O_EXCL`` and touched every ``HEARTBEAT_S`` by a
    background thread while the run is open, so that two workers never compute the same run."""

    def __init__(self, exp_dir: Path, chash: str, seed: int):
        self.path = exp_dir / f".claim_{chash}_s{seed}"
        self._stop = None

    def try_acquire(self, run_name: str) -> bool:
        info = {"host": socket.gethostname(), "pid": os.getpid(), "run": run_name, "since": time.time()}
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump(info, fh)
        return True

    def holder(self) -> tuple[dict | None, float | None]:
        try:
            return json.loads(self.path.read_text()), self.path.stat().st_mtime
        except (OSError, json.JSONDecodeError):
            return None, None

    def break_if_stale(self) -> bool:
        """Remove the claim if its holder is dead (marking the holder's run ``interrupted``)."""
        info, touched = self.holder()
        if info is None:
            return True  # gone already (or being written: the next try decides)
        if holder_alive(info, touched):
            return False
        if info.get("run"):
            mark_interrupted(self.path.parent / info["run"])
        stale = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}")
        try:
            os.replace(self.path, stale)
            stale.unlink()
        except OSError:
            pass
        return True

    def start_heartbeat(self) -> None:
        import threading

        self._stop = threading.Event()

        def beat(stop=self._stop, path=self.path):
            while not stop.wait(HEARTBEAT_S):
                try:
                    os.utime(path)
                except OSError:
                    return

        threading.Thread(target=beat, name=f"heartbeat {self.path.name}", daemon=True).start()

    def release(self) -> None:
        if self._stop is not None:
            self._stop.set()
        try:
            self.path.unlink()
        except OSError:
            pass


def _find_completed(exp_dir: Path, chash: str, seed: int, config: dict) -> Path | None:
    if not exp_dir.is_dir():
        return None
    for cand in sorted(exp_dir.glob(f"*_{chash}_s{seed}"), reverse=True):
        try:
            meta = json.loads((cand / "meta.json").read_text())
            cfg = json.loads((cand / "config.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if meta.get("status") == "completed" and cfg == config:
            return cand
    return None


@contextlib.contextmanager
def open_run(
    experiment: str,
    config: Mapping[str, Any],
    seed: int,
    *,
    root: str | Path = "results",
    argv: list[str] | None = None,
    force: bool = False,
    meta: Mapping[str, Any] | None = None,
) -> Iterator[Run]:
    """Create (or reuse) the run folder for ``config`` and ``seed``.

    Yields a :class:`Run`; when ``run.reused`` is true a completed run with the same resolved
    configuration and seed exists and nothing should be recomputed. ``meta``: extra provenance for
    ``meta.json`` that is not part of the configuration (e.g. the device), so not of its hash.
    """
    extra_meta = dict(meta or {})
    config = json.loads(json.dumps(dict(config), default=_jsonable))
    chash = config_hash(config)
    exp_dir = Path(root) / experiment
    exp_dir.mkdir(parents=True, exist_ok=True)
    claim = _Claim(exp_dir, chash, seed)
    waited = False
    while True:
        if not force:
            existing = _find_completed(exp_dir, chash, seed, config)
            if existing is not None:
                log.info("reusing completed run %s", existing)
                run = Run(existing, experiment, config, seed, chash, reused=True)
                mfile = existing / "metrics.json"
                run.metrics = json.loads(mfile.read_text()) if mfile.exists() else {}
                yield run
                return
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = exp_dir / f"{stamp}_{chash}_s{seed}"
        n = 1
        while path.exists():
            path = exp_dir / f"{stamp}-{n}_{chash}_s{seed}"
            n += 1
        if claim.try_acquire(path.name):
            break
        if claim.break_if_stale():
            continue
        if not waited:  # another live worker computes this very run: wait for it, then reuse it
            holder, _ = claim.holder()
            log.info("waiting for %s (pid %s on %s), which computes the same run", (holder or {}).get("run"),
                     (holder or {}).get("pid"), (holder or {}).get("host"))
            waited = True
        force = False  # what the other worker finishes is as fresh as a forced recomputation
        time.sleep(POLL_S)
    try:
        # earlier attempts at this run whose process died are marked, not left 'running'
        for old in exp_dir.glob(f"*_{chash}_s{seed}"):
            mark_interrupted(old)
        path.mkdir()
    except BaseException:
        claim.release()
        raise
    claim.start_heartbeat()
    started = time.time()
    meta = {
        **extra_meta,
        "status": "running",
        "experiment": experiment,
        "start": _dt.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
        "end": None,
        "wall_s": None,
        "argv": list(sys.argv if argv is None else argv),
        "seed": seed,
        "config_hash": chash,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "platform": platform.platform(),
        "versions": versions(),
        **git_state(),
    }
    try:
        write_json(path / "config.json", config)
        write_json(path / "meta.json", meta)
        run = Run(path, experiment, config, seed, chash)
        try:
            yield run
        except BaseException as exc:
            meta.update(
                status="failed",
                end=_dt.datetime.now().isoformat(timespec="seconds"),
                wall_s=round(time.time() - started, 3),
                error=f"{type(exc).__name__}: {exc}",
            )
            write_json(path / "meta.json", meta)
            raise
        meta.update(
            status="completed",
            end=_dt.datetime.now().isoformat(timespec="seconds"),
            wall_s=round(time.time() - started, 3),
        )
        if not (path / "metrics.json").exists():
            write_json(path / "metrics.json", run.metrics)
        write_json(path / "meta.json", meta)
    finally:
        claim.release()
