"""Hierarchical classification end to end: the three heads on the ULMFiT encoder, their
losses and decoders, labels read from files, save/load, and the CLI on 20 Newsgroups."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tiny_classifier import write_toy_lm  # type: ignore[import-not-found]
from ulmfit.cli.main import main
from ulmfit.data.classification import read_labelled
from ulmfit.data.taxonomy import HierarchicalLabels, Taxonomy, TaxonomyError
from ulmfit.inference import num_threads
from ulmfit.models.classifier import LabelGraphLinear
from ulmfit.tasks.classify import ClassifierTrainConfig, TextClassifier, UnfreezeStage
from ulmfit.tasks.heads import (
    HierarchyConfig,
    PerParentHead,
    PerParentLoss,
    make_head,
    node_parents,
)
from ulmfit.training.config import TrainConfig

FILLER = ["the", "a", "movie", "film", "plot", "actor", "scene", "story", "it", "was", "very"]
# The keyword says the leaf; its parent is the sentiment.
KEYS = {"good": "pos/good", "great": "pos/great", "bad": "neg/bad", "awful": "neg/awful"}
QUICK = TrainConfig(progress=False, log_every=10)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    with num_threads(1):
        yield


@pytest.fixture(scope="module")
def toy_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 2-layer LM over the toy vocabulary."""
    return write_toy_lm(tmp_path_factory.mktemp("toy_lm") / "lm", [*FILLER, *KEYS])


