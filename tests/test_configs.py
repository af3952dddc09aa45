"""The shipped configs: each one loads into its dataclass and names data that exist.

A config that drifts from the code (a renamed field, a moved dataset) would otherwise
fail only when a user runs it, after the minutes of work before the failing stage.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO
from ulmfit.config import ConfigError, from_dict, load_toml
from ulmfit.tasks.pipeline import PipelineConfig
from ulmfit.tasks.train_lm import LMStageConfig

CONFIGS = sorted((REPO / "configs").glob("*.toml"))
SHARED_PREFIX = "../shared/data/"


def config_class(data: dict[str, Any]) -> type:
    """A pipeline config has per-stage tables; anything else is one LM stage."""
    stages = {"pretrain", "finetune_lm", "classifier"}
    return PipelineConfig if stages & set(data) else LMStageConfig


def data_paths(obj: Any) -> list[str]:
    """Every string in the loaded config that points into the shared data folder."""
    if isinstance(obj, str):
        return [obj] if obj.startswith(SHARED_PREFIX) else []
    if isinstance(obj, dict):
        return [p for v in obj.values() for p in data_paths(v)]
    if isinstance(obj, list | tuple):
        return [p for v in obj for p in data_paths(v)]
    return []


def test_there_are_configs_to_check() -> None:
    names = {p.name for p in CONFIGS}
    assert {"demo_trec.toml", "pretrain_wiki_cpu.toml", "pretrain_wiki_gpu.toml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_its_data_exist(path: Path, shared_data: Path) -> None:
    data = load_toml(path)
    cls = config_class(data)
    cfg = from_dict(cls, data, where=path.name)  # unknown or mistyped fields raise
    assert isinstance(cfg, cls)
    paths = data_paths(data)
    assert paths, f"{path.name} names no dataset under {SHARED_PREFIX}"
    missing = [p for p in paths if not (shared_data / p[len(SHARED_PREFIX) :]).exists()]
    assert not missing, f"{path.name}: no such files in {shared_data}: {missing}"


def test_readme_names_only_configs_that_exist() -> None:
    named = set(re.findall(r"configs/[\w.-]+\.toml", (REPO / "README.md").read_text()))
    assert "configs/demo_trec.toml" in named
    missing = sorted(n for n in named if not (REPO / n).exists())
    assert not missing, f"README.md names configs that do not exist: {missing}"


def test_a_bad_field_is_named_by_file_and_key() -> None:
    with pytest.raises(ConfigError, match=r"^run\.toml: \[train\]: unknown field\(s\) \['lrr'\]"):
        from_dict(LMStageConfig, {"train": {"lrr": 1}}, "run.toml")
    with pytest.raises(ConfigError, match=r"^run\.toml: \[train\.lr\]: expected float, got 'fast'"):
        from_dict(LMStageConfig, {"train": {"lr": "fast"}}, "run.toml")
    nested = r"^run\.toml: \[pretrain\.model\.n_layers\]: expected int"
    with pytest.raises(ConfigError, match=nested):
        from_dict(PipelineConfig, {"pretrain": {"model": {"n_layers": 2.5}}}, "run.toml")
