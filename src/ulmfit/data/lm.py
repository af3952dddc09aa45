"""Language-model batches: the corpus as one token stream cut into ``bs`` rows.

::

    stream  a b c d e f g h i j k l m n o p q r s t u v w x   (bs = 4)
    rows    a b c d e f        batch k   = rows[:, s : s+L]     (inputs)
            g h i j k l        targets   = rows[:, s+1 : s+1+L]
            m n o p q r        row i of batch k+1 continues row i of batch k,
            s t u v w x        so the hidden state carries over between batches.

Each epoch the documents are shuffled before they are joined (a pure function of
``seed`` and ``epoch``, so a resumed run sees the same batches), and batch lengths
follow AWD-LSTM's variable BPTT; the learning rate is scaled by ``seq_len / bptt``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class LMDataConfig:
    """How the token stream is batched."""

    bs: int = 64  # rows of the token stream (sequences per batch)
    bptt: int = 70  # tokens per batch (back-propagation through time)
    variable_bptt: bool = True  # AWD-LSTM: bptt w.p. 0.95 else bptt/2, then N(., 5), >= 5
    shuffle_docs: bool = True  # reorder documents each epoch before joining them
    backwards: bool = False  # reversed text, for the backward model of the ensemble

    def __post_init__(self) -> None:
        if self.bs < 1:
            raise ValueError(f"LMDataConfig.bs must be >= 1, got {self.bs}")
        if self.bptt < 2:
            raise ValueError(f"LMDataConfig.bptt must be >= 2, got {self.bptt}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class LMBatch(NamedTuple):
    x: Tensor  # (B, L) inputs
    y: Tensor  # (B, L) next tokens
    lr_scale: float  # L / bptt, AWD-LSTM's correction for shorter or longer batches


def sample_seq_lens(
    n_tokens: int, bptt: int, variable: bool, rng: np.random.Generator
) -> list[int]:
    """Batch lengths covering ``n_tokens`` positions of a row (the last may be shorter)."""
    lens: list[int] = []
    pos = 0
    cap = int(1.5 * bptt)  # a rare long draw must not blow up memory
    while pos < n_tokens:
        if variable:
            base = bptt if rng.random() < 0.95 else bptt / 2
            seq_len = min(cap, max(5, int(rng.normal(base, 5))))
        else:
            seq_len = bptt
        seq_len = min(seq_len, n_tokens - pos)
        lens.append(seq_len)
        pos += seq_len
    return lens


class LMStream:
    """Batches of a numericalised corpus for language-model training or evaluation.

    ``ids`` holds all documents back to back and ``offsets`` their boundaries
    (``len(offsets) == n_docs + 1``). With ``world_size > 1`` the stream is cut into
    ``bs * world_size`` rows and this rank reads rows ``[rank * bs, (rank + 1) * bs)``.
    """

    def __init__(
        self,
        ids: np.ndarray,
        offsets: np.ndarray,
        config: LMDataConfig,
        *,
        train: bool,
        seed: int = 0,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.ids = ids
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.config = config
        self.train = train
        self.seed = seed
        self.device = torch.device(device)
        self.rank = rank
        self.world_size = world_size
        total_rows = config.bs * world_size
        if len(ids) < 2 * total_rows:
            raise ValueError(
                f"corpus of {len(ids)} tokens is too small for {total_rows} rows "
                f"(bs={config.bs} x world_size={world_size}); lower bs"
            )

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    def _rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch])

    def stream(self, epoch: int) -> np.ndarray:
        """The epoch's token stream: documents shuffled (training) and reversed if backwards."""
        if self.train and self.config.shuffle_docs and self.n_docs > 1:
            order = self._rng(epoch).permutation(self.n_docs)
            starts, ends = self.offsets[:-1][order], self.offsets[1:][order]
            stream = np.concatenate([self.ids[s:e] for s, e in zip(starts, ends, strict=True)])
        else:
            stream = np.asarray(self.ids[self.offsets[0] : self.offsets[-1]])
        if self.config.backwards:
            stream = stream[::-1]
        return stream

    def rows(self, epoch: int) -> Tensor:
        """This rank's ``(bs, n)`` rows of the stream, on the device (one host->device copy)."""
        stream = self.stream(epoch)
        total_rows = self.config.bs * self.world_size
        n = len(stream) // total_rows
        grid = stream[: n * total_rows].reshape(total_rows, n)
        mine = grid[self.rank * self.config.bs : (self.rank + 1) * self.config.bs]
        t = torch.from_numpy(np.ascontiguousarray(mine, dtype=np.int64))
        return t.to(self.device, non_blocking=True)

    def seq_lens(self, epoch: int) -> list[int]:
        """Lengths of the epoch's batches (computed on the host: no device sync)."""
        total_rows = self.config.bs * self.world_size
        n_cols = (self.offsets[-1] - self.offsets[0]) // total_rows
        variable = self.train and self.config.variable_bptt
        # Draw lengths after the permutation so both come from the same per-epoch stream.
        rng = self._rng(epoch)
        if self.train and self.config.shuffle_docs and self.n_docs > 1:
            rng.permutation(self.n_docs)
        return sample_seq_lens(int(n_cols) - 1, self.config.bptt, variable, rng)

    def __len__(self) -> int:
        """Number of batches in epoch 0 (later epochs differ slightly with variable BPTT)."""
        return len(self.seq_lens(0))

    def n_tokens(self) -> int:
        """Target tokens per epoch on this rank."""
        return sum(self.seq_lens(0)) * self.config.bs

    def batches(self, epoch: int, start: int = 0) -> Iterator[LMBatch]:
        """The epoch's batches, from batch index ``start`` (for resuming mid-epoch)."""
        rows = self.rows(epoch)
        lens = self.seq_lens(epoch)
        pos = sum(lens[:start])
        for seq_len in lens[start:]:
            x = rows[:, pos : pos + seq_len]  # (B, L), a view: no copy, no sync
            y = rows[:, pos + 1 : pos + 1 + seq_len]
            yield LMBatch(x, y, seq_len / self.config.bptt)
            pos += seq_len
