"""The environment files agree with each other, and CI runs the README's test command."""
from __future__ import annotations

import importlib
import os
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from core.paths import PROJECT_ROOT

PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
ENV = yaml.safe_load((PROJECT_ROOT / "environment.yml").read_text())


def _by_name(reqs: list[str]) -> dict[str, str]:
    out = {}
    for text in reqs:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name not in out, f"{name} listed twice"
        out[name] = str(req.specifier)
    return out


def _env_pip() -> list[str]:
    pip = [d["pip"] for d in ENV["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip) == 1, "environment.yml needs exactly one pip: section"
    return pip[0]


def test_environment_yml_and_pyproject_list_the_same_pins():
    project = PYPROJECT["project"]
    wanted = _by_name(project["dependencies"] + project["optional-dependencies"]["dev"])
    listed = _by_name(_env_pip())
    assert listed == wanted
    # spot-check the pins the comments in pyproject explain
    assert wanted["torch"] == "==2.13.0" and wanted["brian2"] == "==2.9.0"
    assert SpecifierSet(wanted["numpy"]) == SpecifierSet(">=1.26,<2.4")


def test_environment_python_matches_requires_python():
    conda = [d for d in ENV["dependencies"] if isinstance(d, str)]
    python = [d for d in conda if d.split("=")[0] == "python"]
    assert python == ["python=3.11"]
    assert "3.11" in SpecifierSet(PYPROJECT["project"]["requires-python"])
    assert "pip" in conda


def test_cereb_entry_point_resolves():
    target = PYPROJECT["project"]["scripts"]["cereb"]
    module, func = target.split(":")
    assert callable(getattr(importlib.import_module(module), func))


def test_ci_runs_make_test_strictly():
    ci = PROJECT_ROOT / ".ci" / "run"
    text = ci.read_text()
    assert text.startswith("#!/usr/bin/env bash")
    assert "set -euo pipefail" in text
    assert "make test" in text.split("set -euo pipefail", 1)[1]  # after strict mode is on
    assert os.access(ci, os.X_OK)


def test_make_test_runs_pytest():
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    lines = makefile.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("test:"))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line)
    assert any("-m pytest" in line for line in recipe)


@pytest.mark.parametrize("pkg", ["numpy", "brian2", "torch", "foolbox", "scipy", "sklearn", "yaml", "tqdm"])
def test_declared_dependencies_are_importable(pkg):
    # torch/brian2 imports are slow; only check they are installed, not import them
    assert importlib.util.find_spec(pkg) is not None, f"{pkg} is not installed"
