"""Language-model training as a :class:`~ulmfit.training.loop.Task` (stages 1 and 2)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ulmfit.data.lm import LMBatch, LMStream
from ulmfit.models.backbone import State, detach_state, state_from_tensors, state_to_tensors
from ulmfit.models.language_model import LanguageModel, ar_tar_penalty, lm_loss
from ulmfit.training import distributed
from ulmfit.training.loop import StepOutput


class LMTask:
    """Next-token prediction over a token stream, hidden state carried between batches."""

    def __init__(
        self,
        model: LanguageModel,
        train: LMStream,
        valid: LMStream | None,
        *,
        alpha: float = 2.0,
        beta: float = 1.0,
        save_files: Any = None,
    ) -> None:
        self.model = model
        self.train = train
        self.valid = valid
        self.alpha = alpha
        self.beta = beta
        self._save_files = save_files

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return self.model.layer_groups()

    def n_batches(self, epoch: int) -> int:
        return len(self.train.seq_lens(epoch))

    def train_batches(self, epoch: int, start: int) -> Iterator[LMBatch]:
        return self.train.batches(epoch, start)

    def init_carry(self) -> State | None:
        return None  # zeros, created by the LSTM on the right device and dtype

    def train_step(self, model: nn.Module, batch: LMBatch, carry: State | None) -> StepOutput:
        out = model(batch.x, carry)
        loss = lm_loss(out.logits, batch.y)
        total = loss + ar_tar_penalty(out.output, out.raw_output, self.alpha, self.beta)
        n = batch.y.numel()
        # Summed, detached, on device: the loop syncs only when it logs.
        return StepOutput(total, detach_state(out.state), {"loss": loss.detach() * n}, n)

    def evaluate(self) -> dict[str, float]:
        if self.valid is None:
            return {}
        return evaluate_lm(self.model, self.valid)

    def save_files(self, model_dir: Path) -> None:
        if self._save_files is not None:
            self._save_files(model_dir)

    def carry_to_tensors(self, carry: State) -> dict[str, Tensor]:
        return state_to_tensors(carry, self.model.encoder.state_names)

    def carry_from_tensors(self, tensors: Mapping[str, Tensor]) -> State:
        return state_from_tensors(dict(tensors), self.model.encoder.state_names)


@torch.inference_mode()
def evaluate_lm(model: LanguageModel, stream: LMStream) -> dict[str, float]:
    """Loss, accuracy and perplexity of ``model`` on ``stream`` (fixed bptt, state carried).

    A stream that is one rank's share (``world_size > 1``) is summed over the ranks.
    """
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
    correct = torch.zeros((), device=dev, dtype=torch.int64)
    n = 0
    state: State | None = None
    for batch in stream.batches(0):
        out = model(batch.x, state)
        state = out.state
        loss_sum += lm_loss(out.logits, batch.y).double() * batch.y.numel()
        correct += (out.logits.argmax(-1) == batch.y).sum()
        n += batch.y.numel()
    model.train(was_training)
    count = torch.tensor(float(n), dtype=torch.float64, device=dev)
    if stream.world_size > 1:
        loss_sum = distributed.all_reduce_sum(loss_sum)
        correct = distributed.all_reduce_sum(correct)
        count = distributed.all_reduce_sum(count)
    total = max(float(count), 1.0)
    loss = float(loss_sum) / total
    return {
        "valid_loss": loss,
        "valid_accuracy": float(correct) / total,
        "valid_perplexity": math.exp(min(loss, 50.0)),
    }
