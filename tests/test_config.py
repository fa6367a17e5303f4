"""Configuration: defaults in frozen dataclasses, overrides from files and --set, strict keys."""
from __future__ import annotations

import argparse
import dataclasses
import re
from dataclasses import dataclass, field
from typing import Literal

import pytest

from core.config import (
    config_hash,
    flatten,
    load_overrides,
    merge_overrides,
    parse_set,
    resolve,
    to_dict,
)
from core.errors import CerebError, ConfigError
from scripts.common import collect_overrides
from tasks import TaskConfig


@dataclass(frozen=True)
class ModelConfig:
    width: int = 100
    lr: float = 1e-3
    spiking: bool = False
    sizes: tuple[int, ...] = (10, 20)
    init: Literal["normal", "uniform"] = "normal"
    dropout: float | None = None
    label: str = "base"


@dataclass(frozen=True)
class ExperimentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    note: str = ""


@dataclass(frozen=True)
class PatternsExperiment:
    """A section whose default differs from its class's defaults."""

    model: ModelConfig = field(default_factory=lambda: ModelConfig(width=7, label="custom"))
    task: TaskConfig = field(default_factory=lambda: TaskConfig(name="patterns", dim=32))


# ----------------------------------------------------------------------------- resolve
def test_resolve_defaults_and_nested_override():
    default = resolve(ExperimentConfig)
    assert default == ExperimentConfig()
    cfg = resolve(ExperimentConfig, {"model": {"width": 5}, "task": {"name": "patterns", "dim": 16}})
    assert cfg.model.width == 5
    assert cfg.model.lr == 1e-3  # untouched keys keep their defaults
    assert cfg.task.name == "patterns" and cfg.task.dim == 16 and cfg.task.split_seed == 0
    assert cfg.note == ""
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.width = 6  # type: ignore[misc]


def test_section_override_starts_from_the_sections_default_instance():
    # Bug fixed: overriding one key used to rebuild the section from its class defaults,
    # silently turning task 'patterns' back into 'digits' and width 7 back into 100.
    cfg = resolve(PatternsExperiment, parse_set(["task.split_seed=3", "model.lr=0.5"]))
    assert cfg.task.name == "patterns" and cfg.task.dim == 32 and cfg.task.split_seed == 3
    assert cfg.model.width == 7 and cfg.model.label == "custom" and cfg.model.lr == 0.5
    with pytest.raises(ConfigError, match="image_size"):
        resolve(PatternsExperiment, {"task": {"image_size": 5}})  # validation still runs


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"model": {"widht": 5}}, "model.widht"),
        ({"modle": {"width": 5}}, "modle"),
        ({"task": {"nmae": "mnist"}}, "task.nmae"),
    ],
)
def test_unknown_key_names_the_full_dotted_key(overrides, key):
    with pytest.raises(ConfigError) as info:
        resolve(ExperimentConfig, overrides)
    msg = str(info.value)
    assert f"unknown config key '{key}'" in msg
    if key.startswith("model."):
        assert "model.width" in msg  # lists the keys that do exist


@pytest.mark.parametrize(
    "overrides, key, words",
    [
        ({"model": {"width": "abc"}}, "model.width", "integer"),
        ({"model": {"width": 1.5}}, "model.width", "integer"),
        ({"model": {"width": True}}, "model.width", "integer"),
        ({"model": {"lr": "fast"}}, "model.lr", "number"),
        ({"model": {"spiking": "maybe"}}, "model.spiking", "true or false"),
        ({"model": {"spiking": 1}}, "model.spiking", "true or false"),
        ({"model": {"label": 5}}, "model.label", "text"),
        ({"model": {"sizes": 5}}, "model.sizes", "list"),
        ({"model": {"init": "zeros"}}, "model.init", "one of"),
        ({"task": {"split_seed": "x"}}, "task.split_seed", "integer"),
        ({"note": 3}, "note", "text"),
    ],
)
def test_wrong_type_names_the_key(overrides, key, words):
    with pytest.raises(ConfigError) as info:
        resolve(ExperimentConfig, overrides)
    assert f"'{key}'" in str(info.value) and words in str(info.value)


def test_a_section_given_a_scalar_is_rejected():
    with pytest.raises(ConfigError, match="'model' is a section"):
        resolve(ExperimentConfig, {"model": 5})


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "1.5", "1e-4"])
def test_non_integer_floats_for_an_int_are_config_errors(text):
    # Bug fixed: inf raised OverflowError and nan ValueError instead of ConfigError.
    with pytest.raises(ConfigError, match="'model.width' expects an integer"):
        resolve(ExperimentConfig, parse_set([f"model.width={text}"]))


