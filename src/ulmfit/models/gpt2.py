"""Import a Hugging Face GPT-2 checkpoint directory into the transformer backbone.

Reads ``config.json``, ``model.safetensors`` (never a pickle) and the tokenizer
(``tokenizer.json``, or ``vocab.json`` + ``merges.txt``) and writes a ulmfit language-model
directory: the same next-token logits (over GPT-2's vocabulary), read through the
``bytebpe`` tokenizer. ``transformers`` is not needed; the model code is ours.

Layout: GPT-2 keeps its projections as ``Conv1D`` weights ``(in, out)``; ours are
``nn.Linear`` ``(out, in)``, so each is transposed. ulmfit's nine special tokens come
before GPT-2's vocabulary (ids shift by 9); ``xxbos`` takes ``<|endoftext|>``'s embedding
(GPT-2's document separator), the others the mean row.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from ulmfit.checkpoint import CheckpointError, refuse_existing, write_dir_atomically
from ulmfit.models.backbone import EncoderConfig
from ulmfit.models.io import write_lm_files
from ulmfit.models.language_model import LanguageModel
from ulmfit.text.bytebpe import ByteBPETokenizer
from ulmfit.text.tokenize import BOS, SPECIAL_TOKENS, TokenizerConfig
from ulmfit.text.vocab import Vocab

log = logging.getLogger(__name__)

EOT = "<|endoftext|>"


def gpt2_encoder_config(hf: dict[str, Any], vocab_size: int, pad_id: int) -> EncoderConfig:
    """Our transformer config for a GPT-2 ``config.json`` (its dropouts, none of ours)."""
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise CheckpointError(f"config.json: activation {act!r}; ulmfit's GPT-2 uses gelu_new")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if hf.get(flag):
            raise CheckpointError(f"config.json: {flag}=true is not supported")
    d = int(hf["n_embd"])
    return EncoderConfig(
        kind="transformer",
        vocab_size=vocab_size,
        pad_id=pad_id,
        emb_size=d,
        hidden_size=int(hf.get("n_inner") or 4 * d),
        n_layers=int(hf["n_layer"]),
        n_heads=int(hf["n_head"]),
        context=int(hf["n_positions"]),
        norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        input_p=float(hf.get("embd_pdrop", 0.1)),
        attn_p=float(hf.get("attn_pdrop", 0.1)),
        hidden_p=float(hf.get("resid_pdrop", 0.1)),
        output_p=0.0,
        embed_p=0.0,
        weight_p=0.0,
        tie_weights=True,
    )


def gpt2_state(sd: dict[str, Tensor], n_layers: int, wte_rows: Tensor) -> dict[str, Tensor]:
    """Our state dict from GPT-2's (``transformer.`` prefix or not)."""
    sd = {k.removeprefix("transformer."): v for k, v in sd.items()}

    def get(key: str) -> Tensor:
        if key not in sd:
            raise CheckpointError(f"model.safetensors: missing tensor {key!r}")
        return sd[key].float()

    out = {"encoder.embedding.weight": wte_rows, "encoder.positions.weight": get("wpe.weight")}
    for i in range(n_layers):
        src, dst = f"h.{i}.", f"encoder.blocks.{i}."
        for ours, theirs in (("ln_1", "ln_1"), ("ln_2", "ln_2")):
            out[f"{dst}{ours}.weight"] = get(f"{src}{theirs}.weight")
            out[f"{dst}{ours}.bias"] = get(f"{src}{theirs}.bias")
        for ours, theirs in (
            ("qkv", "attn.c_attn"),
            ("proj", "attn.c_proj"),
            ("fc", "mlp.c_fc"),
            ("fc_proj", "mlp.c_proj"),
        ):
            out[f"{dst}{ours}.weight"] = get(f"{src}{theirs}.weight").t().contiguous()
            out[f"{dst}{ours}.bias"] = get(f"{src}{theirs}.bias")
    out["encoder.ln_f.weight"] = get("ln_f.weight")
    out["encoder.ln_f.bias"] = get("ln_f.bias")
    out["decoder.bias"] = torch.zeros(wte_rows.size(0))
    return out


def _tokenizer_file(hf_dir: Path, tmp: Path) -> Path:
    """``tokenizer.json``, or one built from ``vocab.json`` + ``merges.txt``."""
    if (hf_dir / "tokenizer.json").exists():
        return hf_dir / "tokenizer.json"
    vocab, merges = hf_dir / "vocab.json", hf_dir / "merges.txt"
    if not (vocab.exists() and merges.exists()):
        raise CheckpointError(f"{hf_dir}: no tokenizer.json, nor vocab.json + merges.txt")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    out = tmp / "tokenizer.json"
    tok.save(str(out))
    return out


def import_gpt2(hf_dir: Path | str, out_dir: Path | str, overwrite: bool = False) -> Path:
    """Convert a Hugging Face GPT-2 directory into a ulmfit LM directory at ``out_dir``."""
    hf_dir, out = Path(hf_dir), Path(out_dir)
    refuse_existing(out, overwrite, "model directory")
    config_path = hf_dir / "config.json"
    try:
        hf = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{config_path}: cannot read a GPT-2 config ({e})") from e
    if hf.get("model_type", "gpt2") != "gpt2":
        raise CheckpointError(f"{config_path}: model_type {hf.get('model_type')!r}, not gpt2")
    weights = hf_dir / "model.safetensors"
    if not weights.exists():
        raise CheckpointError(f"{weights}: missing (only safetensors weights are read)")
    sd = load_file(str(weights))
    with tempfile.TemporaryDirectory() as tmp:
        tok_path = _tokenizer_file(hf_dir, Path(tmp))
        tok_cfg = TokenizerConfig(kind="bytebpe", lowercase=False)
        tokenizer = ByteBPETokenizer(tok_cfg, tok_path)
        itos = tokenizer.itos()
        wte = sd.get("transformer.wte.weight", sd.get("wte.weight"))
        if wte is None:
            raise CheckpointError(f"{weights}: missing tensor 'wte.weight'")
        vocab = Vocab(itos)
        n_gpt2 = len(itos) - len(SPECIAL_TOKENS)
        if wte.size(0) < n_gpt2:
            raise CheckpointError(
                f"{weights}: {wte.size(0)} embedding rows, but the tokenizer has {n_gpt2} tokens"
            )
        wte = wte[:n_gpt2].float()  # rows past the tokenizer's (padding) are never used
        # GPT-2's rows keep their ids; ulmfit's specials follow, as the mean row, except
        # xxbos, which starts each document as GPT-2's <|endoftext|> does.
        specials = wte.mean(0).expand(len(SPECIAL_TOKENS), -1).clone()
        if EOT in itos:
            specials[SPECIAL_TOKENS.index(BOS)] = wte[itos.index(EOT)]
        rows = torch.cat([wte, specials])
        config = gpt2_encoder_config(hf, len(itos), vocab.pad_id)
        model = LanguageModel(config)
        missing, unexpected = model.load_state_dict(
            gpt2_state(sd, config.n_layers, rows), strict=False
        )
        if [k for k in missing if k != "decoder.weight"] or unexpected:
            raise CheckpointError(
                f"{weights}: unexpected layout (missing {missing}, extra {unexpected})"
            )
        extra = {"stage": "import-gpt2", "source": {"dir": str(hf_dir)}}
        write_dir_atomically(
            out, lambda d: write_lm_files(d, model, vocab, tok_cfg, tok_path, extra)
        )
    log.info("imported GPT-2 (%d layers, %d tokens) into %s", config.n_layers, n_gpt2, out)
    return out
