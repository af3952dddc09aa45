"""The ``ulmfit`` command: one subcommand per pipeline stage."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from ulmfit.cli.data_cmd import add_data_parser, run_data
from ulmfit.cli.lm_cmd import add_lm_parser, run_lm
from ulmfit.cli.options import add_dataclass_options, config_from_args
from ulmfit.serve.config import ServeConfig

log = logging.getLogger("ulmfit")

LM_HELP = """Options may also come from a TOML file (--config) whose tables mirror the flags:
  [corpus] train = ["wiki.txt"]   [train] lr = 0.01   [model] drop_mult = 0.3 ...
Flags given on the command line override the file."""


def build_parser() -> argparse.ArgumentParser:
    from ulmfit.tasks.train_lm import LMStageConfig

    parser = argparse.ArgumentParser(
        prog="ulmfit",
        description="ULMFiT: pretrain an AWD-LSTM language model, fine-tune it on target text, "
        "then fine-tune a classifier.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name, text in (
        ("pretrain", "Stage 1: train a language model from scratch on a general-domain corpus."),
        (
            "finetune-lm",
            "Stage 2: fine-tune a pretrained language model on target-task text "
            "(vocabulary transferred by token string; needs --pretrained).",
        ),
        (
            "lr-find",
            "Learning-rate range test for a language-model stage; writes a PNG plot "
            "and prints a suggested rate.",
        ),
    ):
        p = sub.add_parser(
            name,
            help=text,
            description=text,
            epilog=LM_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--config", type=Path, help="TOML file with any of the options below")
        add_dataclass_options(p, LMStageConfig)
        if name == "lr-find":
            p.add_argument(
                "--num-steps",
                dest="_num_steps",
                type=int,
                default=100,
                help="steps of the range test (default: 100)",
            )
            p.add_argument(
                "--plot",
                dest="_plot",
                type=Path,
                default=Path("lr_find.png"),
                help="where the PNG goes (default: lr_find.png)",
            )

    from ulmfit.tasks.pipeline import ClassifierStageConfig, PipelineConfig

    text = "Stage 3: fine-tune a classifier from a (fine-tuned) language model (needs --lm)."
    p = sub.add_parser(
        "train-classifier",
        help=text,
        description=text,
        epilog=LM_HELP.replace("[corpus] train", "[data] train"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, help="TOML file with any of the options below")
    add_dataclass_options(p, ClassifierStageConfig)
    _add_strict(p)

    text = (
        "All three stages from one TOML file (stage 1 is skipped when 'pretrained' names an "
        "LM directory); every artifact goes under out_dir, and the test error is printed "
        "beside the majority-class baseline."
    )
    p = sub.add_parser("run", help="Run the whole pipeline from one config file.", description=text)
    p.add_argument("config", type=Path, help="TOML file (see configs/demo_trec.toml)")
    add_dataclass_options(p, PipelineConfig)
    _add_strict(p)

    p = sub.add_parser(
        "predict",
        help="Predict labels for a CSV/JSONL/TXT file, streaming.",
        description="Predict with a classifier directory. Input: CSV/TSV/JSONL (with "
        "--text-column) or plain text (one document per line). Output: CSV or JSONL "
        "(by suffix) with the label(s) and one probability per class, in input order. "
        "An empty text is predicted from xxbos alone.",
    )
    p.add_argument(
        "model_dir",
        type=Path,
        nargs="+",
        help="classifier directory (several: their probabilities are averaged)",
    )
    p.add_argument("--input", "-i", type=Path, required=True, help="file to predict")
    p.add_argument("--output", "-o", type=Path, required=True, help="predictions (.csv or .jsonl)")
    p.add_argument(
        "--text-column", nargs="+", default=["text"], help="text field(s) (default: text)"
    )
    p.add_argument(
        "--chunk", type=int, default=2048, help="documents read per chunk (default 2048)"
    )
    p.add_argument("--threshold", type=float, help="multilabel: one threshold for every label")
    p.add_argument("--top-k", type=int, help="multilabel: the k most probable labels instead")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--onnx", type=Path, help="run this graph (export-onnx) in ONNX Runtime")
    _add_inference_options(p)
    _add_overwrite(p)

    for name, text in (
        ("evaluate", "Score a classifier directory on a labelled file: table, JSON report, PNG."),
        (
            "ensemble",
            "Average the probabilities of several classifiers (e.g. forward + backward) "
            "and score them on a labelled file.",
        ),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument(
            "model_dir",
            type=Path,
            nargs="+" if name == "ensemble" else None,
            help="classifier director" + ("ies" if name == "ensemble" else "y"),
        )
        p.add_argument("--data", type=Path, required=True, help="labelled CSV/TSV/JSONL file")
        p.add_argument("--text-column", nargs="+", default=["text"], help="text field(s)")
        p.add_argument("--label-column", default="label", help="label field (default: label)")
        p.add_argument("--label-sep", help="multilabel CSV: separator inside the label cell")
        p.add_argument("--json", type=Path, help="write the metrics here (default: print only)")
        p.add_argument("--plot", type=Path, help="confusion matrix / per-label PNG")
        p.add_argument(
            "--head",
            action="append",
            default=[],
            help="multi-task model: a head the file has labels for, NAME (reads "
            "--label-column) or NAME=COLUMN; repeat for several",
        )
        p.add_argument("--device", default="auto", help="auto | cpu | cuda")
        _add_inference_options(p)
        _add_overwrite(p)

    p = sub.add_parser(
        "import-fastai",
        help="Convert fastai AWD-LSTM LM weights (.pth) + vocabulary (.pkl) to a model directory.",
        description="Convert fastai's published AWD-LSTM language model (e.g. lstm_wt103.pth and "
        "itos_wt103.pkl) into a ulmfit model directory that tokenises as fastai does. The files "
        "are read without executing code (tensors and containers only; the vocabulary "
        "unpickler accepts only strings).",
    )
    p.add_argument("weights", type=Path, help="fastai model file (MODEL.pth)")
    p.add_argument("vocab", type=Path, help="fastai vocabulary pickle (itos, VOCAB.pkl)")
    p.add_argument("out_dir", type=Path, help="model directory to write")
    p.add_argument(
        "--tokenizer", choices=["fastai", "word"], default="fastai",
        help="the tokenizer the directory records: fastai's own (spaCy + its rules, what the "
        "model was trained on; needs the 'fastai' extra) or ulmfit's faster 'word' tokenizer",
    )  # fmt: skip
    _add_overwrite(p)

    p = sub.add_parser(
        "import-gpt2",
        help="Convert a Hugging Face GPT-2 directory to a model directory (transformer backbone).",
        description="Convert a Hugging Face GPT-2 checkpoint directory (config.json, "
        "model.safetensors, tokenizer.json or vocab.json + merges.txt) into a ulmfit "
        "language-model directory with the transformer backbone and GPT-2's byte-level BPE "
        "tokenizer, ready for LM fine-tuning (finetune-lm --pretrained) and a classifier.",
    )
    p.add_argument("hf_dir", type=Path, help="the Hugging Face model directory")
    p.add_argument("out_dir", type=Path, help="model directory to write")
    _add_overwrite(p)

    p = sub.add_parser(
        "evaluate-lm",
        help="Perplexity of a language-model directory on text files.",
        description="Validation loss, accuracy and perplexity of a saved language model on text "
        "files (WikiText .tokens files are read as articles).",
    )
    p.add_argument("model_dir", type=Path, help="language-model directory")
    p.add_argument("files", nargs="+", help="text files to evaluate on")
    p.add_argument("--bs", type=int, default=16, help="rows of the evaluation stream (default 16)")
    p.add_argument("--bptt", type=int, default=70, help="tokens per batch (default 70)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--json", type=Path, help="also write the metrics to this JSON file")
    _add_overwrite(p)
    p = sub.add_parser(
        "export-onnx",
        help="Write a classifier as one ONNX graph (extra 'onnx'); --int8: quantised.",
        description="Export encoder, pooling and head as one ONNX graph with dynamic batch and "
        "sequence axes and the recurrent state as inputs and outputs (the Transformer, which "
        "carries none, reads windows of exactly max_len tokens). "
        "Run it with `predict --onnx` or `serve --onnx`; the tokenizer, vocabulary and labels "
        "stay in the model directory.",
    )
    p.add_argument("model_dir", type=Path, help="classifier directory")
    p.add_argument("out", type=Path, help="the .onnx file to write")
    p.add_argument("--int8", action="store_true", help="ONNX Runtime's dynamic int8 quantisation")
    _add_overwrite(p)
    p = sub.add_parser(
        "export-lm",
        help="Copy an LM directory with bf16 weights in shards of at most N MiB.",
        description="Write a language-model directory for distribution: weights cast to bf16 "
        "(or fp16/fp32) and split into safetensors shards of at most --max-shard-mib MiB, "
        "without the training state.",
    )
    p.add_argument("src", type=Path, help="language-model directory")
    p.add_argument("dst", type=Path, help="directory to write")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--max-shard-mib", type=int, default=16, help="largest file (default 16)")
    _add_overwrite(p)
    p = sub.add_parser(
        "serve",
        help="Serve a classifier over HTTP: /predict, /embed, /explain and a page (extra 'serve').",
        description="Serve a classifier directory with FastAPI + uvicorn: POST /predict, "
        "/embed, /explain; GET /health, /info, /metrics, / (a page that shows why a label "
        "was chosen), /docs. Concurrent requests are micro-batched. Needs "
        "pip install 'ulmfit[serve]'.",
    )
    p.add_argument("model_dir", type=Path, help="classifier directory")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--int8", action="store_true", help="dynamic int8 model for /predict (CPU)")
    p.add_argument("--onnx", type=Path, help="answer /predict with this graph in ONNX Runtime")
    defaults = ServeConfig()
    for name in ServeConfig.__dataclass_fields__:
        default = getattr(defaults, name)
        p.add_argument(
            f"--{name.replace('_', '-')}",
            type=type(default),
            default=default,
            help=f"(default {default})",
        )
    add_data_parser(sub)
    add_lm_parser(sub)
    return parser


def _check_plot_suffix(path: Path) -> None:
    """Refuse a plot name whose suffix matplotlib cannot write, before any work is done."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return  # no plot is written without matplotlib (the library logs and skips it)
    from ulmfit.checkpoint import figure_format

    figure_format(path)