def test_integral_float_is_accepted_for_an_int():
    cfg = resolve(ExperimentConfig, parse_set(["model.width=1e3"]))
    assert cfg.model.width == 1000 and type(cfg.model.width) is int


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"test_fraction": 2}, "test_fraction"),
        ({"test_fraction": 0}, "test_fraction"),
        ({"image_size": 5}, "image_size"),
        ({"n_train": 0}, "n_train"),
        ({"noise": 1.5}, "noise"),
        ({"coding_level": 1.0}, "coding_level"),
        ({"mnist_train_size": 10000}, "mnist_train_size"),
        ({"n_classes": 1}, "n_classes"),
        ({"name": "cifar"}, "one of"),
    ],
)
def test_invalid_task_values_raise_config_error(bad, words):
    with pytest.raises(ConfigError, match=words):
        resolve(TaskConfig, bad)
    with pytest.raises(ConfigError, match=words) as info:
        resolve(ExperimentConfig, {"task": bad})
    assert "task" in str(info.value)


def test_config_error_is_a_cereb_error():
    assert issubclass(ConfigError, CerebError)


# ----------------------------------------------------------------------------- --set
def test_parse_set_builds_a_nested_dict_of_strings():
    out = parse_set(["model.width=1000", "model.lr = 1e-4", "task.name=mnist", "note=a=b"])
    assert out == {"model": {"width": "1000", "lr": "1e-4"}, "task": {"name": "mnist"}, "note": "a=b"}
    assert parse_set(None) == {} and parse_set([]) == {}


@pytest.mark.parametrize(
    "item, attr, expected",
    [
        ("model.width=1000", "width", 1000),
        ("model.width=-3", "width", -3),
        ("model.lr=1e-4", "lr", 1e-4),
        ("model.lr=3", "lr", 3.0),
        ("model.lr=0.25", "lr", 0.25),
        ("model.spiking=true", "spiking", True),
        ("model.spiking=True", "spiking", True),
        ("model.spiking=yes", "spiking", True),
        ("model.spiking=false", "spiking", False),
        ("model.spiking=off", "spiking", False),
        ("model.dropout=None", "dropout", None),
        ("model.dropout=none", "dropout", None),
        ("model.dropout=null", "dropout", None),
        ("model.dropout=0.5", "dropout", 0.5),
        ("model.init=uniform", "init", "uniform"),
        ("model.sizes=1,2,3", "sizes", (1, 2, 3)),
        ("model.sizes=[4, 5]", "sizes", (4, 5)),
        ("model.sizes=7", "sizes", (7,)),
        ("model.label=hello world", "label", "hello world"),
        ("model.label=123", "label", "123"),  # a str field keeps the text as typed
    ],
)
def test_set_values_are_parsed_by_the_fields_type(item, attr, expected):
    cfg = resolve(ExperimentConfig, parse_set([item]))
    value = getattr(cfg.model, attr)
    assert value == expected
    assert type(value) is type(expected)


def test_set_optional_and_literal_in_task():
    cfg = resolve(TaskConfig, parse_set(["n_train=50", "data_dir=none", "pattern_kind=gaussian"]))
    assert cfg.n_train == 50 and cfg.data_dir is None and cfg.pattern_kind == "gaussian"
    cfg = resolve(TaskConfig, parse_set(["data_dir=/tmp/mnist"]))
    assert cfg.data_dir == "/tmp/mnist"


@pytest.mark.parametrize(
    "item, words",
    [
        ("model.init=zeros", "'model.init' must be one of ['normal', 'uniform']"),
        ("model.sizes=1,x", "'model.sizes' expects an integer"),
        ("model.dropout=high", "'model.dropout' expects a number"),
        ("model.spiking=2", "'model.spiking' expects true or false"),
    ],
)
def test_bad_set_values_are_rejected(item, words):
    with pytest.raises(ConfigError) as info:
        resolve(ExperimentConfig, parse_set([item]))
    assert words in str(info.value)


@pytest.mark.parametrize("item", ["model.width", "=5", "model..width=1", ".width=1", "model.=1"])
def test_malformed_set_is_rejected(item):
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_set([item])


def test_set_value_and_section_conflict_is_rejected():
    with pytest.raises(ConfigError, match="both a value and a section"):
        parse_set(["model=1", "model.width=2"])


# ----------------------------------------------------------------------------- files
def test_yaml_overrides(tmp_path):
    f = tmp_path / "over.yaml"
    f.write_text("model:\n  width: 7\n  spiking: true\n  sizes: [3, 4]\n  dropout: null\ntask:\n  name: patterns\n")
    overrides = load_overrides(f)
    assert overrides == {"model": {"width": 7, "spiking": True, "sizes": [3, 4], "dropout": None},
                         "task": {"name": "patterns"}}
    cfg = resolve(ExperimentConfig, overrides)
    assert cfg.model.width == 7 and cfg.model.spiking is True and cfg.model.sizes == (3, 4)
    assert cfg.task.name == "patterns"


