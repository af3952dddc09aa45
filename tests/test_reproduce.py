"""benchmarks/reproduce.py: the harness produces a RESULTS row on a tiny budget; the
backward model and the fwd+bwd ensemble row."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from conftest import load_benchmark
from ulmfit.datasets import DatasetSplit

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py


@pytest.fixture(scope="module")
def reproduce() -> Iterator[ModuleType]:
    with pytest.MonkeyPatch.context() as mp:
        # The script sets OMP_WAIT_POLICY on import: undo that after these tests.
        mp.setenv("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
        yield load_benchmark("reproduce", mp)


def test_the_harness_produces_a_results_row_on_a_tiny_budget(
    reproduce: ModuleType, shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ULMFIT_CACHE", str(tmp_path / "cache"))
    results = tmp_path / "RESULTS.md"
    results.write_text("# earlier sections stay\n")
    argv = ["trec6", "--budget", "tiny", "--systems", "ulmfit,tfidf"]
    argv += ["--results", str(results), "--out-dir", str(tmp_path / "out")]
    argv += ["--data-dir", str(shared_data)]
    assert reproduce.main(argv) == 0
    text = results.read_text()
    assert text.startswith("# earlier sections stay\n")  # appended, never rewritten
    assert "## reproduce.py: trec6, tiny budget" in text
    rows = [line for line in text.splitlines() if line.startswith("| trec6 |")]
    assert [r.split(" | ")[1] for r in rows] == ["ulmfit", "tfidf"]
    ulmfit = rows[0].split(" | ")
    assert float(ulmfit[2]) <= 100 and ulmfit[3] == "3.60"  # ours, the paper's
    assert "pretrain" in ulmfit[5] and "classifier" in ulmfit[5]  # time per stage
    assert "reproduce.py trec6 --budget tiny" in rows[0]
    assert "tiny budget" in ulmfit[-1]  # why it is worse than the paper
    report = json.loads((tmp_path / "out" / "reproduce.json").read_text())
    assert report["sizes"] == {"train": 200, "valid": 100, "test": 200}
    assert set(report["systems"]) == {"ulmfit", "tfidf"}


def test_multilabel_rows_report_micro_and_macro_f1(
    reproduce: ModuleType, shared_data: Path, tmp_path: Path
) -> None:
    results = tmp_path / "RESULTS.md"
    argv = ["reuters21578", "--budget", "tiny", "--systems", "tfidf-svm"]
    argv += ["--results", str(results), "--out-dir", str(tmp_path / "out")]
    argv += ["--data-dir", str(shared_data)]
    assert reproduce.main(argv) == 0
    text = results.read_text()
    assert "test micro-F1 / macro-F1" in text
    row = next(line for line in text.splitlines() if line.startswith("| reuters21578 |"))
    cells = row.split(" | ")
    micro, macro = (float(v) for v in cells[2].split(" / "))
    assert 0 < micro <= 100 and 0 < macro <= 100
    assert "88.9" in cells[3]  # the multi-label anchor


def test_unknown_system_is_refused(reproduce: ModuleType) -> None:
    with pytest.raises(SystemExit):
        reproduce.main(["trec6", "--systems", "bert"])


def test_backward_model_and_the_ensemble_row(
    reproduce: ModuleType, shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ulmfit-bwd trains all three stages reading backwards; with ulmfit it adds the
    paper's fwd+bwd ensemble row."""
    monkeypatch.setenv("ULMFIT_CACHE", str(tmp_path / "cache"))
    results, out = tmp_path / "RESULTS.md", tmp_path / "out"
    argv = ["trec6", "--budget", "tiny", "--systems", "ulmfit,ulmfit-bwd"]
    argv += ["--results", str(results), "--out-dir", str(out), "--data-dir", str(shared_data)]
    assert reproduce.main(argv) == 0
    rows = [r.split(" | ") for r in results.read_text().splitlines() if r.startswith("| trec6 |")]
    assert [r[1] for r in rows] == ["ulmfit", "ulmfit-bwd", "ulmfit-ens"]
    assert all(r[4] == "(paper)" for r in rows)
    assert "forward model only" in rows[0][-1] and "backward model only" in rows[1][-1]
    assert "model only" not in rows[2][-1]
    for lm in ("lm_pretrained_bwd", "lm_finetuned_bwd"):
        assert json.loads((out / lm / "config.json").read_text())["direction"] == "backward"
    report = json.loads((out / "reproduce.json").read_text())
    assert report["pretrained_backward"] == str(out / "lm_pretrained_bwd")
    assert set(report["systems"]) == {"ulmfit", "ulmfit-bwd", "ulmfit-ens"}
    # A forward LM given as the backward one is refused before anything trains.
    with pytest.raises(Exception, match="direction is 'forward', but ulmfit-bwd"):
        reproduce.main([*argv, "--pretrained-backward", str(out / "lm_pretrained")])


