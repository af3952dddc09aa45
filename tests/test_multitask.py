"""Multi-task classification: masked missing targets, the task sampler, heads of every
kind trained together, save/load, and old single-head directories."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tiny_classifier import write_toy_lm  # type: ignore[import-not-found]
from ulmfit.inference import num_threads
from ulmfit.tasks.classify import ClassifierTrainConfig, TextClassifier, UnfreezeStage
from ulmfit.tasks.heads import regression_metrics
from ulmfit.tasks.multitask import (
    HeadSpec,
    MultiTaskClassifier,
    MultiTaskConfig,
    _Targets,
    masked_loss,
    task_order,
)
from ulmfit.training.config import TrainConfig

FIXTURES = Path(__file__).parent / "fixtures"
FILLER = ["the", "a", "movie", "film", "plot", "actor", "scene", "story", "it", "was", "very"]
KEYS = {"good": "pos", "great": "pos", "bad": "neg", "awful": "neg"}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    with num_threads(1):
        yield


@pytest.fixture(scope="module")
def toy_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_lm(tmp_path_factory.mktemp("toy_lm") / "lm", [*FILLER, *KEYS])


def toy(n: int, seed: int) -> tuple[list[str], dict[str, list[Any]]]:
    """Filler with a keyword (and sometimes 'very' repeated). Heads: the sentiment
    (labelled for 2 in 3 documents), the keyword (4 in 5), the keywords present as a
    multi-label set, and the number of 'very' (a regression target, every other one)."""
    rng = np.random.default_rng(seed)
    keys = list(KEYS)
    texts: list[str] = []
    heads: dict[str, list[Any]] = {"sent": [], "word": [], "tags": [], "very": []}
    for i in range(n):
        k = keys[i % 4]
        n_very = int(rng.integers(0, 4))
        words = list(rng.choice(FILLER[:-1], size=int(rng.integers(3, 10))))
        words.insert(int(rng.integers(0, len(words) + 1)), k)
        words += ["very"] * n_very
        texts.append(" ".join(words))
        heads["sent"].append(KEYS[k] if i % 3 else None)
        heads["word"].append(k if i % 5 else None)
        heads["tags"].append([k, KEYS[k]] if i % 7 else None)
        heads["very"].append(float(n_very) if i % 3 != 1 else None)
    return texts, heads


def config(*heads: HeadSpec, **changes: Any) -> MultiTaskConfig:
    clf = ClassifierTrainConfig(
        bs=16,
        head_hidden=8,
        stages=(UnfreezeStage(0, 12, 2e-2),),
        train=TrainConfig(progress=False, log_every=10),
        device="cpu",
    )
    return MultiTaskConfig(heads=heads, classifier=clf, **changes)


def test_missing_targets_give_zero_loss_and_zero_gradients() -> None:
    loss_fn = torch.nn.CrossEntropyLoss()
    values = np.array([0, 2, 0, 1], dtype=np.int64)
    mask = np.array([True, False, False, True])
    target = _Targets(values, mask, torch.device("cpu"))
    logits = torch.randn(3, 3, requires_grad=True)
    ids = torch.tensor([1, 2, 3])  # documents 1 and 2 have no label for this head
    loss = masked_loss(loss_fn, logits, target, ids)
    assert torch.allclose(loss, loss_fn(logits[2:], torch.tensor([1])))
    loss.backward()
    assert logits.grad is not None
    assert torch.all(logits.grad[:2] == 0) and torch.any(logits.grad[2] != 0)
    none = torch.randn(2, 3, requires_grad=True)
    zero = masked_loss(loss_fn, none, target, torch.tensor([1, 2]))
    zero.backward()
    assert float(zero.detach()) == 0.0 and none.grad is not None and torch.all(none.grad == 0)


def test_the_sampler_draws_tasks_in_the_configured_proportions() -> None:
    sizes = [30, 10]
    for epoch in range(3):
        order = task_order(sizes, "proportional", 2.0, seed=0, epoch=epoch)
        assert sorted(order) == [0] * 30 + [1] * 10  # each task's batches exactly once
    assert task_order(sizes, "proportional", 2.0, 0, 0) != task_order(
        sizes, "proportional", 2.0, 0, 1
    )
    assert task_order(sizes, "proportional", 2.0, 0, 4) == task_order(
        sizes, "proportional", 2.0, 0, 4
    )
    rr = task_order(sizes, "round_robin", 2.0, 0, 0)
    assert rr[:4] == [0, 1, 0, 1] and len(rr) == 40
    # Temperature: p ~ n^(1/T); over 100 epochs the shares are the formula's within 2%.
    for temp, want in ((1.0, 0.75), (2.0, 30**0.5 / (30**0.5 + 10**0.5)), (100.0, 0.5)):
        draws = [t for e in range(100) for t in task_order(sizes, "temperature", temp, 0, e)]
        assert abs(draws.count(0) / len(draws) - want) < 0.02, (temp, want)
    assert task_order([5, 0, 3], "round_robin", 2.0, 0, 0) == [0, 2] * 4  # an empty task


@pytest.mark.parametrize("batching", ["per_task", "mixed"])
def test_an_epoch_draws_each_tasks_own_documents(batching: str) -> None:
    """Two tasks on disjoint documents: a per-task epoch has each task's batches, made of
    that task's documents only; a mixed one covers every document once."""
    from ulmfit.data.classification import ClassificationBatches
    from ulmfit.tasks.multitask import MultiTaskTask

    rng = np.random.default_rng(0)
    docs = [rng.integers(5, 20, size=int(rng.integers(1, 30))) for _ in range(130)]
    parts = [np.arange(0, 100), np.arange(100, 130)]  # task 0: 100 documents, task 1: 30
    batches = [
        ClassificationBatches([docs[i] for i in p], p, 8, train=True, seed=k)
        for k, p in enumerate(parts)
    ]
    cfg = config(HeadSpec("a"), HeadSpec("b"), batching=batching)
    task = MultiTaskTask(None, batches, {}, {}, {}, cfg, None)  # type: ignore[arg-type]
    for epoch in range(2):
        seen = [b.y.numpy() for b in task.train_batches(epoch, 0)]  # type: ignore[union-attr]
        assert len(seen) == task.n_batches(epoch)
        if batching == "per_task":
            owners = [int(ids[0] >= 100) for ids in seen]
            assert all(((ids >= 100) == bool(o)).all() for ids, o in zip(seen, owners, strict=True))
            assert owners.count(0) == len(batches[0]) and owners.count(1) == len(batches[1])
        else:
            assert sorted(np.concatenate(seen).tolist()) == list(range(130))