def test_yaml_exponent_without_dot_is_a_float(tmp_path):
    # Bug fixed: PyYAML reads 'lr: 1e-4' as the string '1e-4', which was rejected for a float.
    f = tmp_path / "over.yml"
    f.write_text("model:\n  lr: 1e-4\n  width: 2e3\n")
    cfg = resolve(ExperimentConfig, load_overrides(f))
    assert cfg.model.lr == 1e-4 and cfg.model.width == 2000
    f.write_text("model:\n  label: 1e-4\n")  # a str field keeps the text
    assert resolve(ExperimentConfig, load_overrides(f)).model.label == "1e-4"


def test_toml_overrides(tmp_path):
    f = tmp_path / "over.toml"
    f.write_text('[model]\nwidth = 9\nlr = 1e-4\ninit = "uniform"\nsizes = [1, 2]\n\n[task]\nsplit_seed = 4\n')
    cfg = resolve(ExperimentConfig, load_overrides(f))
    assert cfg.model.width == 9 and cfg.model.lr == 1e-4 and cfg.model.init == "uniform"
    assert cfg.model.sizes == (1, 2) and cfg.task.split_seed == 4


def test_unknown_key_in_a_file_is_named(tmp_path):
    f = tmp_path / "over.toml"
    f.write_text("[model]\nwidht = 9\n")
    with pytest.raises(ConfigError, match="'model.widht'"):
        resolve(ExperimentConfig, load_overrides(f))


@pytest.mark.parametrize(
    "name, text, words",
    [
        ("bad.yaml", "model: [unclosed\n", "could not be parsed"),
        ("bad.toml", "[model\nwidth = 1\n", "could not be parsed"),
        ("list.yaml", "- 1\n- 2\n", "must hold a mapping"),
        ("over.ini", "[model]\nwidth=1\n", "use .yaml, .yml, .toml or .json"),
    ],
)
def test_bad_override_files(tmp_path, name, text, words):
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(words)) as info:
        load_overrides(f)
    assert name in str(info.value)


def test_missing_and_empty_override_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_overrides(tmp_path / "nope.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_overrides(empty) == {}


def test_merge_order_set_wins_over_file(tmp_path):
    f = tmp_path / "over.yaml"
    f.write_text("model:\n  width: 7\n  lr: 0.5\ntask:\n  name: patterns\n")
    merged = merge_overrides(load_overrides(f), parse_set(["model.width=9"]))
    cfg = resolve(ExperimentConfig, merged)
    assert cfg.model.width == 9  # --set wins
    assert cfg.model.lr == 0.5 and cfg.task.name == "patterns"  # the file's other keys survive
    # the same through the CLI helper, which reads --config then --set
    args = argparse.Namespace(config=str(f), sets=["model.width=11", "task.split_seed=2"])
    cfg = resolve(ExperimentConfig, collect_overrides(args, extra={"task": {"split_seed": 5}}))
    assert (cfg.model.width, cfg.model.lr, cfg.task.name, cfg.task.split_seed) == (11, 0.5, "patterns", 5)


def test_merge_overrides_does_not_mutate_its_inputs():
    a = {"model": {"width": 1, "lr": 0.1}}
    b = {"model": {"width": 2}}
    assert merge_overrides(a, b) == {"model": {"width": 2, "lr": 0.1}}
    assert a == {"model": {"width": 1, "lr": 0.1}} and b == {"model": {"width": 2}}


# ----------------------------------------------------------------------------- hash and views
def test_config_hash_is_stable_and_sensitive():
    a = resolve(ExperimentConfig, {"model": {"width": 5}})
    h = config_hash(a)
    assert re.fullmatch(r"[0-9a-f]{10}", h)
    assert config_hash(a) == h
    assert config_hash(resolve(ExperimentConfig, parse_set(["model.width=5"]))) == h
    assert config_hash(to_dict(a)) == h  # dataclass and its dict view agree
    assert config_hash(resolve(ExperimentConfig, {"model": {"width": 6}})) != h
    assert config_hash(resolve(ExperimentConfig, {"task": {"split_seed": 1}, "model": {"width": 5}})) != h
    assert len(config_hash(a, length=16)) == 16


def test_config_hash_ignores_key_order():
    assert config_hash({"a": 1, "b": {"c": 2, "d": 3}}) == config_hash({"b": {"d": 3, "c": 2}, "a": 1})


def test_config_hash_is_pinned():
    # Run folders are found again by this hash: it must not drift between versions.
    assert config_hash({"a": 1}) == "015abd7f5c"


def test_to_dict_and_flatten():
    d = to_dict(ExperimentConfig())
    assert d["model"]["sizes"] == [10, 20]  # tuples become lists (JSON)
    assert d["task"]["name"] == "digits"
    flat = flatten(d)
    assert flat["model.width"] == 100 and flat["task.image_size"] == 28 and flat["note"] == ""
    assert not any(isinstance(v, dict) for v in flat.values())
