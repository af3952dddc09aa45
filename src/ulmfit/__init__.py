"""ulmfit: text classification by Universal Language Model Fine-tuning (Howard & Ruder 2018).

The three stages, from Python::

    from ulmfit import LMStageConfig, CorpusConfig, TrainConfig, train_language_model
    from ulmfit import TextClassifier, ClassifierTrainConfig

    wiki = CorpusConfig(train=("wiki.txt",))
    lm = train_language_model(LMStageConfig(out_dir="runs/lm", corpus=wiki))
    ft = train_language_model(LMStageConfig(out_dir="runs/ft", pretrained=str(lm),
                                            corpus=CorpusConfig(train=("reviews.csv",))))
    clf = TextClassifier(ft, ClassifierTrainConfig(task="multiclass")).fit(texts, labels)
    clf.predict(["a new review"]); clf.save("runs/clf"); TextClassifier.load("runs/clf")
"""

from ulmfit.data.lm import LMDataConfig
from ulmfit.data.prepare import CorpusConfig
from ulmfit.models.awd_lstm import AWDLSTMConfig
from ulmfit.tasks.classify import (
    ClassifierTrainConfig,
    TextClassifier,
    UnfreezeStage,
    ensemble_predict_proba,
)
from ulmfit.tasks.heads import HierarchyConfig
from ulmfit.tasks.multitask import HeadSpec, MultiTaskClassifier, MultiTaskConfig
from ulmfit.tasks.pipeline import LabelledDataConfig, PipelineConfig, run_pipeline
from ulmfit.tasks.train_lm import (
    LMStageConfig,
    VocabConfig,
    evaluate_language_model,
    find_lm_lr,
    train_language_model,
)
from ulmfit.text.tokenize import TokenizerConfig
from ulmfit.training.config import TrainConfig

__version__ = "0.1.0"

__all__ = [
    "AWDLSTMConfig",
    "ClassifierTrainConfig",
    "CorpusConfig",
    "HeadSpec",
    "HierarchyConfig",
    "LMDataConfig",
    "LMStageConfig",
    "LabelledDataConfig",
    "MultiTaskClassifier",
    "MultiTaskConfig",
    "PipelineConfig",
    "TextClassifier",
    "TokenizerConfig",
    "TrainConfig",
    "UnfreezeStage",
    "VocabConfig",
    "ensemble_predict_proba",
    "evaluate_language_model",
    "find_lm_lr",
    "run_pipeline",
    "train_language_model",
]
