"""Shared fixtures: where the real datasets are; one torch thread for timing-prone tests."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("ULMFIT_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not (path / "README.md").exists():
        pytest.skip(f"real datasets not found at {path} (set ULMFIT_SHARED_DATA)")
    return path


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for the test (use with ``pytest.mark.usefixtures``).

    On shared cores a second, spinning OpenMP thread made some runs 10-90x slower.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def wiki_lm(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A tiny LM pretrained for a few seconds on 40 real Wikipedia articles."""
    from ulmfit.data.lm import LMDataConfig
    from ulmfit.data.prepare import CorpusConfig
    from ulmfit.models.awd_lstm import AWDLSTMConfig
    from ulmfit.tasks.train_lm import LMStageConfig, VocabConfig, train_language_model
    from ulmfit.training.config import TrainConfig

    out = tmp_path_factory.mktemp("wiki_lm")
    cfg = LMStageConfig(
        out_dir=str(out / "lm"),
        corpus=CorpusConfig(
            train=(str(shared_data / "wikipedia_en_2015_subset/AA.txt.xz"),),
            max_docs=40,
            valid_frac=0.05,
            n_workers=1,
            cache_dir=str(out / "cache"),
        ),
        vocab=VocabConfig(max_size=12000, min_freq=2),
        model=AWDLSTMConfig(emb_size=48, hidden_size=96, n_layers=2, drop_mult=0.2),
        data=LMDataConfig(bs=32, bptt=40),
        train=TrainConfig(progress=False, log_every=10, epochs=1, lr=5e-3),
        device="cpu",
    )
    return train_language_model(cfg)


def load_benchmark(name: str, mp: pytest.MonkeyPatch) -> ModuleType:
    """``benchmarks/NAME.py`` imported as it runs as a script; ``mp`` undoes the import."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    mp.setitem(sys.modules, name, module)  # dataclasses look their module up
    mp.syspath_prepend(str(REPO / "benchmarks"))  # as a script: its folder is on the path
    spec.loader.exec_module(module)
    return module