def test_ensemble_averages_and_retunes_multilabel_thresholds(reproduce: ModuleType) -> None:
    def split(labels: list[list[str]]) -> DatasetSplit:
        n = len(labels)
        return DatasetSplit(["t"] * n, labels, "mem", list(range(1, n + 1)), task="multilabel")

    valid = [["a"], ["a"], [], ["b"]]
    data = reproduce.Splits(
        "multilabel", split(valid), split(valid), split([["a"], []]), ["a", "b", "c"], 4
    )
    budget = reproduce.tiny_budget(Path("."))
    budget = dataclasses.replace(budget, classifier=budget.classifier.replace(min_positives=1))
    inf = np.inf
    fwd = reproduce.SystemRun(
        "ulmfit",
        np.array([[0.9, 0.1, 0.0], [0.2, 0.1, 0.0]]),
        np.array([0.5, 0.5, inf]),
        {},
        valid_scores=np.array([[0.7, 0.1, 0], [0.6, 0.1, 0], [0.1, 0.1, 0], [0.1, 0.9, 0]]),
    )
    bwd = reproduce.SystemRun(
        "ulmfit-bwd",
        np.array([[0.7, 0.3, 0.0], [0.0, 0.3, 0.0]]),
        np.array([0.4, 0.6, inf]),
        {},
        valid_scores=np.array([[0.5, 0.1, 0], [0.4, 0.1, 0], [0.1, 0.1, 0], [0.1, 0.7, 0]]),
    )
    ens = reproduce.ensemble_run(fwd, bwd, data, budget)
    assert ens.system == "ulmfit-ens"
    np.testing.assert_allclose(ens.scores, [[0.8, 0.2, 0.0], [0.1, 0.2, 0.0]])
    # Tuned on the averaged validation scores: 'a' positives average 0.6 and 0.5, the
    # negatives 0.1, so its threshold separates them; 'c' (never trained) stays off.
    assert 0.1 < ens.thresholds[0] <= 0.5 and 0.1 < ens.thresholds[1] <= 0.8
    assert ens.thresholds[2] == inf


def test_lowshot_curve_on_a_tiny_budget(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """benchmarks/lowshot.py: every arm at every size, small sizes drawn again and averaged,
    stratified subsets, a table in RESULTS.md and the PNG plot."""
    monkeypatch.setenv("ULMFIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    lowshot = load_benchmark("lowshot", monkeypatch)
    labels = ["a"] * 90 + ["b"] * 10
    idx = lowshot.sample(labels, 20, 0, "multiclass")
    assert len(set(idx)) == 20 and sum(labels[i] == "b" for i in idx) == 2  # stratified
    assert list(idx) != list(lowshot.sample(labels, 20, 1, "multiclass"))  # a new draw

    results, png = tmp_path / "RESULTS.md", tmp_path / "curve.png"
    argv = ["trec6", "--budget", "tiny", "--sizes", "60", "120", "--repeats", "2"]
    argv += ["--min-steps", "4", "--data-dir", str(shared_data), "--out-dir", str(tmp_path)]
    argv += ["--results", str(results), "--plot", str(png)]
    # Caps, as for IMDb on a small machine: each a fixed sample, said in the section.
    argv += ["--max-pool", "300", "--max-valid", "80", "--max-test", "150"]
    argv += ["--max-lm-docs", "400"]
    assert lowshot.main(argv) == 0
    assert png.stat().st_size > 1000
    text = results.read_text()
    assert "## lowshot.py: trec6, tiny budget" in text
    assert "fine-tuned once on a fixed random 400 of 5452 training documents" in text
    assert "stratified samples of a fixed random 300 of 4906 documents" in text
    assert "on a fixed random 80 of 546 documents" in text
    assert "test set: a fixed random 150 of 500 documents" in text
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| 60 |")]
    rows += [line.split(" | ") for line in text.splitlines() if line.startswith("| 120 |")]
    assert [r[1] for r in rows] == ["2", "2"]  # both sizes below 1,000: two draws each
    got = json.loads((tmp_path / "lowshot.json").read_text())
    assert got["sizes"] == [60, 120]
    assert got["docs"] == {"pool": 300, "valid": 80, "test": 150, "lm_text": 400}
    for arm in ("scratch", "supervised", "semi-supervised", "tfidf"):
        for n in ("60", "120"):
            assert len(got["results"][arm][n]) == 2
            assert all(0 <= v <= 100 for v in got["results"][arm][n])

    # A later run reuses that semi-supervised LM instead of fine-tuning it again.
    semi = tmp_path / "lm_ft_all"
    stamp = (semi / "model.safetensors").stat().st_mtime_ns
    again = [*argv, "--arms", "semi-supervised", "--sizes", "60", "--repeats", "1"]
    assert lowshot.main([*again, "--semi-lm", str(semi)]) == 0
    assert f"reused: `{semi}`" in results.read_text()
    assert (semi / "model.safetensors").stat().st_mtime_ns == stamp  # not trained again
    with pytest.raises(SystemExit):
        lowshot.main([*again, "--semi-lm", str(tmp_path / "nowhere")])

    # TF-IDF alone trains no language model, and learns from the subset alone: a refit on
    # train + valid would give it 80 more labels than the other arms see.
    seen: list[tuple[int, bool]] = []
    real = lowshot.tfidf_baseline

    def spy(*a: Any, **k: Any) -> Any:
        seen.append((len(a[0]), k.get("refit", True)))
        return real(*a, **k)

    monkeypatch.setattr(lowshot, "tfidf_baseline", spy)
    bare = tmp_path / "bare"
    tfidf_only = [*argv, "--arms", "tfidf", "--sizes", "60", "--repeats", "1"]
    assert lowshot.main([*tfidf_only, "--out-dir", str(bare)]) == 0
    assert seen == [(60, False)]
    assert not (bare / "lm_pretrained").exists()
    assert "No language model (TF-IDF only)." in results.read_text()