def keyword_docs(n: int, seed: int, two: bool = False) -> tuple[list[str], list[Any]]:
    """Filler with one keyword (or, with ``two``, a keyword from each branch: two paths)."""
    rng = np.random.default_rng(seed)
    keys = list(KEYS)
    texts, labels = [], []
    for i in range(n):
        chosen = [keys[i % 2], keys[2 + (i // 2) % 2]] if two else [keys[i % 4]]
        words = list(rng.choice(FILLER, size=int(rng.integers(3, 12))))
        for k in chosen:
            words.insert(int(rng.integers(0, len(words) + 1)), k)
        texts.append(" ".join(words))
        labels.append([KEYS[k] for k in chosen] if two else KEYS[chosen[0]])
    return texts, labels


def config(head: str, **hier: Any) -> ClassifierTrainConfig:
    return ClassifierTrainConfig(
        task="hierarchical",
        bs=16,
        head_hidden=8,
        stages=(UnfreezeStage(0, 15, 2e-2),),
        train=QUICK,
        device="cpu",
        hierarchy=HierarchyConfig(head=head, **hier),  # type: ignore[arg-type]
    )


def consistent(paths: list[str]) -> bool:
    """Every predicted path's nodes form a path (a parent for every node but a root)."""
    return all(p and all(part for part in p.split("/")) for p in paths)


@pytest.mark.parametrize(
    ("head", "extra"),
    [("flat", {}), ("per_parent", {"logit_adjust": 1.0}), ("graph", {})],
)
def test_each_head_learns_the_tree_and_round_trips(
    head: str, extra: dict[str, Any], toy_lm: Path, tmp_path: Path
) -> None:
    texts, labels = keyword_docs(400, 0)
    test_texts, test_labels = keyword_docs(80, 1)
    clf = TextClassifier(toy_lm, config(head, **extra)).fit(texts, labels, label_sep="/")
    assert clf.labels is not None
    assert clf.labels.classes == ["pos", "pos/good", "pos/great", "neg", "neg/bad", "neg/awful"]
    probs = clf.predict_proba(test_texts)
    assert probs.shape == (80, 6)
    pred = clf.predict(test_texts)
    acc = np.mean([p == [y] for p, y in zip(pred, test_labels, strict=True)])
    assert acc >= 0.95, (head, acc, pred[:5])
    if head == "per_parent":  # columns: each node's probability along its path
        leaves = [1, 2, 4, 5]
        assert np.allclose(probs[:, leaves].sum(1), 1, atol=1e-5)
        assert np.allclose(probs[:, 1] + probs[:, 2], probs[:, 0], atol=1e-5)
        head_obj = clf.head
        assert isinstance(head_obj, PerParentHead) and head_obj.priors is not None
    clf.save(tmp_path / "clf")
    loaded = TextClassifier.load(tmp_path / "clf", device="cpu")
    again = TextClassifier.load(tmp_path / "clf", device="cpu")
    assert loaded.config.hierarchy == clf.config.hierarchy
    assert loaded.labels == clf.labels
    got = loaded.predict_proba(test_texts)
    assert np.array_equal(got, again.predict_proba(test_texts))  # loading is exact
    # The fitted model's weights are the saved ones; its arithmetic may differ in the
    # last bit (weights restored from the best epoch are laid out differently).
    assert np.allclose(got, probs, atol=1e-6)
    assert loaded.predict(test_texts) == pred
    if clf.thresholds is not None:
        assert np.array_equal(loaded.thresholds, clf.thresholds)  # type: ignore[arg-type]


def test_the_flat_head_predicts_several_paths(toy_lm: Path) -> None:
    texts, labels = keyword_docs(400, 0, two=True)
    assert labels[0] == ["pos/good", "neg/bad"]
    test_texts, test_labels = keyword_docs(60, 1, two=True)
    clf = TextClassifier(toy_lm, config("flat")).fit(texts, labels, label_sep="/")
    pred = clf.predict(test_texts)
    right = [sorted(p) == sorted(y) for p, y in zip(pred, test_labels, strict=True)]
    assert np.mean(right) >= 0.9, pred[:5]
    assert all(consistent(p) for p in pred)


def test_per_parent_loss_is_cross_entropy_under_each_true_parent() -> None:
    tax = Taxonomy.from_paths([("a", "a1"), ("a", "a2"), ("b", "b1"), ("b", "b2"), ("b", "b3")])
    labels = HierarchicalLabels(tax)
    head = make_head("hierarchical", labels, HierarchyConfig(head="per_parent"))
    y = torch.from_numpy(labels.encode([["a", "a2"], ["b", "b3"]]))
    logits = torch.randn(2, len(tax), requires_grad=True)
    loss = head.loss(y.numpy())(logits, y)
    a, a1, a2, b, b1, b2, b3 = range(7)
    lsm = torch.log_softmax
    want = (
        -(
            lsm(logits[0, [a, b]], 0)[0]
            + lsm(logits[0, [a1, a2]], 0)[1]
            + lsm(logits[1, [a, b]], 0)[1]
            + lsm(logits[1, [b1, b2, b3]], 0)[2]
        )
        / 2
    )
    assert torch.allclose(loss, want)
    loss.backward()
    assert logits.grad is not None
    # Document 0's true parent is a: b's children get no gradient from it, and vice versa.
    assert torch.all(logits.grad[0, [b1, b2, b3]] == 0)
    assert torch.all(logits.grad[1, [a1, a2]] == 0)
    assert isinstance(head.loss(y.numpy()), PerParentLoss)


def test_consistent_decoding_for_random_scores() -> None:
    """Property test over the heads' decoders: random probabilities, thresholds and
    settings never give a node without its parent."""
    tax = Taxonomy.from_paths(
        [("a", "a1", "x"), ("a", "a1", "y"), ("a", "a2"), ("b", "b1"), ("b", "b2", "z"), ("c",)]
    )
    labels = HierarchicalLabels(tax)
    rng = np.random.default_rng(0)
    for trial in range(200):
        cfg = HierarchyConfig(
            head=("flat", "per_parent", "graph")[trial % 3],  # type: ignore[arg-type]
            decode=("greedy", "best_path")[trial % 2],  # type: ignore[arg-type]
            mandatory_leaf=bool(trial % 4 < 2),
            stop=float(rng.random()),
        )
        head = make_head("hierarchical", labels, cfg)
        logits = torch.from_numpy(rng.normal(size=(10, len(tax))) * 3).float()
        probs = head.probs(logits).numpy()
        t = rng.random(len(tax))
        chosen = head.chosen(probs, t)  # type: ignore[attr-defined]
        for row in chosen:
            nodes = {tax.nodes[k] for k in np.flatnonzero(row)}
            assert all(len(n) == 1 or n[:-1] in nodes for n in nodes)
            if cfg.mandatory_leaf:
                assert nodes and any(tax.is_leaf(n) for n in nodes)


def test_the_label_graph_layer_shares_through_the_tree() -> None:
    torch.manual_seed(0)
    tax = Taxonomy.from_paths([("a", "a1"), ("a", "a2"), ("b", "b1")])
    parents = node_parents(HierarchicalLabels(tax))
    assert parents == (-1, 0, 0, -1, 3)
    layer = LabelGraphLinear(8, parents)
    x = torch.randn(4, 8)
    before = layer(x).detach()
    with torch.no_grad():  # a change to node a's embedding moves a's children, not b's
        layer.label_emb[0] += 3.0
    after = layer(x).detach()
    assert not torch.allclose(before[:, [1, 2]], after[:, [1, 2]])  # top-down
    assert torch.equal(before[:, [3, 4]], after[:, [3, 4]])  # the other branch: untouched
    with torch.no_grad():  # a change to a1 moves its parent a (bottom-up), not b
        layer.label_emb[1] += 3.0
    last = layer(x).detach()
    assert not torch.allclose(after[:, 0], last[:, 0])
    assert torch.equal(after[:, [3, 4]], last[:, [3, 4]])


def test_labels_from_files_and_their_errors(tmp_path: Path, shared_data: Path) -> None:
    tax = Taxonomy.read(shared_data / "20newsgroups/taxonomy.txt")
    jsonl = tmp_path / "d.jsonl"
    rows = [
        {"text": "one", "label": ["comp", "comp.graphics"]},  # a path as a list
        {"text": "two", "label": "sci.space"},  # a bare leaf name
        {"text": "three", "label": [["rec", "rec.autos"], ["sci", "sci.med"]]},  # two paths
        {"text": "four", "label": "talk/talk.politics.guns"},  # a path with the separator
    ]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = read_labelled(jsonl, task="hierarchical")
    labels = HierarchicalLabels(tax, "/")
    assert labels.decode(labels.encode(data.labels or [], data.rows, str(jsonl))) == [
        ["comp/comp.graphics"],
        ["sci/sci.space"],
        ["rec/rec.autos", "sci/sci.med"],
        ["talk/talk.politics.guns"],
    ]
    # With a separator every item of a list is a path, whatever it holds: one shape, one
    # meaning (no path is guessed from whether an item happens to contain the separator).
    from ulmfit.data.taxonomy import label_paths

    assert label_paths(["Arts", "Sports"], "/", None, "x") == [("Arts",), ("Sports",)]
    assert label_paths(["Arts", "Science/Physics"], "/", None, "x") == [
        ("Arts",),
        ("Science", "Physics"),
    ]
    assert label_paths(["Arts", "Music"], None, None, "x") == [("Arts", "Music")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"text": "x", "label": "comp.graphix"}))
    data = read_labelled(bad, task="hierarchical")
    with pytest.raises(TaxonomyError, match=r"bad\.jsonl: line 2: unknown label 'comp\.graphix'"):
        labels.encode(data.labels or [], data.rows, str(bad))
    csv = tmp_path / "d.csv"
    csv.write_text("text,label\nhello,Science>Physics\nbye,\n")
    with pytest.raises(Exception, match=r"d\.csv: line 3: label field 'label'"):
        read_labelled(csv, task="hierarchical")


def test_cli_end_to_end_on_20_newsgroups(
    tmp_path: Path, wiki_lm: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """train-classifier -> evaluate -> predict on a 20 Newsgroups sample: leaf names
    completed by the taxonomy file, a per-level table, JSON and PNG, paths in the output."""
    import lzma

    ng = shared_data / "20newsgroups"
    for split, n in (("train", 240), ("test", 60)):
        with lzma.open(ng / f"{split}.jsonl.xz", "rt", encoding="utf-8") as f:
            lines = f.readlines()
        step = len(lines) // n  # every k-th message: all groups in the sample
        sample = [json.loads(x) for x in lines[::step][:n]]
        (tmp_path / f"{split}.jsonl").write_text(
            "".join(
                json.dumps({"text": r["text"][:400], "group": r["label"]}) + "\n" for r in sample
            )
        )
    out = tmp_path / "run"
    common = ["--data.label-column", "group", "--data.taxonomy", str(ng / "taxonomy.txt")]
    args = ["train-classifier", "--lm", str(wiki_lm), "--out-dir", str(out)]
    args += [
        "--data.train",
        str(tmp_path / "train.jsonl"),
        "--data.test",
        str(tmp_path / "test.jsonl"),
    ]
    args += [*common, "--classifier.task", "hierarchical", "--classifier.hierarchy.head"]
    args += ["per_parent", "--classifier.bs", "32", "--classifier.max-len", "100"]
    args += ["--classifier.device", "cpu"]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    test = report["test"]
    assert test["n"] == 60 and test["inconsistent_predictions"] == 0
    assert [r["nodes"] for r in test["levels"]] == [7, 20]
    assert 0 <= test["hierarchical"]["micro"]["f1"] <= 1
    assert "hierarchical" in report["baseline"]
    assert (out / "evaluation.png").stat().st_size > 1000
    clf_dir = out / "classifier"
    evaluate = ["evaluate", str(clf_dir), "--data", str(tmp_path / "test.jsonl")]
    evaluate += ["--label-column", "group", "--json", str(tmp_path / "e.json")]
    evaluate += ["--plot", str(tmp_path / "levels.png")]
    assert main(evaluate) == 0
    again = json.loads((tmp_path / "e.json").read_text())
    assert again["hierarchical"] == test["hierarchical"]
    assert (tmp_path / "levels.png").stat().st_size > 1000
    pred = tmp_path / "pred.csv"
    predict = ["predict", str(clf_dir), "-i", str(tmp_path / "test.jsonl"), "-o", str(pred)]
    assert main(predict) == 0
    header, *lines = pred.read_text().splitlines()
    assert header.split(",")[:4] == ["row", "label", "p_alt", "p_comp"]
    assert "p_comp/comp.graphics" in header.split(",")
    assert len(lines) == 60
    tax = Taxonomy.read(ng / "taxonomy.txt")
    for line in lines:
        path = tuple(line.split(",")[1].split("/"))
        assert path in tax and tax.is_leaf(path)  # per_parent, mandatory leaf: a full path
    # A test label outside the taxonomy stops the run before any training, naming its line.
    # With a separator every item of a list is a path, whatever it holds: one shape, one
    # meaning (no path is guessed from whether an item happens to contain the separator).
    from ulmfit.data.taxonomy import label_paths

    assert label_paths(["Arts", "Sports"], "/", None, "x") == [("Arts",), ("Sports",)]
    assert label_paths(["Arts", "Science/Physics"], "/", None, "x") == [
        ("Arts",),
        ("Science", "Physics"),
    ]
    assert label_paths(["Arts", "Music"], None, None, "x") == [("Arts", "Music")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text((tmp_path / "test.jsonl").read_text() + '{"text": "x", "group": "rec.boats"}\n')
    args2 = [a if a != str(tmp_path / "test.jsonl") else str(bad) for a in args]
    args2[args2.index(str(out))] = str(tmp_path / "run2")
    assert main(args2) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl: line 61: unknown label 'rec.boats'" in err
    assert not (tmp_path / "run2" / "classifier").exists()
