"""A classifier as one ONNX graph, and prediction with ONNX Runtime.

The graph is the encoder, the masked concat pooling and the head:
``(ids (B, T), lengths (B,), state...) -> (logits (B, C), state...)`` with dynamic batch
and time axes and the recurrent state as explicit inputs and outputs (``h0, c0, h1, ...``
for the AWD-LSTM: ``(1, B, H_i)`` each). It is exported with PyTorch's TorchScript-based
exporter, which turns ``nn.LSTM`` into ONNX's ``LSTM`` op with a dynamic length. The
dynamo exporter (the default since torch 2.9) does not: with torch 2.13 and onnxscript its
graph keeps the example's length in a ``Reshape``, and ONNX Runtime fails on any other
length (checked 2026-12-07). ``int8``: ONNX Runtime's dynamic quantisation of that
float graph (weights int8, activations quantised per call).

:class:`OnnxClassifier` reads documents as PyTorch does (``Backbone.read_windows``): the
tokens before a document's last ``max_len`` are read for the state only, one document at
a time in chunks of ``max(bptt, max_len)`` (exact per row, no padding); the windows are
then read in length-sorted batches, right-padded, from those states, and only their real
steps are pooled. The tokenizer, vocabulary, labels and thresholds come from the model
directory.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ulmfit.checkpoint import atomic_output, refuse_existing
from ulmfit.models.classifier import TextClassifierModel, masked_concat_pool
from ulmfit.tasks.classify import TextClassifier

log = logging.getLogger(__name__)

OPSET = 17


class _Graph(nn.Module):
    """What is exported: flat state tensors in, logits and flat state tensors out.

    A backbone without state (the Transformer) is exported with its own window reading
    (``read_windows``) over a fixed ``max_len`` tokens: the runtime pads every window to
    that length, and the masked pooling ignores the padding.
    """

    def __init__(self, model: TextClassifierModel) -> None:
        super().__init__()
        self.model = model
        self.shape = [len(layer) for layer in model.encoder.init_state(1)]

    def forward(self, ids: Tensor, lengths: Tensor, *flat: Tensor) -> tuple[Tensor, ...]:
        if not self.shape:
            out, window = self.model.encode(ids, lengths)
            return (self.model.head(masked_concat_pool(out, window)),)
        state, i = [], 0
        for n in self.shape:
            state.append(tuple(flat[i : i + n]))
            i += n
        enc = self.model.encoder(ids, tuple(state))
        logits = self.model.head(masked_concat_pool(enc.raw_output, lengths))
        return (logits, *(t for layer in enc.state for t in layer))


def state_names(model: TextClassifierModel) -> list[str]:
    names = model.encoder.state_names
    return [
        f"{n}{i}"
        for i, layer in enumerate(model.encoder.init_state(1))
        for n in names[: len(layer)]
    ]


def export_onnx(
    model_dir: str | Path, out_path: str | Path, int8: bool = False, overwrite: bool = False
) -> Path:
    """Write ``model_dir``'s classifier as one ONNX graph to ``out_path`` (atomically; an
    existing file is refused unless ``overwrite``). ``int8``: dynamically quantised."""
    out_path = Path(out_path)
    refuse_existing(out_path, overwrite)  # before any work
    clf = TextClassifier.load(model_dir, device="cpu")
    model = clf.model
    assert model is not None and clf.labels is not None
    why = type(model.encoder).onnx_unsupported
    if why is not None:
        raise ValueError(
            f"{model_dir}: a {model.config.encoder.kind} backbone cannot be exported to ONNX: {why}"
        )
    model.eval()
    graph = _Graph(model).eval()
    names = state_names(model)
    stateless = not graph.shape
    T = model.config.max_len if stateless else 5  # stateless: windows of exactly max_len
    ids = torch.full((2, T), model.config.encoder.pad_id + 1, dtype=torch.long)
    lengths = torch.tensor([T, 3])
    flat = [t for layer in model.encoder.init_state(2) for t in layer]
    inputs = ["ids", "lengths", *names]
    outputs = ["logits", *(f"{n}_out" for n in names)]
    time_axis = {} if stateless else {1: "time"}
    dynamic = {"ids": {0: "batch", **time_axis}, "lengths": {0: "batch"}, "logits": {0: "batch"}}
    dynamic.update({n: {1: "batch"} for n in [*names, *outputs[1:]]})
    meta = {
        "ulmfit.backbone": model.config.encoder.kind,
        "ulmfit.vocab_size": str(model.config.encoder.vocab_size),
        "ulmfit.labels": json.dumps(list(clf.labels.classes)),
        "ulmfit.max_len": str(model.config.max_len),
        "ulmfit.bptt": str(model.config.bptt),
        "ulmfit.int8": str(int8).lower(),
    }
    with tempfile.TemporaryDirectory(prefix=".ulmfit-onnx-") as work:
        tmp = Path(work) / "model.onnx"
        # The tracer's warnings are about Python-side checks of shapes (constant here by
        # design) and an LSTM note answered by the explicit h0/c0 inputs.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module="torch.onnx")
            warnings.filterwarnings("ignore", category=DeprecationWarning)  # see the docstring
            torch.onnx.export(
                graph, (ids, lengths, *flat), str(tmp), input_names=inputs,
                output_names=outputs, dynamic_axes=dynamic, opset_version=OPSET, dynamo=False,
            )  # fmt: skip
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            fp32, tmp = tmp, Path(work) / "model.int8.onnx"
            # Weights only, as torch's dynamic int8 does: a MatMul of two activations
            # (attention's scores and mixing) quantised per call costs accuracy, not time.
            quantize_dynamic(
                str(fp32), str(tmp), weight_type=QuantType.QInt8,
                extra_options={"MatMulConstBOnly": True},
            )  # fmt: skip
        _set_metadata(tmp, meta)
        with atomic_output(out_path, "wb", overwrite=overwrite) as f:
            f.write(tmp.read_bytes())
    log.info("exported %s to %s%s", model_dir, out_path, " (int8)" if int8 else "")
    return out_path


def _set_metadata(path: Path, meta: dict[str, str]) -> None:
    import onnx

    m = onnx.load(str(path))
    del m.metadata_props[:]
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(path))


class OnnxClassifier(TextClassifier):
    """A :class:`TextClassifier` whose logits come from an ONNX graph in ONNX Runtime
    (``predict``, ``predict_proba``, ``predict_logits``; ``embed`` and ``explain`` still
    use the PyTorch model)."""

    session: Any = None

    @classmethod
    def load_onnx(
        cls, model_dir: str | Path, onnx_path: str | Path, threads: int | None = None
    ) -> OnnxClassifier:
        import onnxruntime as ort

        clf = cls.load(model_dir, device="cpu")
        assert isinstance(clf, OnnxClassifier)  # load builds ``cls``
        assert clf.model is not None and clf.labels is not None
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        # Idle pool threads sleep instead of spinning: spinning takes the cores that a
        # server's request handling (or anything else on the machine) needs.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for a bad file
            raise ValueError(f"{onnx_path}: cannot be read by ONNX Runtime ({e})") from e
        meta = session.get_modelmeta().custom_metadata_map
        mine = {
            "ulmfit.vocab_size": str(clf.model.config.encoder.vocab_size),
            "ulmfit.labels": json.dumps(list(clf.labels.classes)),
            "ulmfit.max_len": str(clf.model.config.max_len),
        }
        for key, value in mine.items():
            if meta.get(key) != value:
                raise ValueError(
                    f"{onnx_path}: {key} is {meta.get(key)!r} but {model_dir} has {value!r}: "
                    "the graph was not exported from this model directory"
                )
        clf.session = session
        return clf

    def predict_logits(self, texts: Sequence[str], bs: int | None = None) -> np.ndarray:
        self._check_fitted()
        assert self.model is not None and self.labels is not None
        cfg = self.model.config
        n_classes = len(self.labels)
        if len(texts) == 0:
            return np.zeros((0, n_classes), dtype=np.float32)
        bs = bs or 2 * self.config.bs
        docs = [d if len(d) else np.array([cfg.encoder.pad_id]) for d in self.numericalize(texts)]
        zero = [t.numpy() for layer in self.model.encoder.init_state(1) for t in layer]
        # A stateless graph reads windows of a fixed length (and no prefix: it carries none).
        fixed = self.session.get_inputs()[0].shape[1]
        prefix_state = {
            i: self._read_prefix(d[: len(d) - cfg.max_len], zero, max(cfg.bptt, cfg.max_len))
            for i, d in enumerate(docs)
            if len(d) > cfg.max_len and zero
        }
        windows = [d[-cfg.max_len :] for d in docs]
        order = np.argsort([-len(w) for w in windows], kind="stable")
        out = np.zeros((len(docs), n_classes), dtype=np.float32)
        for start in range(0, len(order), bs):
            rows = order[start : start + bs]
            W = fixed if isinstance(fixed, int) else len(windows[rows[0]])
            ids = np.full((len(rows), W), cfg.encoder.pad_id, dtype=np.int64)
            for j, r in enumerate(rows):
                ids[j, : len(windows[r])] = windows[r]
            lengths = np.array([len(windows[r]) for r in rows], dtype=np.int64)
            states = [
                np.concatenate([prefix_state.get(int(r), zero)[k] for r in rows], axis=1)
                for k in range(len(zero))
            ]
            out[rows] = self._run(ids, lengths, states)[0]
        if not np.isfinite(out).all():
            from ulmfit.tasks.classify import NonFiniteOutputError

            raise NonFiniteOutputError("ONNX Runtime gave non-finite logits")
        return out

    def predict_proba(self, texts: Sequence[str], bs: int | None = None) -> np.ndarray:
        logits = torch.from_numpy(self.predict_logits(texts, bs))
        return self.head.probs(logits).numpy()

    def _run(self, ids: np.ndarray, lengths: np.ndarray, states: list[np.ndarray]) -> list[Any]:
        feed = {"ids": ids, "lengths": lengths}
        feed.update({i.name: s for i, s in zip(self.session.get_inputs()[2:], states, strict=True)})
        return list(self.session.run(None, feed))

    def _read_prefix(
        self, ids: np.ndarray, state: list[np.ndarray], chunk: int
    ) -> list[np.ndarray]:
        """The state after ``ids`` (one document, no padding), read ``chunk`` at a time."""
        for start in range(0, len(ids), chunk):
            part = ids[start : start + chunk][None].astype(np.int64)
            state = self._run(part, np.array([part.shape[1]], dtype=np.int64), state)[1:]
        return state
