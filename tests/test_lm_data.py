"""LM stream batching: continuity across batches, variable BPTT, shuffling, backwards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ulmfit.data.lm import LMDataConfig, LMStream, sample_seq_lens


def make_corpus(n_docs: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(20, 80, n_docs)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.arange(offsets[-1], dtype=np.int32)  # token value = position: easy to trace
    return ids, offsets


def test_rows_continue_across_batches_and_targets_are_next_tokens() -> None:
    ids, offsets = make_corpus()
    stream = LMStream(ids, offsets, LMDataConfig(bs=4, bptt=10), train=True, seed=3)
    rows = stream.rows(0)
    batches = list(stream.batches(0))
    assert len(batches) > 5
    assert {b.x.shape[1] for b in batches} != {10}  # variable lengths in training
    pos = 0
    for k, b in enumerate(batches):
        L = b.x.shape[1]
        assert torch.equal(b.x, rows[:, pos : pos + L])
        assert torch.equal(b.y, rows[:, pos + 1 : pos + 1 + L])
        if k + 1 < len(batches):
            # row i of batch k+1 continues row i of batch k
            assert torch.equal(batches[k + 1].x[:, 0], b.y[:, -1])
        assert b.lr_scale == pytest.approx(L / 10)
        pos += L
    # The epoch covers every row position (but the last, which only serves as a target).
    assert pos == rows.shape[1] - 1


def test_stream_rows_are_contiguous_slices_of_the_shuffled_stream() -> None:
    ids, offsets = make_corpus()
    stream = LMStream(ids, offsets, LMDataConfig(bs=4, bptt=10), train=True, seed=3)
    s = stream.stream(0)
    rows = stream.rows(0).numpy()
    n = len(s) // 4
    for i in range(4):
        assert np.array_equal(rows[i], s[i * n : (i + 1) * n])
    # Shuffling keeps each document whole and contains every token once.
    assert sorted(s.tolist()) == ids.tolist()
    # Documents stay whole: the stream jumps only where a document starts.
    starts = set(offsets[:-1].tolist())
    jumps = [int(s[i]) for i in range(1, len(s)) if s[i] != s[i - 1] + 1]
    assert jumps and all(t in starts for t in jumps)
    assert not np.array_equal(s, ids)  # and they were reordered


def test_docs_are_shuffled_per_epoch_deterministically() -> None:
    ids, offsets = make_corpus()
    a = LMStream(ids, offsets, LMDataConfig(bs=4, bptt=10), train=True, seed=1)
    b = LMStream(ids, offsets, LMDataConfig(bs=4, bptt=10), train=True, seed=1)
    assert np.array_equal(a.stream(0), b.stream(0))
    assert a.seq_lens(2) == b.seq_lens(2)
    assert not np.array_equal(a.stream(0), a.stream(1))
    valid = LMStream(ids, offsets, LMDataConfig(bs=4, bptt=10), train=False)
    assert np.array_equal(valid.stream(0), ids)  # evaluation: corpus order, fixed bptt
    assert set(valid.seq_lens(0)[:-1]) == {10}


def test_backwards_stream_is_reversed() -> None:
    ids, offsets = make_corpus()
    fwd = LMStream(ids, offsets, LMDataConfig(bs=2, bptt=10), train=False)
    bwd = LMStream(ids, offsets, LMDataConfig(bs=2, bptt=10, backwards=True), train=False)
    assert np.array_equal(bwd.stream(0), fwd.stream(0)[::-1])


def test_variable_bptt_distribution() -> None:
    rng = np.random.default_rng(0)
    lens = sample_seq_lens(200_000, 70, True, rng)
    body = np.array(lens[:-1])
    assert body.min() >= 5
    assert body.max() <= 105
    assert abs(np.mean(body > 50) - 0.95) < 0.02  # ~5% of batches are drawn around bptt/2
    assert abs(np.median(body) - 70) <= 2
    assert sum(lens) == 200_000


def test_ranks_read_disjoint_rows() -> None:
    ids, offsets = make_corpus()
    cfg = LMDataConfig(bs=2, bptt=10)
    r0 = LMStream(ids, offsets, cfg, train=True, seed=5, rank=0, world_size=2).rows(0)
    r1 = LMStream(ids, offsets, cfg, train=True, seed=5, rank=1, world_size=2).rows(0)
    full = LMStream(ids, offsets, LMDataConfig(bs=4, bptt=10), train=True, seed=5).rows(0)
    assert torch.equal(torch.cat([r0, r1]), full)


def test_too_small_corpus_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="too small"):
        LMStream(np.arange(10, dtype=np.int32), np.array([0, 10]), LMDataConfig(bs=8), train=True)


def test_default_batching_is_awd_lstms() -> None:
    cfg = LMDataConfig()
    assert cfg.bptt == 70 and cfg.variable_bptt and cfg.shuffle_docs and not cfg.backwards
