"""benchmarks/reproduce.py: the harness produces a RESULTS row on a tiny budget."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from conftest import load_benchmark

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
