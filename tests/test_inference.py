"""CPU inference: the shrinking-batch reader, int8 quantisation, edge cases, the CLI flags."""

from __future__ import annotations

import copy
import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny_classifier import FILLER, make_texts, train_tiny  # type: ignore[import-not-found]
from ulmfit.cli.main import main
from ulmfit.inference import classify_logits, is_quantized, num_threads, quantize_int8
from ulmfit.models.awd_lstm import AWDLSTMConfig
from ulmfit.models.classifier import ClassifierConfig, TextClassifierModel
from ulmfit.tasks.classify import TextClassifier, ensemble_predict_proba
from ulmfit.tasks.predict import predict_file

MAX_LEN = 24  # tiny, so that ordinary test documents take the BPT3C prefix path


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # Tiny models gain nothing from threads, and on a CPU shared with other jobs torch's
    # default (one thread per core) can make them tens of times slower.
    with num_threads(1):
        yield


@pytest.fixture(scope="module")
def trained() -> TextClassifier:
    """A tiny classifier trained for a few seconds on the good/bad task (no LM needed)."""
    return train_tiny(MAX_LEN)


def test_the_tiny_model_learned(trained: TextClassifier) -> None:
    texts, labels = make_texts(100, seed=2)
    assert np.mean(np.array(trained.predict(texts)) == np.array(labels)) >= 0.9


def test_shrinking_reader_matches_the_model() -> None:
    """classify_logits == model(x).logits, for unsorted rows, prefixes and one-token rows."""
    torch.manual_seed(0)
    enc = AWDLSTMConfig(vocab_size=50, emb_size=8, hidden_size=16, n_layers=2)
    model = TextClassifierModel(ClassifierConfig(n_classes=3, bptt=5, max_len=12, encoder=enc))
    model.eval()
    lengths = torch.tensor([3, 40, 1, 12, 13, 7, 25, 0])
    x = torch.randint(2, 50, (8, 40))
    x[torch.arange(40)[None] >= lengths[:, None]] = 1
    with torch.inference_mode():
        assert torch.allclose(
            classify_logits(model, x, lengths), model(x, lengths).logits, atol=1e-6
        )


def test_batched_equals_one_at_a_time_fp32(trained: TextClassifier) -> None:
    texts, _ = make_texts(30, seed=3)
    texts += ["", " ".join(["good"] + FILLER * 6)]  # empty, and longer than max_len
    batched = trained.predict_proba(texts)
    single = np.concatenate([trained.predict_proba([t]) for t in texts])
    assert np.allclose(batched, single, atol=1e-5)
    assert np.allclose(trained.predict_proba(texts, bs=4), batched, atol=1e-5)


def test_int8_agrees_with_fp32(trained: TextClassifier) -> None:
    q = TextClassifier(None, trained.config)
    q.model, q.vocab, q.tokenizer_config = trained.model, trained.vocab, trained.tokenizer_config
    q.labels = trained.labels
    q.quantize()
    assert q.quantized and not trained.quantized  # a copy: the float model is untouched
    assert q.model is not None
    for rnn in q.model.encoder.rnns:  # the LSTM the weight-drop wrapper runs was swapped
        assert type(rnn.lstm).__module__.startswith("torch.ao.nn.quantized.dynamic")
    texts, _ = make_texts(100, seed=4)
    p32, p8 = trained.predict_proba(texts), q.predict_proba(texts)
    assert np.mean(p32.argmax(1) == p8.argmax(1)) >= 0.9
    assert np.abs(p32 - p8).mean() < 0.05


def test_int8_long_and_empty_documents(trained: TextClassifier) -> None:
    assert trained.model is not None
    q = quantize_int8(trained.model)
    assert is_quantized(q) and not is_quantized(trained.model)
    clf = TextClassifier(None, trained.config)
    clf.model, clf.vocab, clf.tokenizer_config = q, trained.vocab, trained.tokenizer_config
    clf.labels = trained.labels
    long_doc = " ".join([*FILLER * 8, "bad"])  # ~100 tokens: prefix read packed, int8 LSTM
    assert len(clf.numericalize([long_doc])[0]) > 3 * MAX_LEN
    texts = [long_doc, "", "good movie"]
    probs = clf.predict_proba(texts)
    assert probs.shape == (3, 2) and np.isfinite(probs).all()
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert np.allclose(probs, trained.predict_proba(texts), atol=0.1)
    single = np.concatenate([clf.predict_proba([t]) for t in texts])
    # int8 activations are scaled per batch, so a document's probabilities move a little.
    assert np.allclose(single, probs, atol=0.1)
    assert (single.argmax(1) == probs.argmax(1)).all()
    assert clf.embed(texts).shape == (3, 3 * 16)


