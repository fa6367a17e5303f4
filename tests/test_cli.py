"""The ``cereb`` command: help, the tasks table, and one-line errors for bad input."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REAL_T10K_COUNTS, synthetic_images, synthetic_labels, write_split
from core.paths import PROJECT_ROOT
from scripts.cli import main


def cereb(*args: str, module: str = "scripts.cli", env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m scripts.cli ARGS`` (the ``cereb`` command) in a fresh interpreter."""
    import os

    environ = {k: v for k, v in os.environ.items() if k != "CEREB_DATA"}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, env=environ,
    )


def assert_one_line_error(stderr: str, fragments: list[str]) -> None:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("cereb: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def table_rows(stdout: str) -> dict[str, list[str]]:
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["task", "inputs"])
    return {line.split()[0]: line.split() for line in lines[header + 1:] if line.strip()}


# ----------------------------------------------------------------------------- help
def test_help_lists_subcommands():
    res = cereb("--help")
    assert res.returncode == 0
    assert res.stdout.startswith("usage: cereb")
    assert re.search(r"^\s+tasks\s+List the tasks", res.stdout, re.M)


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "usage: cereb" in capsys.readouterr().out


def test_unknown_subcommand_or_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["tasks", "--bogus"])
    assert info.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


# ----------------------------------------------------------------------------- tasks
def test_tasks_prints_the_table(capsys):
    assert main(["tasks", "-q"]) == 0
    out = capsys.readouterr().out
    rows = table_rows(out)
    assert set(rows) == {"digits", "mnist", "mnist01", "patterns"}
    assert rows["digits"][:5] == ["digits", "64", "10", "1438", "359"]
    assert rows["patterns"][:5] == ["patterns", "64", "2", "200", "400"]
    assert rows["mnist"][:5] == ["mnist", "-", "-", "-", "-"]
    assert "needs --data-dir or CEREB_DATA" in " ".join(rows["mnist"])


def test_tasks_with_real_mnist(real_mnist_dir):
    res = cereb("tasks", "--data-dir", str(real_mnist_dir))
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert f"MNIST files in {real_mnist_dir}: ok" in res.stdout
    assert f"test: 10000 images of 28x28, class counts {REAL_T10K_COUNTS}" in res.stdout
    assert "no training files" in res.stdout
    rows = table_rows(res.stdout)
    assert rows["mnist"][:5] == ["mnist", "784", "10", "8000", "2000"]
    assert rows["mnist01"][:5] == ["mnist01", "784", "2", "1692", "423"]


def test_tasks_reads_cereb_data(monkeypatch, capsys, real_mnist_dir):
    monkeypatch.setenv("CEREB_DATA", str(real_mnist_dir))
    assert main(["tasks", "-q"]) == 0
    rows = table_rows(capsys.readouterr().out)
    assert rows["mnist"][:5] == ["mnist", "784", "10", "8000", "2000"]


def test_tasks_with_a_tiny_test_only_set_explains_instead_of_crashing(tmp_path):
    # Bug fixed: 20 test images and the default mnist_train_size=8000 crashed with a numpy traceback.
    write_split(tmp_path, "t10k", synthetic_images(20), synthetic_labels(20), gz=True)
    res = cereb("tasks", "--data-dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert "test: 20 images of 28x28, class counts [2, 2, 2, 2, 2, 2, 2, 2, 2, 2]" in res.stdout
    rows = table_rows(res.stdout)
    assert rows["mnist"][1] == "-" and "mnist_train_size" in " ".join(rows["mnist"])


def test_tasks_with_a_tiny_full_set(tmp_path, capsys):
    write_split(tmp_path, "train", synthetic_images(30), synthetic_labels(30))
    write_split(tmp_path, "t10k", synthetic_images(20), synthetic_labels(20))
    assert main(["tasks", "-q", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "train: 30 images of 28x28, class counts [3, 3, 3, 3, 3, 3, 3, 3, 3, 3]" in out
    rows = table_rows(out)
    assert rows["mnist"][:5] == ["mnist", "784", "10", "30", "20"]
    assert rows["mnist01"][:5] == ["mnist01", "784", "2", "6", "4"]


# ----------------------------------------------------------------------------- bad input
def test_bad_mnist_dir_is_one_line_and_exit_code_2(bad_mnist):
    directory, fragments = bad_mnist
    res = cereb("tasks", "--data-dir", str(directory))
    assert res.returncode == 2
    assert_one_line_error(res.stderr, fragments)
    assert res.stdout == ""


def test_bad_mnist_dir_in_process(bad_mnist, capsys):
    directory, fragments = bad_mnist
    assert main(["tasks", "--data-dir", str(directory)]) == 2
    captured = capsys.readouterr()
    assert_one_line_error(captured.err, fragments)
    assert "ok" not in captured.out


@pytest.mark.parametrize("module", ["scripts.tasks", "scripts.cli"])
def test_module_entry_points_report_errors_the_same_way(tmp_path, module):
    args = ("--data-dir", str(tmp_path / "nope"))
    res = cereb(*args, module=module) if module == "scripts.tasks" else cereb("tasks", *args)
    assert res.returncode == 2
    assert_one_line_error(res.stderr, ["does not exist"])


def test_installed_cereb_script(tmp_path):
    script = Path(sys.executable).parent / "cereb"
    if not script.exists():
        pytest.skip("the cereb console script is not installed in this environment")
    res = subprocess.run([str(script), "tasks", "--data-dir", str(tmp_path)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2
    assert_one_line_error(res.stderr, ["no MNIST test files", "t10k-images-idx3-ubyte"])
