"""Run folders: written atomically, with provenance; reused when complete; marked when failed."""
from __future__ import annotations

import datetime as dt
import json
import platform
import re
import socket
from pathlib import Path

import numpy as np
import pytest

from core.config import config_hash
from core.errors import CerebError
from core.runs import (
    PROJECT_ROOT,
    atomic_write_text,
    find_runs,
    git_state,
    load_npz,
    load_run,
    open_run,
    read_csv,
    save_npz,
    write_csv,
    write_json,
)

CONFIG = {"model": {"width": 10, "sizes": (3, 4)}, "task": {"name": "digits"}}
ARGV = ["cereb", "train", "--seed", "3"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp-" in p.name]


def completed_run(root: Path, config=CONFIG, seed: int = 3, **metrics) -> Path:
    with open_run("exp", config, seed, root=root, argv=ARGV) as run:
        run.log_metrics(**metrics)
    return run.path


# ----------------------------------------------------------------------------- open_run
def test_open_run_writes_config_meta_and_metrics(tmp_path):
    with open_run("exp", CONFIG, 3, root=tmp_path, argv=ARGV) as run:
        assert not run.reused
        meta = json.loads((run.path / "meta.json").read_text())
        assert meta["status"] == "running" and meta["end"] is None
        run.log_metrics(acc=0.75, n=np.int64(12))
        run.log_metrics(loss=np.float32(0.5))
    chash = config_hash(json.loads(json.dumps(CONFIG)))
    assert run.config_hash == chash
    assert run.path.parent == tmp_path / "exp"
    assert re.fullmatch(rf"\d{{8}}-\d{{6}}(-\d+)?_{chash}_s3", run.path.name)

    config = json.loads((run.path / "config.json").read_text())
    assert config == {"model": {"width": 10, "sizes": [3, 4]}, "task": {"name": "digits"}}
    assert json.loads((run.path / "metrics.json").read_text()) == {"acc": 0.75, "n": 12, "loss": 0.5}

    meta = json.loads((run.path / "meta.json").read_text())
    assert meta["status"] == "completed" and "error" not in meta
    assert meta["experiment"] == "exp"
    start, end = dt.datetime.fromisoformat(meta["start"]), dt.datetime.fromisoformat(meta["end"])
    assert start <= end
    assert isinstance(meta["wall_s"], float) and 0 <= meta["wall_s"] < 60
    assert meta["argv"] == ARGV
    assert meta["seed"] == 3
    assert meta["config_hash"] == chash
    assert meta["host"] == socket.gethostname()
    assert meta["git_commit"] == git_state()["git_commit"]
    if (PROJECT_ROOT / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}", meta["git_commit"])
        assert isinstance(meta["git_dirty"], bool)
    versions = meta["versions"]
    for pkg in ("python", "numpy", "brian2", "torch", "foolbox"):
        assert pkg in versions
    assert versions["python"] == platform.python_version()
    assert versions["numpy"] == np.__version__
    assert temp_files(tmp_path) == []


def test_metrics_json_is_written_even_without_metrics(tmp_path):
    with open_run("exp", CONFIG, 0, root=tmp_path, argv=[]) as run:
        pass
    assert json.loads((run.path / "metrics.json").read_text()) == {}


def test_argv_defaults_to_sys_argv(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["prog", "--flag"])
    with open_run("exp", CONFIG, 0, root=tmp_path) as run:
        pass
    assert json.loads((run.path / "meta.json").read_text())["argv"] == ["prog", "--flag"]


def test_completed_run_is_reused_unless_forced(tmp_path):
    first = completed_run(tmp_path, acc=0.9)
    before = snapshot(first)
    with open_run("exp", dict(CONFIG), 3, root=tmp_path, argv=["other"]) as run:
        assert run.reused and run.path == first
        assert run.metrics == {"acc": 0.9}
    assert snapshot(first) == before  # reuse touches nothing
    assert find_runs(tmp_path, "exp") == [first]

    with open_run("exp", CONFIG, 3, root=tmp_path, argv=ARGV, force=True) as forced:
        assert not forced.reused
    assert forced.path != first
    assert sorted(find_runs(tmp_path, "exp")) == sorted([first, forced.path])
    assert snapshot(first) == before


def test_another_seed_or_config_is_a_new_run(tmp_path):
    first = completed_run(tmp_path)
    with open_run("exp", CONFIG, 4, root=tmp_path, argv=ARGV) as other_seed:
        assert not other_seed.reused
    changed = {"model": {"width": 11, "sizes": (3, 4)}, "task": {"name": "digits"}}
    with open_run("exp", changed, 3, root=tmp_path, argv=ARGV) as other_config:
        assert not other_config.reused
    assert other_config.config_hash != config_hash(json.loads(json.dumps(CONFIG)))
    assert len({first, other_seed.path, other_config.path}) == 3


def test_exception_marks_the_run_failed_and_reraises(tmp_path):
    earlier = completed_run(tmp_path, acc=0.9)
    before = snapshot(earlier)
    with pytest.raises(RuntimeError, match="boom"):
        with open_run("exp", CONFIG, 3, root=tmp_path, argv=ARGV, force=True) as run:
            run.log_metrics(partial=1)
            raise RuntimeError("boom")
    assert run.path != earlier
    meta = json.loads((run.path / "meta.json").read_text())
    assert meta["status"] == "failed"
    assert meta["error"] == "RuntimeError: boom"
    assert meta["end"] is not None and meta["wall_s"] >= 0
    assert snapshot(earlier) == before  # the earlier completed run is byte-identical
    assert temp_files(tmp_path) == []

    # the failed run is never reused; the completed one still is
    with open_run("exp", CONFIG, 3, root=tmp_path, argv=ARGV) as again:
        assert again.reused and again.path == earlier


def test_exception_inside_a_reused_run_changes_nothing(tmp_path):
    earlier = completed_run(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="late"):
        with open_run("exp", CONFIG, 3, root=tmp_path, argv=ARGV) as run:
            assert run.reused
            raise ValueError("late")
    assert snapshot(tmp_path) == before
    assert json.loads((earlier / "meta.json").read_text())["status"] == "completed"


def test_only_a_failed_run_means_a_fresh_run(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with open_run("exp", CONFIG, 3, root=tmp_path, argv=ARGV) as failed:
            raise KeyboardInterrupt
    assert json.loads((failed.path / "meta.json").read_text())["status"] == "failed"
    with open_run("exp", CONFIG, 3, root=tmp_path, argv=ARGV) as run:
        assert not run.reused
    assert run.path != failed.path
    assert json.loads((run.path / "meta.json").read_text())["status"] == "completed"


def test_run_helpers_write_inside_the_run_folder(tmp_path):
    with open_run("exp", CONFIG, 0, root=tmp_path, argv=[]) as run:
        run.write_csv("table.csv", [{"a": 1}])
        run.write_json("extra.json", {"x": np.arange(3)})
        run.save_npz("ckpt.npz", w=np.ones(2))
        figures = run.figures
    assert figures == run.path / "figures" and figures.is_dir()
    assert read_csv(run.file("table.csv")) == [{"a": 1}]
    assert json.loads(run.file("extra.json").read_text()) == {"x": [0, 1, 2]}
    np.testing.assert_array_equal(load_npz(run.file("ckpt.npz"))["w"], [1.0, 1.0])


def test_load_run_and_find_runs(tmp_path):
    a = completed_run(tmp_path, acc=0.5)
    with open_run("other", CONFIG, 1, root=tmp_path, argv=[]) as b:
        pass
    loaded = load_run(a)
    assert loaded["path"] == a
    assert loaded["meta"]["status"] == "completed"
    assert loaded["config"]["model"]["width"] == 10
    assert loaded["metrics"] == {"acc": 0.5}
    assert find_runs(tmp_path) == sorted([a, b.path])
    assert find_runs(tmp_path, "exp") == [a]
    assert find_runs(tmp_path / "nothing-here") == []


def test_load_run_rejects_a_folder_without_meta(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CerebError, match="not a run folder"):
        load_run(tmp_path)
    with pytest.raises(CerebError, match="not a run folder"):
        load_run(tmp_path / "missing")


def test_load_run_rejects_corrupt_json(tmp_path):
    path = completed_run(tmp_path)
    (path / "meta.json").write_text('{"status": "compl')
    with pytest.raises(CerebError, match="meta.json is not valid JSON"):
        load_run(path)


# ----------------------------------------------------------------------------- atomic files
def test_atomic_write_replaces_and_leaves_no_temp_files(tmp_path):
    f = tmp_path / "sub" / "out.txt"
    atomic_write_text(f, "one")
    atomic_write_text(f, "two")
    assert f.read_text() == "two"
    assert [p.name for p in f.parent.iterdir()] == ["out.txt"]


def test_failed_json_write_keeps_the_old_file(tmp_path):
    f = tmp_path / "m.json"
    write_json(f, {"a": 1})
    with pytest.raises(TypeError, match="not JSON serialisable"):
        write_json(f, {"b": object()})
    assert json.loads(f.read_text()) == {"a": 1}
    assert temp_files(tmp_path) == []


# ----------------------------------------------------------------------------- csv and npz
def test_csv_round_trip(tmp_path):
    rows = [
        {"model": "rate", "attack": "fgsm", "eps": 0.1, "seed": 0, "n": 100, "robust_acc": 1 / 3},
        {"model": "spiking", "attack": "pgd", "eps": np.float64(1e-4), "seed": np.int64(1), "n": 100,
         "robust_acc": np.float32(0.25)},
    ]
    f = write_csv(tmp_path / "t.csv", rows, columns=["seed", "model"])
    assert f.read_text().splitlines()[0] == "seed,model,attack,eps,n,robust_acc"  # given order first
    back = read_csv(f)
    assert back == [
        {"seed": 0, "model": "rate", "attack": "fgsm", "eps": 0.1, "n": 100, "robust_acc": 1 / 3},
        {"seed": 1, "model": "spiking", "attack": "pgd", "eps": 1e-4, "n": 100, "robust_acc": 0.25},
    ]
    assert type(back[0]["seed"]) is int and type(back[0]["eps"]) is float
    assert temp_files(tmp_path) == []


def test_csv_with_missing_cells_and_no_rows(tmp_path):
    f = write_csv(tmp_path / "t.csv", [{"a": 1, "b": 2.5}, {"a": 3}])
    assert read_csv(f) == [{"a": 1, "b": 2.5}, {"a": 3, "b": ""}]
    g = write_csv(tmp_path / "empty.csv", [], columns=["a", "b"])
    assert g.read_text() == "a,b\n" and read_csv(g) == []


def test_npz_round_trip_without_pickle(tmp_path):
    arrays = {
        "w": np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32),
        "i": np.arange(5, dtype=np.int64),
        "t_ms": np.array([0.5, 1.25]),
        "mask": np.array([True, False]),
    }
    f = save_npz(tmp_path / "ckpt.npz", **arrays)
    back = load_npz(f)
    assert set(back) == set(arrays)
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype
        np.testing.assert_array_equal(back[k], v)
    with np.load(f, allow_pickle=False) as data:  # loadable without pickle by anyone
        assert sorted(data.files) == sorted(arrays)
    assert temp_files(tmp_path) == []


def test_save_npz_refuses_object_arrays(tmp_path):
    with pytest.raises(TypeError, match="'bad' has dtype object"):
        save_npz(tmp_path / "x.npz", good=np.ones(2), bad=np.array([np.ones(2), "a"], dtype=object))
    assert not (tmp_path / "x.npz").exists()


def test_load_npz_refuses_pickled_arrays(tmp_path):
    f = tmp_path / "pickled.npz"
    np.savez(f, bad=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        load_npz(f)