def _check_json_name(path: Path | None) -> None:
    if path is not None and path.suffix.lower() != ".json":
        raise ValueError(f"{path}: --json writes JSON; give it a .json name")


def _add_strict(p: argparse.ArgumentParser) -> None:
    # Short for --classifier.strict: the data checks belong to the classifier's fit.
    p.add_argument(
        "--strict",
        dest="classifier.strict",
        action="store_true",
        default=argparse.SUPPRESS,
        help="refuse suspicious training data (labels like 'nan', duplicate texts, classes "
        "with under 5 examples) instead of warning",
    )


def _add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace output files that already exist (default: refuse them)",
    )


def _add_inference_options(p: argparse.ArgumentParser) -> None:
    """CPU speed options shared by predict, evaluate and ensemble."""
    p.add_argument(
        "--int8",
        action="store_true",
        help="dynamic int8 LSTM and linear layers (CPU only; about 3x faster, "
        "probabilities change slightly: see benchmarks/RESULTS.md)",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (default: torch's choice, one per core; "
        "on a machine shared with other jobs, 1 is often faster)",
    )
    p.add_argument(
        "--bs", type=int, help="documents per batch (default: twice the training batch size)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    clean = False
    try:
        code = _run(args)
        clean = True
        return code
    except (ValueError, OSError) as e:  # our errors name the file and field
        # Said once, on stderr; the traceback only with --verbose (a log line at ERROR
        # would repeat the message, since the log goes to stderr too).
        log.debug("%s", e, exc_info=True)
        print(f"ulmfit {args.command}: error: {e}", file=sys.stderr)
        return 2
    finally:
        _leave_process_group(clean)


def _leave_process_group(clean: bool) -> None:
    """Under torchrun, leave the process group before exit (torch stays unimported for
    commands that never loaded it)."""
    if "torch.distributed" in sys.modules:
        from ulmfit.training import distributed

        distributed.shutdown(clean)


def _run(args: argparse.Namespace) -> int:
    if args.command == "data":
        return run_data(args)
    if args.command == "lm":
        return run_lm(args)
    from ulmfit.tasks.train_lm import LMStageConfig, find_lm_lr, train_language_model

    if args.command in ("pretrain", "finetune-lm", "lr-find"):
        cfg = config_from_args(LMStageConfig, args, args.config)
        if args.command == "finetune-lm" and not cfg.pretrained:
            raise ValueError(
                "finetune-lm needs --pretrained DIR (or 'pretrained' in the config file)"
            )
        if args.command == "pretrain" and cfg.pretrained:
            raise ValueError("pretrain starts from scratch; use finetune-lm with --pretrained")
        if args.command == "lr-find":
            result = find_lm_lr(cfg, args._num_steps, args._plot)
            print(
                f"suggested lr: {result.suggestion:.3g} (steepest descent at {result.steepest:.3g})"
            )
            print(f"plot: {args._plot}")
            return 0
        out = train_language_model(cfg)
        print(f"model directory: {out}")
        return 0
    if args.command in ("train-classifier", "run"):
        from ulmfit.tasks.pipeline import (
            ClassifierStageConfig,
            PipelineConfig,
            report_summary,
            run_pipeline,
            train_classifier_stage,
        )
        from ulmfit.training import distributed

        if args.command == "run":
            pcfg = config_from_args(PipelineConfig, args, args.config)
            report = run_pipeline(pcfg)
            if distributed.current().is_main:  # under torchrun, one report
                print(report_summary(report, pcfg.classifier.task))
                print(f"report: {Path(pcfg.out_dir) / 'report.json'}")
        else:
            ccfg = config_from_args(ClassifierStageConfig, args, args.config)
            report = train_classifier_stage(ccfg)
            if distributed.current().is_main:
                print(report_summary(report, ccfg.classifier.task))
        return 0
    if args.command == "serve":
        from ulmfit.serve.app import serve

        limits = {k: getattr(args, k) for k in ServeConfig.__dataclass_fields__}
        onnx = str(args.onnx) if args.onnx else None
        serve(str(args.model_dir), args.host, args.port, args.int8, ServeConfig(**limits), onnx)
        return 0
    if args.command == "predict":
        from ulmfit.tasks.predict import predict_file

        n = predict_file(
            args.model_dir,
            args.input,
            args.output,
            text_column=args.text_column,
            chunk=args.chunk,
            threshold=args.threshold,
            top_k=args.top_k,
            device=args.device,
            quantize="int8" if args.int8 else None,
            threads=args.threads,
            bs=args.bs,
            overwrite=args.overwrite,
            onnx=args.onnx,
        )
        print(f"{n} predictions written to {args.output}")
        return 0
    if args.command in ("evaluate", "ensemble"):
        from ulmfit.checkpoint import atomic_write_text
        from ulmfit.tasks.predict import check_outputs, evaluate_file

        dirs = args.model_dir if isinstance(args.model_dir, list) else [args.model_dir]
        check_outputs([args.data, *dirs], [args.json, args.plot], args.overwrite)
        _check_json_name(args.json)
        if args.plot is not None:
            _check_plot_suffix(args.plot)
        metrics, table = evaluate_file(
            dirs,
            args.data,
            text_column=args.text_column,
            label_column=args.label_column,
            label_sep=args.label_sep,
            plot=args.plot,
            device=args.device,
            quantize="int8" if args.int8 else None,
            threads=args.threads,
            bs=args.bs,
            heads=getattr(args, "head", []),
        )
        print(table)
        if args.json:
            text = json.dumps(metrics, indent=2, default=str) + "\n"
            atomic_write_text(args.json, text, overwrite=args.overwrite)
            print(f"report: {args.json}")
        return 0
    if args.command == "export-onnx":
        from ulmfit.export_onnx import export_onnx

        print(f"onnx: {export_onnx(args.model_dir, args.out, args.int8, args.overwrite)}")
        return 0
    if args.command == "export-lm":
        from ulmfit.models.io import export_lm

        out = export_lm(args.src, args.dst, args.dtype, args.max_shard_mib, args.overwrite)
        print(f"model directory: {out}")
        return 0
    if args.command == "import-fastai":
        from ulmfit.models.fastai_import import import_fastai
        from ulmfit.text.tokenize import TokenizerConfig

        tok = TokenizerConfig(kind=args.tokenizer)
        out = import_fastai(
            args.weights, args.vocab, args.out_dir, tokenizer=tok, overwrite=args.overwrite
        )
        print(f"model directory: {out}")
        return 0
    if args.command == "import-gpt2":
        from ulmfit.models.gpt2 import import_gpt2

        out = import_gpt2(args.hf_dir, args.out_dir, overwrite=args.overwrite)
        print(f"model directory: {out}")
        return 0
    if args.command == "evaluate-lm":
        from ulmfit.checkpoint import atomic_write_text
        from ulmfit.tasks.predict import check_outputs
        from ulmfit.tasks.train_lm import evaluate_language_model

        check_outputs([Path(f) for f in args.files], [args.json], args.overwrite)
        _check_json_name(args.json)
        metrics = evaluate_language_model(
            args.model_dir, args.files, bs=args.bs, bptt=args.bptt, device=args.device
        )
        print(json.dumps(metrics, indent=2))
        if args.json:
            atomic_write_text(
                args.json, json.dumps(metrics, indent=2) + "\n", overwrite=args.overwrite
            )
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    raise SystemExit(main())
