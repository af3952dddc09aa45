"""DDP under gloo on CPU: two processes train exactly like one process on the global batch."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ulmfit.data.lm import LMDataConfig, LMStream
from ulmfit.models.awd_lstm import AWDLSTMConfig, AWDLSTMLanguageModel
from ulmfit.tasks.lm import LMTask
from ulmfit.training.config import TrainConfig
from ulmfit.training.loop import fit

GLOBAL_BS = 8
STEPS = 6
# No dropout: the masks would differ between one process and two, the arithmetic would not.
CONFIG = AWDLSTMConfig(vocab_size=50, emb_size=8, hidden_size=12, n_layers=2, drop_mult=0.0)


def corpus() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, 4000).astype(np.int32)
    return ids, np.arange(0, 4001, 200, dtype=np.int64)


def train(rank: int, world_size: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = AWDLSTMLanguageModel(CONFIG)
    data = LMDataConfig(bs=GLOBAL_BS // world_size, bptt=10)
    stream = LMStream(*corpus(), data, train=True, seed=3, rank=rank, world_size=world_size)
    cfg = TrainConfig(lr=1e-2, max_steps=STEPS, progress=False, log_every=1)
    fit(LMTask(model, stream, None), cfg, None)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.set_num_threads(1)
        state = train(rank, world_size)
        if rank == 0:
            torch.save(state, out)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ddp_two_processes_match_one_process(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    single = train(0, 1)
    out = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=True)
    for k, v in single.items():
        torch.testing.assert_close(ddp[k], v, rtol=1e-4, atol=1e-5, msg=k)
    # ... and training really moved the weights (the comparison is not vacuous).
    torch.manual_seed(0)
    start = AWDLSTMLanguageModel(CONFIG).state_dict()
    assert not torch.allclose(
        start["encoder.rnns.0.lstm.weight_hh_l0"], single["encoder.rnns.0.lstm.weight_hh_l0"]
    )
