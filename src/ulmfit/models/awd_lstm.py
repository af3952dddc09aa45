"""AWD-LSTM (Merity et al. 2017) as used by ULMFiT, and the tied language model that
any backbone (``models/backbone.py``) sits under.

Recurrent state is passed in and returned, never kept on the module: a caller that
carries it across batches (BPTT over a stream, BPT3C over a long document) owns it.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ulmfit.models.backbone import (
    EncoderConfig,
    EncoderOutput,
    RecurrentBackbone,
    State,
    detach_state,
    register,
)
from ulmfit.models.dropout import WeightDropLSTM

#: The config of every backbone; the name predates the others (kind="awd_lstm" by default).
AWDLSTMConfig = EncoderConfig


@register
class AWDLSTMEncoder(RecurrentBackbone):
    """Embedding -> [locked dropout -> weight-dropped LSTM] x n_layers -> locked dropout."""

    kind = "awd_lstm"
    state_names = ("h", "c")
    int8_types = (nn.LSTM, nn.Linear)

    def __init__(self, config: EncoderConfig) -> None:
        weight_p = config.p("weight_p")
        super().__init__(config, lambda n_in, n_out: WeightDropLSTM(n_in, n_out, weight_p))

    def init_state(self, batch_size: int) -> State:
        w = self.embedding.weight
        sizes = [n_out for _, n_out in self.config.layer_sizes()]
        return tuple((w.new_zeros(1, batch_size, n), w.new_zeros(1, batch_size, n)) for n in sizes)

    def read_exact(self, ids: Tensor, lengths: Tensor, state: State) -> State:
        # Packed to each row's length: the LSTM stops at it, so the state is exact.
        x = self.input_dp(self.embedding(ids))
        new_state = []
        for i, rnn in enumerate(self.rnns):
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, layer_state = rnn(packed, state[i])
            new_state.append(layer_state)
            x, _ = pad_packed_sequence(out, batch_first=True, total_length=ids.size(1))
            if i < len(self.hidden_dps):
                x = self.hidden_dps[i](x)
        return tuple(new_state)


# The language model and its losses live in language_model.py; imported here for the
# code written when the AWD-LSTM was the only backbone.
from ulmfit.models.language_model import (  # noqa: E402
    AWDLSTMLanguageModel,
    LanguageModel,
    LMOutput,
    ar_tar_penalty,
    lm_loss,
)

__all__ = [
    "AWDLSTMConfig",
    "AWDLSTMEncoder",
    "AWDLSTMLanguageModel",
    "EncoderOutput",
    "LMOutput",
    "LanguageModel",
    "State",
    "ar_tar_penalty",
    "detach_state",
    "lm_loss",
]
