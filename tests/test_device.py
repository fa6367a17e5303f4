"""The torch device option: auto/cpu/cuda, recorded in meta.json and kept out of the configuration."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from core.device import pop_device, resolve_device
from core.errors import CerebError, ConfigError
from core.paths import PROJECT_ROOT
from core.runs import find_runs

HAS_CUDA = torch.cuda.is_available()
TINY = ["--model", "rate", "--task", "digits", "--set", "model.width=80", "--set", "train.epochs=1"]


def cereb(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.cli", *args], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=300)


def test_auto_takes_a_gpu_only_when_there_is_one():
    assert resolve_device("auto") == ("cuda:0" if HAS_CUDA else "cpu")
    assert resolve_device("cpu") == resolve_device("CPU") == "cpu"


@pytest.mark.parametrize("bad", ["tpu", "cuda:x", "gpu", ""])
def test_an_unknown_device_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="device must be auto, cpu, cuda or cuda:N"):
        resolve_device(bad)


@pytest.mark.skipif(HAS_CUDA, reason="a GPU is present")
def test_cuda_without_a_gpu_is_one_clear_error():
    with pytest.raises(CerebError, match="no CUDA GPU is available"):
        resolve_device("cuda")
    res = cereb("train", "-q", *TINY, "--set", "device=cuda", "--out", "/nonexistent/never-written")
    assert res.returncode == 2
    lines = [line for line in res.stderr.strip().splitlines() if line]
    assert lines == [lines[-1]] and lines[0].startswith("cereb: error: device=cuda: no CUDA GPU is available")


def test_pop_device_leaves_the_configuration_alone():
    rest, spec = pop_device({"device": "cpu", "model": {"width": 5}})
    assert spec == "cpu" and rest == {"model": {"width": 5}}
    assert pop_device({"model": {}})[1] == "auto"


def test_the_device_goes_to_meta_not_into_the_configuration(tmp_path):
    """A run trained with device=auto is reused by device=cpu (same configuration, same hash), and
    meta.json records what was asked for and what was used."""
    res = cereb("train", "-q", *TINY, "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    (run,) = find_runs(tmp_path, "rate")
    meta = json.loads((run / "meta.json").read_text())
    assert meta["device_requested"] == "auto" and meta["device"] == ("cuda:0" if HAS_CUDA else "cpu")
    assert "device" not in json.loads((run / "config.json").read_text())
    again = cereb("train", *TINY, "--set", "device=cpu", "--out", str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert "reusing completed run" in again.stdout and len(find_runs(tmp_path, "rate")) == 1
    res = cereb("attack", "-q", "--run", str(run), "--n", "10", "--set", "attack.strong_steps=4",
                "--set", "device=cpu", "--out", str(tmp_path))
    assert res.returncode in (0, 1), res.stderr  # 1: a check failed on this tiny model, still a finished run
    (arun,) = find_runs(tmp_path, "attack-rate")
    ameta = json.loads((arun / "meta.json").read_text())
    assert ameta["device"] == "cpu" and ameta["device_requested"] == "cpu"
    assert "device" not in json.loads((arun / "config.json").read_text())


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_a_gpu_run_matches_the_cpu_run(tmp_path):
    """On a GPU: the same configuration trains to the same accuracy (up to float reordering) and
    the attack suite runs there; meta.json names the GPU."""
    cpu, gpu = tmp_path / "cpu", tmp_path / "gpu"
    for out, dev in ((cpu, "cpu"), (gpu, "cuda")):
        res = cereb("train", "-q", *TINY, "--set", "train.batch_size=16", "--set", f"device={dev}", "--out", str(out))
        assert res.returncode == 0, res.stderr
    (rc,), (rg,) = find_runs(cpu, "rate"), find_runs(gpu, "rate")
    mc, mg = (json.loads((r / "metrics.json").read_text()) for r in (rc, rg))
    assert abs(mc["test_accuracy"] - mg["test_accuracy"]) <= 0.02
    meta = json.loads((rg / "meta.json").read_text())
    assert meta["device"] == "cuda:0" and meta["device_name"]
    res = cereb("attack", "-q", "--run", str(rg), "--n", "20", "--set", "device=cuda", "--out", str(gpu))
    assert res.returncode in (0, 1), res.stderr
    (arun,) = find_runs(gpu, "attack-rate")
    assert json.loads((arun / "meta.json").read_text())["device"] == "cuda:0"
