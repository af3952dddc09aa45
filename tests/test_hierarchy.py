"""Labels in a taxonomy: paths, taxonomy files and their errors, and the hierarchical
metrics against hand-worked values and hiclass's own functions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ulmfit.data.taxonomy import Taxonomy, TaxonomyError, parse_path
from ulmfit.tasks import hierarchical_metrics as H


def test_paths_from_lists_separators_and_bare_names(shared_data: Path) -> None:
    tax = Taxonomy.read(shared_data / "20newsgroups/taxonomy.txt")
    assert len(tax.level(1)) == 7 and len(tax.leaves) == 20 and tax.depth == 2
    assert tax.children(("comp",))[0] == ("comp", "comp.graphics")
    where = "train.jsonl, line 3"
    assert tax.resolve(["comp", "comp.graphics"], None, where) == ("comp", "comp.graphics")
    assert tax.resolve("comp/comp.graphics", "/", where) == ("comp", "comp.graphics")
    assert tax.resolve("comp.graphics", None, where) == ("comp", "comp.graphics")  # a leaf name
    assert tax.resolve("rec", None, where) == ("rec",)  # an inner node
    with pytest.raises(TaxonomyError, match=r"line 3: unknown label 'comp/comp\.graphix'.*"
                       r"comp has no child 'comp\.graphix'"):  # fmt: skip
        tax.resolve(["comp", "comp.graphix"], None, where)
    with pytest.raises(TaxonomyError, match="'science' is not a root"):
        tax.resolve("science/physics", "/", where)
    with pytest.raises(TaxonomyError, match="empty part"):
        parse_path("a//b", "/", where)
    with pytest.raises(TaxonomyError, match="a string or a list of strings"):
        parse_path(["a", 3], None, where)  # type: ignore[list-item]


def test_the_same_name_under_two_parents_is_two_nodes() -> None:
    tax = Taxonomy.from_paths([("Science", "Optics"), ("Arts", "Optics"), ("Arts",)])
    assert tax.nodes == (("Science",), ("Science", "Optics"), ("Arts",), ("Arts", "Optics"))
    assert tax.resolve("Arts/Optics", "/", "x") == ("Arts", "Optics")
    with pytest.raises(TaxonomyError, match="'Optics' names 2 nodes"):
        tax.resolve("Optics", None, "x")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["a\tb", "a b"], r"line 2: expected 'parent<TAB>child'"),
        (["a\tb", "c\tb"], r"line 2: 'b' gets a second parent 'c' \(line 1 gave it 'a'\)"),
        (["a\tb", "b\tc", "c\ta"], r"line 3: 'c' -> 'a' closes a cycle"),
        (["a\ta"], r"line 1: 'a' -> 'a' closes a cycle"),
        (["a\tb", "\tc"], r"line 2: expected"),
    ],
)
def test_bad_taxonomy_files_name_the_line(tmp_path: Path, lines: list[str], message: str) -> None:
    path = tmp_path / "tax.txt"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TaxonomyError, match=str(path).replace(".", r"\.") + ", " + message):
        Taxonomy.read(path)


# A hand-worked example: two levels, names unique so that hiclass (which identifies a
# node by its name) and ulmfit (by its path) see the same nodes.
TRUE = [[("a", "a1")], [("a", "a2")], [("b", "b1")], [("b", "b2")]]
PRED = [[("a", "a1")], [("a", "a1")], [("a", "a1")], [("b",)]]
# With ancestors: doc 1 {a,a1} vs {a,a1}: 2 of 2; doc 2 {a,a2} vs {a,a1}: 1 of 2;
# doc 3 {b,b1} vs {a,a1}: 0 of 2; doc 4 {b,b2} vs {b}: 1 hit, 1 predicted, 2 true.
# micro: hP = 4/7, hR = 4/8; macro: P = (1 + 1/2 + 0 + 1)/4, R = (1 + 1/2 + 0 + 1/2)/4.


def test_hierarchical_prf_by_hand() -> None:
    micro = H.hierarchical_prf(TRUE, PRED, "micro")
    assert micro["precision"] == pytest.approx(4 / 7) and micro["recall"] == pytest.approx(0.5)
    assert micro["f1"] == pytest.approx(2 * (4 / 7) * 0.5 / (4 / 7 + 0.5))
    macro = H.hierarchical_prf(TRUE, PRED, "macro")
    assert macro["precision"] == pytest.approx(2.5 / 4) and macro["recall"] == pytest.approx(0.5)
    per_doc_f1 = [1.0, 0.5, 0.0, 2 * 1 * 0.5 / 1.5]
    assert macro["f1"] == pytest.approx(np.mean(per_doc_f1))
    assert H.exact_path_accuracy(TRUE, PRED) == 0.25
    assert H.inconsistent([[("a",), ("a", "a1")], [("a", "a2")], [("b",)]]) == 1


@pytest.mark.filterwarnings("ignore:F-score is ill-defined")  # hiclass, on document 3's 0/0
def test_hierarchical_prf_equals_hiclass() -> None:
    metrics = pytest.importorskip("hiclass.metrics")

    def rows(docs: list[list[tuple[str, ...]]]) -> np.ndarray:
        (paths,) = zip(*docs, strict=True)
        return np.array([list(p) + [""] * (2 - len(p)) for p in paths])

    yt, yp = rows(TRUE), rows(PRED)
    for average in ("micro", "macro"):
        ours = H.hierarchical_prf(TRUE, PRED, average)  # type: ignore[arg-type]
        assert ours["precision"] == pytest.approx(metrics.precision(yt, yp, average))
        assert ours["recall"] == pytest.approx(metrics.recall(yt, yp, average))
        assert ours["f1"] == pytest.approx(metrics.f1(yt, yp, average))


def test_per_level_f1_and_the_report() -> None:
    tax = Taxonomy.from_paths(p for doc in TRUE for p in doc)
    levels = H.per_level(TRUE, PRED, tax)
    # Level 1: true a a b b, predicted a a a b: 3 of 4 right.
    assert levels[0]["micro_f1"] == pytest.approx(0.75)
    assert levels[0]["macro_f1"] == pytest.approx(np.mean([2 * 2 / (2 + 3), 2 * 1 / (1 + 2)]))
    # Level 2: one hit (a1) among 3 predicted and 4 true nodes.
    assert levels[1]["micro_f1"] == pytest.approx(2 * 1 / (3 + 4))
    assert levels[1]["support"] == 4 and levels[1]["nodes"] == 4
    # The report takes the nodes a decoder chose: a path decoder chooses every node on it.
    chosen = [sorted(H.with_ancestors(p)) for p in PRED]
    rep = H.report(TRUE, chosen, tax)
    assert rep["documents"] == 4 and rep["inconsistent_predictions"] == 0
    assert H.report(TRUE, PRED, tax)["inconsistent_predictions"] == 3  # leaves without parents
    assert rep["hierarchical"]["micro"]["f1"] == pytest.approx(H.hierarchical_prf(TRUE, PRED)["f1"])


# -- decoders --------------------------------------------------------------------------

DEEP = Taxonomy.from_paths(
    [("a", "a1", "x"), ("a", "a1", "y"), ("a", "a2"), ("b", "b1"), ("b", "b2", "z"), ("c",)]
)


def consistent(nodes: list[tuple[str, ...]]) -> bool:
    chosen = set(nodes)
    return all(len(n) == 1 or n[:-1] in chosen for n in chosen)


def test_threshold_decoding_is_consistent_for_any_probabilities() -> None:
    """Property test: random probabilities and per-node thresholds, 300 draws of 20
    documents: never a node without its parent; with a mandatory leaf, every kept branch
    ends in a leaf and no document is empty."""
    from ulmfit.tasks.hierarchical import decode_thresholds

    rng = np.random.default_rng(0)
    K = len(DEEP)
    for _ in range(300):
        probs = rng.random((20, K)) ** rng.uniform(0.2, 3)
        t = rng.random(K) if rng.random() < 0.5 else float(rng.random())
        for mandatory in (False, True):
            for nodes in decode_thresholds(probs, DEEP, t, mandatory):
                assert consistent(nodes)
                if mandatory:
                    assert nodes
                    assert all(DEEP.is_leaf(n) or any(m[:-1] == n for m in nodes) for n in nodes)
    # Hand-checked: b1 is above its threshold but b is not, so b1 is not kept.
    probs = np.zeros((1, K))
    for node, p in {("a",): 0.9, ("a", "a1"): 0.7, ("a", "a1", "x"): 0.2, ("b", "b1"): 0.9}.items():
        probs[0, DEEP.index(node)] = p
    assert decode_thresholds(probs, DEEP, 0.5) == [[("a",), ("a", "a1")]]
    assert decode_thresholds(probs, DEEP, 0.5, mandatory_leaf=True) == [
        [("a",), ("a", "a1"), ("a", "a1", "x")]
    ]


def test_per_parent_softmax_paths_and_decoders() -> None:
    from ulmfit.tasks.hierarchical import (
        conditional_probs,
        decode_best_path,
        decode_greedy,
        logit_adjust,
        path_probs,
    )

    rng = np.random.default_rng(1)
    logits = rng.normal(size=(50, len(DEEP))) * 3
    cond = conditional_probs(logits, DEEP)
    marginal = path_probs(cond, DEEP)
    leaves = [DEEP.index(n) for n in DEEP.leaves]
    assert np.allclose(marginal[:, leaves].sum(1), 1.0)  # one full path per document
    for node in DEEP.nodes:  # a node's probability is the sum of its children's
        kids = [DEEP.index(c) for c in DEEP.children(node)]
        if kids:
            assert np.allclose(marginal[:, kids].sum(1), marginal[:, DEEP.index(node)])
    best = decode_best_path(marginal, DEEP)
    for row, path in zip(marginal, best, strict=True):
        assert consistent(path) and DEEP.is_leaf(path[-1]) and len(path) == len(path[-1])
        assert row[DEEP.index(path[-1])] == pytest.approx(row[leaves].max())  # brute force
    for path in decode_greedy(cond, DEEP):
        assert consistent(path) and DEEP.is_leaf(path[-1])
    stopped = decode_greedy(cond, DEEP, mandatory_leaf=False, stop=0.9)
    assert all(consistent(p) and p for p in stopped)
    assert any(not DEEP.is_leaf(p[-1]) for p in stopped)  # some walks stop early
    # Logit adjustment: equal logits, a rare sibling (prior 0.1) now wins.
    tax2 = Taxonomy.from_paths([("r", "common"), ("r", "rare")])
    flat = np.zeros((1, 3))
    adjusted = logit_adjust(flat, np.array([1.0, 0.9, 0.1]))
    assert decode_greedy(conditional_probs(adjusted, tax2), tax2) == [[("r",), ("r", "rare")]]