def test_mixed_batches_draw_documents_in_the_configured_proportions() -> None:
    from ulmfit.tasks.multitask import mixed_draw, task_weights

    a, b = np.arange(0, 300), np.arange(300, 400)  # 300 documents of one task, 100 of another
    once = mixed_draw([a, b], 400, "proportional", 2.0, seed=0, epoch=0)
    assert sorted(once.tolist()) == list(range(400))  # each document once
    assert task_weights([300, 100], "round_robin", 2.0).tolist() == [0.5, 0.5]
    for sampling, want in (("round_robin", 0.5), ("temperature", 3**0.5 / (3**0.5 + 1))):
        drawn = np.concatenate([mixed_draw([a, b], 400, sampling, 2.0, 0, e) for e in range(50)])
        assert abs(float((drawn < 300).mean()) - want) < 0.02, sampling


def test_heads_of_every_kind_train_together_and_round_trip(toy_lm: Path, tmp_path: Path) -> None:
    texts, heads = toy(480, 0)
    test_texts, test_heads = toy(120, 1)
    cfg = config(
        HeadSpec("sent"),
        HeadSpec("word", weight=0.5),
        HeadSpec("tags", kind="multilabel"),
        HeadSpec("very", kind="regression", regression_loss="huber"),
    )
    mt = MultiTaskClassifier(toy_lm, cfg).fit(texts, heads)
    report = mt.evaluate(test_texts, test_heads)
    assert report["sent"]["accuracy"] >= 0.95 and report["word"]["accuracy"] >= 0.95
    assert report["tags"]["micro_f1"] >= 0.9
    assert report["very"]["pearson"] > 0.8  # the count of a repeated word, from pooling
    thresholds = mt.thresholds["tags"]
    assert thresholds is not None and thresholds.shape == (6,)  # per label, tuned
    assert mt.thresholds["sent"] is None
    pred = mt.predict(test_texts[:4])
    assert set(pred) == {"sent", "word", "tags", "very"}
    assert all(isinstance(v, float) for v in pred["very"])
    mt.save(tmp_path / "mt")
    a = MultiTaskClassifier.load(tmp_path / "mt", device="cpu")
    b = MultiTaskClassifier.load(tmp_path / "mt", device="cpu")
    pa, pb, pm = (
        a.predict_proba(test_texts),
        b.predict_proba(test_texts),
        mt.predict_proba(test_texts),
    )
    for name in pm:
        assert np.array_equal(pa[name], pb[name])  # loading is exact
        assert np.allclose(pa[name], pm[name], atol=1e-5)
    assert np.array_equal(a.thresholds["tags"], thresholds)  # type: ignore[arg-type]
    assert a.predict(test_texts) == mt.predict(test_texts)
    assert a.evaluate(test_texts, test_heads)["very"] == pytest.approx(report["very"])
    # The encoder is stored once, every head by name.
    from safetensors import safe_open

    with safe_open(str(tmp_path / "mt" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys.count("encoder.embedding.weight") == 1 and all(
        k.startswith(("encoder.", "heads.")) for k in keys
    )
    assert {k.split(".")[1] for k in keys if k.startswith("heads.")} == {
        "sent",
        "word",
        "tags",
        "very",
    }


def test_bad_multitask_labels_are_refused(toy_lm: Path) -> None:
    texts, heads = toy(20, 0)
    mt = MultiTaskClassifier(toy_lm, config(HeadSpec("sent"), HeadSpec("very", kind="regression")))
    with pytest.raises(ValueError, match=r"heads \['very'\] missing"):
        mt.fit(texts, {"sent": heads["sent"]})
    with pytest.raises(ValueError, match="no labelled text"):
        mt.fit(texts, {"sent": heads["sent"], "very": [None] * 20})
    with pytest.raises(ValueError, match="'many' is not a finite number"):
        mt.fit(texts, {"sent": heads["sent"], "very": ["many"] * 20})
    # The error names the document's own row, not its place among the labelled ones.
    bad = [None, None, "abc", *([1.0] * 17)]
    no_split = config(HeadSpec("sent"), HeadSpec("very", kind="regression"))
    no_split = MultiTaskConfig(
        heads=no_split.heads, classifier=no_split.classifier.replace(valid_frac=0.0)
    )
    with pytest.raises(ValueError, match="head 'very': line 3: regression target 'abc'"):
        MultiTaskClassifier(toy_lm, no_split).fit(texts, {"sent": heads["sent"], "very": bad})
    with pytest.raises(ValueError, match=r"a label list .* per head"):
        mt.fit(texts, heads_of(heads, "sent", "very"), valid=(texts[:3], {"sent": [None] * 3}))


def heads_of(heads: dict[str, list[Any]], *names: str) -> dict[str, list[Any]]:
    return {n: heads[n] for n in names}


def test_regression_targets_read_from_files(tmp_path: Path) -> None:
    from ulmfit.data.classification import read_labelled
    from ulmfit.tasks.heads import RegressionLabels

    path = tmp_path / "r.jsonl"
    rows = [{"text": "a", "y": 3.5}, {"text": "b", "y": 4}, {"text": "c", "y": "2.25"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = read_labelled(path, label_column="y", task="regression")
    y = RegressionLabels("y").encode(data.labels or [], data.rows, str(path))
    assert y[:, 0].tolist() == [3.5, 4.0, 2.25]
    path.write_text(json.dumps({"text": "a", "y": "n/a"}) + "\n")
    data = read_labelled(path, label_column="y", task="regression")
    with pytest.raises(ValueError, match=r"r\.jsonl: line 1: regression target 'n/a'"):
        RegressionLabels("y").encode(data.labels or [], data.rows, str(path))
    with pytest.raises(ValueError, match="repeated names"):
        config(HeadSpec("a"), HeadSpec("a"))


def test_regression_metrics_by_hand() -> None:
    m = regression_metrics(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 2.0, 2.5, 5.0]))
    assert m["mae"] == pytest.approx(0.5)
    assert m["rmse"] == pytest.approx((0.25 + 0 + 0.25 + 1) ** 0.5 / 2)
    assert m["r2"] == pytest.approx(1 - 1.5 / 5.0)
    assert m["spearman"] == pytest.approx(1.0)


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_a_single_head_directory_from_before_still_predicts_the_same(task: str) -> None:
    """Directories saved by ulmfit before multi-task heads (commit b6ea22a; written by
    fixtures/make_classifier_before_multitask.py) load and give the same numbers."""
    root = FIXTURES / "classifier_before_multitask"
    expected = json.loads((root / "expected.json").read_text())
    clf = TextClassifier.load(root / task, device="cpu")
    probs = clf.predict_proba(expected["texts"])
    assert np.array_equal(probs, np.asarray(expected[task]["probs"], dtype=np.float32))
    assert clf.predict(expected["texts"]) == expected[task]["predict"]


def test_tasks_tables_from_toml_train_evaluate_and_predict(
    tmp_path: Path, wiki_lm: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``[[tasks]]`` in a run config: TREC coarse and fine on the same questions plus
    SemEval emotions on other texts (so each document misses some heads' labels); then
    ``evaluate --head`` and ``predict`` with a column group per head."""
    import lzma

    from ulmfit.cli.main import main

    with lzma.open(shared_data / "trec/train.csv.xz", "rt", encoding="utf-8") as f:
        trec = f.read().splitlines()
    (tmp_path / "trec.csv").write_text("\n".join(trec[:161]) + "\n")
    seen = {line.split(",")[1] for line in trec[1:161]}  # fine labels the sample has
    held = [line for line in trec[1000:] if line.split(",")[1] in seen][:41]
    (tmp_path / "trec_test.csv").write_text("\n".join([trec[0], *held]) + "\n")
    with lzma.open(shared_data / "semeval2018_ec/train.jsonl.xz", "rt", encoding="utf-8") as f:
        tweets = f.read().splitlines()
    (tmp_path / "tweets.jsonl").write_text("\n".join(tweets[:120]) + "\n")
    (tmp_path / "tweets_test.jsonl").write_text("\n".join(tweets[1000:1030]) + "\n")
    d = tmp_path.as_posix()
    (tmp_path / "run.toml").write_text(
        f"""
[classifier]
bs = 32
max_len = 60
device = "cpu"
stages = [{{groups = 1, epochs = 1, lr = 0.02}}, {{groups = 0, epochs = 2, lr = 0.01}}]

[multitask]
sampling = "temperature"

[[tasks]]
name = "coarse"
train = "{d}/trec.csv"
test = "{d}/trec_test.csv"

[[tasks]]
name = "fine"
train = "{d}/trec.csv"
test = "{d}/trec_test.csv"
label_column = "fine_label"
weight = 0.5

[[tasks]]
name = "emotion"
kind = "multilabel"
train = "{d}/tweets.jsonl"
test = "{d}/tweets_test.jsonl"
label_column = "labels"
"""
    )
    out = tmp_path / "out"
    args = ["-q", "train-classifier", "--config", str(tmp_path / "run.toml"), "--lm", str(wiki_lm)]
    assert main([*args, "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "coarse: accuracy" in printed and "emotion: micro-F1" in printed
    report = json.loads((out / "report.json").read_text())
    assert set(report["test"]) == {"coarse", "fine", "emotion"}
    assert report["test"]["coarse"]["n"] == 41 and report["test"]["emotion"]["n"] == 30
    assert (out / "evaluation_coarse.png").exists() and (out / "evaluation_emotion.png").exists()
    clf_dir = out / "classifier"
    mt = MultiTaskClassifier.load(clf_dir, device="cpu")
    assert mt.head_names == ["coarse", "fine", "emotion"] and mt.config.sampling == "temperature"
    assert mt.thresholds["emotion"] is not None  # a multilabel head's tuned thresholds
    # evaluate: a head by name; without one, the error lists them.
    ev = ["-q", "evaluate", str(clf_dir), "--data", str(tmp_path / "trec_test.csv")]
    assert main([*ev, "--label-column", "fine_label", "--head", "fine"]) == 0
    assert "head: fine" in capsys.readouterr().out
    both = [
        *ev,
        "--head",
        "coarse",
        "--head",
        "fine=fine_label",
        "--json",
        str(tmp_path / "e.json"),
    ]
    assert main(both) == 0
    printed = capsys.readouterr().out
    assert "head: coarse" in printed and "head: fine" in printed
    scores = json.loads((tmp_path / "e.json").read_text())["heads"]
    assert scores["coarse"]["accuracy"] == pytest.approx(report["test"]["coarse"]["accuracy"])
    assert main(ev) == 2
    assert "NAME one of coarse | fine | emotion" in capsys.readouterr().err
    pred = tmp_path / "pred.csv"
    assert (
        main(
            ["-q", "predict", str(clf_dir), "-i", str(tmp_path / "trec_test.csv"), "-o", str(pred)]
        )
        == 0
    )
    header, *rows = pred.read_text().splitlines()
    cols = header.split(",")
    assert cols[:2] == ["row", "coarse"] and "fine" in cols and "emotion" in cols
    assert "coarse.p_LOC" in cols and "emotion.p_joy" in cols
    assert len(rows) == 41
    want = mt.predict([line.split(",", 2)[2] for line in held])
    assert [r.split(",")[1] for r in rows] == want["coarse"]
    # A label in a test file that training never saw stops the run first, naming the line.
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([*trec[:40], "NOPE,NOPE:x,what ?"]) + "\n")
    toml = (tmp_path / "run.toml").read_text().replace(f"{d}/trec_test.csv", bad.as_posix(), 1)
    (tmp_path / "bad.toml").write_text(toml)
    bad_args = [
        "-q",
        "train-classifier",
        "--config",
        str(tmp_path / "bad.toml"),
        "--lm",
        str(wiki_lm),
    ]
    assert main([*bad_args, "--out-dir", str(tmp_path / "out2")]) == 2
    assert "bad.csv: line 41" in capsys.readouterr().err
    assert not (tmp_path / "out2" / "classifier").exists()


def test_mixed_batching_trains_every_head(toy_lm: Path) -> None:
    texts, heads = toy(480, 0)
    test_texts, test_heads = toy(120, 1)
    cfg = config(HeadSpec("sent"), HeadSpec("word"), batching="mixed", sampling="temperature")
    mt = MultiTaskClassifier(toy_lm, cfg).fit(texts, heads_of(heads, "sent", "word"))
    report = mt.evaluate(test_texts, heads_of(test_heads, "sent", "word"))
    assert report["sent"]["accuracy"] >= 0.95 and report["word"]["accuracy"] >= 0.95


def test_the_server_answers_every_head_from_one_pass(toy_lm: Path) -> None:
    """``create_app`` with a multi-task model: /predict gives each head's labels (as
    ``predict`` decides them), /info the heads, /explain a clear refusal."""
    import time

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from ulmfit.serve.app import create_app
    from ulmfit.serve.config import ServeConfig

    texts, heads = toy(240, 0)
    cfg = config(
        HeadSpec("sent"), HeadSpec("tags", kind="multilabel"), HeadSpec("very", kind="regression")
    )
    mt = MultiTaskClassifier(toy_lm, cfg).fit(texts, heads_of(heads, "sent", "tags", "very"))
    probe, _ = toy(5, 3)
    with TestClient(create_app(lambda: mt, ServeConfig())) as client:
        deadline = time.monotonic() + 30
        while client.get("/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        info = client.get("/info").json()
        assert info["task"] == "multitask" and set(info["heads"]) == {"sent", "tags", "very"}
        body = client.post("/predict", json={"inputs": probe}).json()
        want = mt.predict(probe)
        assert [r["sent"][0]["label"] for r in body] == want["sent"]
        assert [sorted(x["label"] for x in r["tags"]) for r in body] == [
            sorted(t) for t in want["tags"]
        ]
        assert [r["very"][0]["score"] for r in body] == pytest.approx(want["very"], abs=1e-5)
        one = client.post("/predict", json={"inputs": probe[0]}).json()
        assert set(one) == {"sent", "tags", "very"}
        refused = client.post("/explain", json={"inputs": probe[0]})
        assert refused.status_code == 422 and "multi-task" in refused.json()["error"]
        assert len(client.post("/embed", json={"inputs": probe}).json()) == 5