def test_empty_inputs(trained: TextClassifier) -> None:
    assert trained.predict([]) == []
    assert trained.predict_proba([]).shape == (0, 2)
    assert trained.embed([]).shape == (0, 3 * 16)


def test_load_int8_save_refused_and_cli(trained: TextClassifier, tmp_path: Path) -> None:
    trained.save(tmp_path / "clf")
    with pytest.raises(ValueError, match="must be one of"):
        TextClassifier.load(tmp_path / "clf", quantize="int4")
    q = TextClassifier.load(tmp_path / "clf", quantize="int8")
    assert q.quantized and q.device.type == "cpu"
    with pytest.raises(RuntimeError, match="cannot be saved"):
        q.save(tmp_path / "q")
    texts, labels = make_texts(20, seed=5)
    with (tmp_path / "in.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels, strict=True))
    rc = main(
        ["predict", str(tmp_path / "clf"), "-i", str(tmp_path / "in.csv"), "-o",
         str(tmp_path / "out.csv"), "--int8", "--threads", "1", "--bs", "8"]
    )  # fmt: skip
    assert rc == 0
    with (tmp_path / "out.csv").open() as f:
        rows = list(csv.DictReader(f))
    expected = q.predict_proba(texts, bs=8)
    got = np.array([[float(r["p_neg"]), float(r["p_pos"])] for r in rows])
    assert np.allclose(got, expected, atol=1e-5)
    rc = main(["evaluate", str(tmp_path / "clf"), "--data", str(tmp_path / "in.csv"), "--int8"])
    assert rc == 0


def test_ensemble_is_the_mean_and_embed_is_the_pooled_vector(trained: TextClassifier) -> None:
    other = copy.deepcopy(trained)  # a second, different classifier with the same labels
    assert other.model is not None and trained.model is not None
    torch.manual_seed(1)
    with torch.no_grad():
        for p in other.model.head.parameters():
            p.add_(torch.randn_like(p))
    texts, _ = make_texts(12, seed=6)
    texts += ["", " ".join(FILLER * 4)]  # empty, and longer than max_len
    a, b = trained.predict_proba(texts), other.predict_proba(texts)
    assert np.abs(a - b).max() > 0.05
    assert np.allclose(
        ensemble_predict_proba([trained, other], texts, bs=5), (a + b) / 2, atol=1e-6
    )

    model = trained.model.eval()
    expected = []
    with torch.inference_mode():
        for doc in trained.numericalize(texts):  # one at a time, through forward()
            x = torch.from_numpy(doc)[None] if len(doc) else torch.ones(1, 1, dtype=torch.long)
            expected.append(model(x, torch.tensor([max(len(doc), 1)])).pooled[0].numpy())
    assert np.allclose(trained.embed(texts, bs=5), np.stack(expected), atol=1e-5)


def test_predict_reads_input_by_the_training_rules(
    trained: TextClassifier, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trained.save(tmp_path / "clf")
    # TSV without quoting: the '"' opens no quoted field that would swallow lines.
    tsv = tmp_path / "in.tsv"
    tsv.write_text('text\tlabel\n"good" movie\tpos\nthe "plot\tneg\nbad film\tneg\n')
    out = tmp_path / "out.jsonl"
    assert predict_file([tmp_path / "clf"], tsv, out, device="cpu") == 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    expected = trained.predict_proba(['"good" movie', 'the "plot', "bad film"])
    got = np.array([[r["probs"]["neg"], r["probs"]["pos"]] for r in rows])
    assert np.allclose(got, expected, atol=1e-6)
    assert "doc/s" not in capsys.readouterr().err  # no progress bar off a terminal
    for name, content, error in (
        (
            "bad.jsonl",
            '{"text": "good"}\n{"text": 0}\n',
            "line 2: text field 'text' is not a string",
        ),
        (
            "bad.csv",
            "text,label\ngood,pos\nbad,neg,extra\n",
            "line 3: 3 fields but the header has 2",
        ),
    ):
        (tmp_path / name).write_text(content)
        before = out.read_bytes()
        args = ["predict", str(tmp_path / "clf"), "-i", str(tmp_path / name), "-o", str(out)]
        assert main([*args, "--device", "cpu", "--overwrite"]) == 2
        assert f"{tmp_path / name}: {error}" in capsys.readouterr().err
        assert out.read_bytes() == before  # a failed run leaves the earlier output alone


def test_num_threads_restores() -> None:
    before = torch.get_num_threads()
    with num_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError), num_threads(0):
        pass
