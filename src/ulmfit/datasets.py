"""Named benchmark datasets: where they come from, checksums, download and loading.

Every dataset is a :class:`DatasetSpec` in a registry. Its files live in a data
directory laid out like the project's mirror (``trec/train.csv.xz``,
``wikitext/wikitext-2/wiki.valid.tokens.xz``, ...): ``$ULMFIT_DATA`` if set, else
``$ULMFIT_CACHE/datasets`` (default ``~/.cache/ulmfit/datasets``).

* :func:`load_dataset` reads one split (texts, labels, split name), after checking
  the files' sha256 against the mirror's (once per file: a stamp records size,
  mtime and digest, so later loads do not hash again) and the row count against
  the official one.
* :func:`get` makes sure a dataset's files are there: it verifies what is present
  and, for a missing split whose raw download has a parser here, downloads the
  canonical source, checks its published checksum and converts it into the mirror
  layout. Otherwise it says which files are missing and where they come from.

Checksums are written ``"sha256:HEX"``, ``"sha1:HEX"`` or ``"md5:HEX"`` (a bare
64-digit hex string is sha256): some sources publish only MD5 or SHA-1.
"""

from __future__ import annotations

import bz2
import csv
import dataclasses
import difflib
import gzip
import hashlib
import io
import json
import logging
import lzma
import os
import posixpath
import re
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from ulmfit.data.classification import LabelledTexts, read_labelled, stratified_split
from ulmfit.downloads import (
    _CHUNK,
    ChecksumError,
    download,
    file_digest,
    verify_file,
)
from ulmfit.downloads import mismatch as _mismatch
from ulmfit.downloads import parse_digest as _parse_digest
from ulmfit.downloads import read_stamp as _read_stamp
from ulmfit.downloads import url_basename as _url_basename
from ulmfit.downloads import write_stamp as _write_stamp
from ulmfit.text.corpus import default_cache_dir
from ulmfit.text.readers import CorpusError, read_texts

log = logging.getLogger(__name__)

DatasetTask = Literal["multiclass", "multilabel", "hierarchical", "lm"]


class MissingDataError(FileNotFoundError):
    """A dataset's files are not in the data directory and cannot be fetched here."""


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class FileSpec:
    """One file of the local mirror."""

    path: str  # relative to the data directory, e.g. "trec/train.csv.xz"
    sha256: str | None = None  # of the file as stored in the mirror; None: not known


@dataclass(frozen=True)
class Source:
    """Where a split originally comes from."""

    url: str  # canonical public download (or page, where there is no direct download)
    checksum: str | None = None  # published digest of the download ("algo:hex")
    member: str | None = None  # the file or folder inside the archive holding the split
    member_checksum: str | None = None  # published digest of that member's bytes
    filename: str | None = None  # the download's name, where the URL's path does not say it


@dataclass(frozen=True)
class SplitSpec:
    """An official split: its files in the mirror, its size and its source."""

    name: str
    files: tuple[FileSpec, ...]
    rows: int | None  # documents load_dataset returns (articles for LM corpora); None: unknown
    source: Source
    labelled: bool = True
    lines: int | None = None  # lines of the decompressed text, where that is the official count


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: task, fields, splits and provenance."""

    name: str
    description: str
    task: DatasetTask
    text_fields: tuple[str, ...]  # joined as read_labelled does (xxfld 1 .. xxfld 2 ..)
    label_field: str | None
    splits: tuple[SplitSpec, ...]
    classes: tuple[str, ...] = ()  # the label set (hierarchical: the leaves)
    converter: str | None = None  # parser for the raw download; None: not implemented
    test_split: str | None = "test"  # the labelled held-out split load_splits calls "test"
    extras: tuple[FileSpec, ...] = ()  # other mirror files (raw copies, label lists)
    homepage: str = ""

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.splits)

    def split(self, name: str) -> SplitSpec:
        """The split called ``name``; ValueError naming the others if there is none."""
        for s in self.splits:
            if s.name == name:
                return s
        raise ValueError(
            f"dataset {self.name!r} has no split {name!r}; its splits are "
            f"{', '.join(self.split_names)}"
        )

    @property
    def reader_task(self) -> Literal["multiclass", "multilabel"]:
        """How the labels are read: hierarchical paths are label lists."""
        return "multiclass" if self.task == "multiclass" else "multilabel"

    @property
    def known_labels(self) -> tuple[str, ...]:
        """Every label a record may carry (hierarchical: the top levels too)."""
        if self.task == "hierarchical":
            tops = dict.fromkeys(c.split(".")[0] for c in self.classes)
            return (*tops, *self.classes)
        return self.classes


@dataclass
class DatasetSplit(LabelledTexts):
    """One split of a named dataset, usable wherever :class:`LabelledTexts` is.

    ``labels`` holds strings (multiclass), lists of strings (multilabel; for
    hierarchical datasets the path ``[top, leaf]``) or is None (unlabelled text).
    ``rows`` are line numbers in the source file (LM corpora: document numbers).
    """

    dataset: str = ""
    split: str = ""
    task: str = "multiclass"

    def subset(self, idx: Sequence[int] | np.ndarray, split: str) -> DatasetSplit:
        """The documents at ``idx``, as a split called ``split``."""
        labels: Any = None if self.labels is None else [self.labels[i] for i in idx]
        return DatasetSplit(
            [self.texts[i] for i in idx],
            labels,
            self.source,
            [self.rows[i] for i in idx],
            dataset=self.dataset,
            split=split,
            task=self.task,
        )


# --------------------------------------------------------------------------- registry

_TREC_URL = "https://cogcomp.seas.upenn.edu/Data/QA/QC/"
_IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
# Published for this archive by many independent loaders (and d2l's SHA-1 agrees).
_IMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
_FASTAI_NLP = "https://s3.amazonaws.com/fast-ai-nlp/"
_WIKITEXT = "https://s3.amazonaws.com/research.metamind.io/wikitext/"
_REUTERS_URL = "https://kdd.ics.uci.edu/databases/reuters21578/reuters21578.tar.gz"
_NEWSGROUPS_URL = "http://qwone.com/~jason/20Newsgroups/20news-bydate.tar.gz"
# Mendeley Data, dataset 9rw3vkcfy4 version 6 (Kowsari et al. 2017), file WebOfScience.zip.
# Size and sha256 as Hugging Face datasets' web_of_science loader records them
# (dataset_infos.json; the same under the older .../WebOfScience.zip?dl=1 address).
_WOS_URL = (
    "https://data.mendeley.com/public-files/datasets/9rw3vkcfy4/files/"
    "c9ea673d-5542-44c0-ab7b-f1311f7d61df/file_downloaded"
)
_WOS_SHA256 = "b787d484bff88b0dcdb3fa291d06ec9d2f025dc2a67ce1045d0c688cd96ccf8a"
_SEMEVAL_URL = "https://competitions.codalab.org/competitions/17751"
_WIKI_SUBSET_URL = (
    "https://github.com/jason-feng/wikiVisual/tree/1c0fac92f29f17c1603bfffbe864e0dfdff66897/text"
)

_TREC6 = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")
_TREC50 = tuple(
    f"{coarse}:{fine}"
    for coarse, fines in (
        ("ABBR", "abb exp"),
        ("DESC", "def desc manner reason"),
        (
            "ENTY",
            "animal body color cremat currency dismed event food instru lang letter other "
            "plant product religion sport substance symbol techmeth termeq veh word",
        ),
        ("HUM", "desc gr ind title"),
        ("LOC", "city country mount other state"),
        (
            "NUM",
            "code count date dist money ord other perc period speed temp volsize weight",
        ),
    )
    for fine in fines.split()
)
_REUTERS90 = tuple(
    """acq alum barley bop carcass castor-oil cocoa coconut coconut-oil coffee copper copra-cake
    corn cotton cotton-oil cpi cpu crude dfl dlr dmk earn fuel gas gnp gold grain groundnut
    groundnut-oil heat hog housing income instal-debt interest ipi iron-steel jet jobs
    l-cattle lead lei lin-oil livestock lumber meal-feed money-fx money-supply naphtha nat-gas
    nickel nkr nzdlr oat oilseed orange palladium palm-oil palmkernel pet-chem platinum potato
    propane rand rape-oil rapeseed reserves retail rice rubber rye ship silver sorghum
    soy-meal soy-oil soybean strategic-metal sugar sun-meal sun-oil sunseed tea tin trade
    veg-oil wheat wpi yen zinc""".split()  # noqa: SIM905
)
_NEWSGROUPS20 = tuple(
    """alt.atheism comp.graphics comp.os.ms-windows.misc comp.sys.ibm.pc.hardware
    comp.sys.mac.hardware comp.windows.x misc.forsale rec.autos rec.motorcycles
    rec.sport.baseball rec.sport.hockey sci.crypt sci.electronics sci.med sci.space
    soc.religion.christian talk.politics.guns talk.politics.mideast talk.politics.misc
    talk.religion.misc""".split()  # noqa: SIM905
)
_SEMEVAL_EMOTIONS = tuple(
    """anger anticipation disgust fear joy love optimism pessimism sadness surprise
    trust""".split()  # noqa: SIM905
)
_DBPEDIA14 = tuple(
    """Company EducationalInstitution Artist Athlete OfficeHolder MeanOfTransportation Building
    NaturalPlace Village Animal Plant Album Film WrittenWork""".split()  # noqa: SIM905
)


def _trec(name: str, label_field: str, classes: tuple[str, ...], what: str) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        description=f"TREC question classification (Li & Roth 2002), {what}.",
        task="multiclass",
        text_fields=("text",),
        label_field=label_field,
        classes=classes,
        splits=(
            SplitSpec(
                "train",
                (
                    FileSpec(
                        "trec/train.csv.xz",
                        "c0f96a9213b99713726cf8fd82987b25ca6ee72076393babce6ae69e1ffb9737",
                    ),
                ),
                5452,
                Source(
                    _TREC_URL + "train_5500.label",
                    "sha256:9e4c8bdcaffb96ed61041bd64b564183d52793a8e91d84fc3a8646885f466ec3",
                ),
            ),
            SplitSpec(
                "test",
                (
                    FileSpec(
                        "trec/test.csv.xz",
                        "8aa52c1d1b47af65b5cda8ba6adf2341ac86a3eb2c385796ec1d48c545465064",
                    ),
                ),
                500,
                Source(
                    _TREC_URL + "TREC_10.label",
                    "sha256:033f22c028c2bbba9ca682f68ffe204dc1aa6e1cf35dd6207f2d4ca67f0d0e8e",
                ),
            ),
        ),
        converter="trec",
        extras=(
            FileSpec(
                "trec/train_5500.label.xz",
                "68b668bf2ef69778d124e8a970e5923cd018c714f829b189695c1ea36ddaeb89",
            ),
            FileSpec(
                "trec/TREC_10.label.xz",
                "1c5d3004716944af6b65b752362ab5f09f97a6c0e786eed5404423e4cf42400e",
            ),
        ),
        homepage="https://cogcomp.seas.upenn.edu/Data/QA/QC/",
    )


def _zhang(
    name: str,
    folder: str,
    archive: str,
    description: str,
    text_fields: tuple[str, ...],
    classes: tuple[str, ...],
    rows: tuple[int, int],
    files: tuple[FileSpec, FileSpec] | None = None,
    member_checksums: tuple[str | None, str | None] = (None, None),
    extras: tuple[FileSpec, ...] = (),
) -> DatasetSpec:
    """A dataset of Zhang et al. (2015), as fast.ai mirrors it: ``X_csv.tgz``."""
    url = _FASTAI_NLP + archive + ".tgz"
    files = files or (FileSpec(f"{folder}/train.csv.xz"), FileSpec(f"{folder}/test.csv.xz"))
    return DatasetSpec(
        name=name,
        description=description,
        task="multiclass",
        text_fields=text_fields,
        label_field="label",
        classes=classes,
        splits=tuple(
            # No digest is published for the fast.ai archives; the row counts (and,
            # where torchtext publishes them, the members' MD5) guard the conversion.
            SplitSpec(
                split,
                (fs,),
                n,
                Source(url, None, f"{archive}/{split}.csv", member_sum),
            )
            for split, fs, n, member_sum in zip(
                ("train", "test"), files, rows, member_checksums, strict=True
            )
        ),
        converter="zhang2015",
        extras=extras,
        homepage="https://papers.nips.cc/paper/5782-character-level-convolutional-networks-for-text-classification",
    )


def _wikitext(
    name: str,
    version: str,
    zip_checksum: str,
    train_lines: int,
    members: tuple[str, str, str],
    mirror_sha: tuple[str, str],
    description: str,
) -> DatasetSpec:
    url = f"{_WIKITEXT}{version}-v1.zip"
    # (split, rows = articles as read_texts counts them, lines, mirror sha256, member SHA-1)
    table: tuple[tuple[str, int | None, int, str | None, str], ...] = (
        ("train", None, train_lines, None, members[0]),
        ("valid", 60, 3760, mirror_sha[0], members[1]),
        ("test", 62, 4358, mirror_sha[1], members[2]),
    )
    return DatasetSpec(
        name=name,
        description=description,
        task="lm",
        text_fields=(),
        label_field=None,
        splits=tuple(
            SplitSpec(
                split,
                (FileSpec(f"wikitext/{version}/wiki.{split}.tokens.xz", sha),),
                rows,
                Source(url, zip_checksum, f"{version}/wiki.{split}.tokens", f"sha1:{member}"),
                labelled=False,
                lines=lines,
            )
            for split, rows, lines, sha, member in table
        ),
        converter="wikitext",
        homepage="https://blog.salesforceairesearch.com/the-wikitext-long-term-dependency-language-modeling-dataset/",
    )


def _registry() -> dict[str, DatasetSpec]:
    imdb_src = Source(_IMDB_URL, f"sha256:{_IMDB_SHA256}")
    ag_url_note = (
        "AG's News topic classification (Zhang et al. 2015): 4 classes, title + description."
    )
    specs = [
        DatasetSpec(
            name="imdb",
            description="IMDb Large Movie Review Dataset (Maas et al. 2011): binary sentiment; "
            "'unsup' holds the 50k unlabelled reviews used for LM fine-tuning.",
            task="multiclass",
            text_fields=("text",),
            label_field="label",
            classes=("neg", "pos"),
            splits=(
                SplitSpec(
                    "train",
                    (
                        FileSpec(
                            "imdb/train.csv.xz",
                            "ee19602c8652367553f2e6cf1b464e12a28036c7520832270b56fce604d702c3",
                        ),
                    ),
                    25000,
                    dataclasses.replace(imdb_src, member="aclImdb/train"),
                ),
                SplitSpec(
                    "test",
                    (
                        FileSpec(
                            "imdb/test.csv.xz",
                            "cee567de4876dcac2a12db898e05e93bbb1ed25e1d6b5a5e2de0c515b346206c",
                        ),
                    ),
                    25000,
                    dataclasses.replace(imdb_src, member="aclImdb/test"),
                ),
                SplitSpec(
                    "unsup",
                    (
                        FileSpec(
                            "imdb/unsup.csv.xz",
                            "fd4e450460d38a7c60deb781aa9a0696d267d8ac6d26248154612cf3fcb90881",
                        ),
                    ),
                    50000,
                    dataclasses.replace(imdb_src, member="aclImdb/train/unsup"),
                    labelled=False,
                ),
            ),
            converter="imdb",
            homepage="https://ai.stanford.edu/~amaas/data/sentiment/",
        ),
        _trec("trec6", "label", _TREC6, "6 coarse classes"),
        _trec("trec50", "fine_label", _TREC50, "50 fine classes (COARSE:fine)"),
        _zhang(
            "ag_news",
            "ag_news",
            "ag_news_csv",
            ag_url_note,
            ("title", "description"),
            ("World", "Sports", "Business", "Sci/Tech"),
            (120000, 7600),
            files=(
                FileSpec("ag_news/train.csv.xz"),
                FileSpec(
                    "ag_news/test.csv.xz",
                    "18107333fbffed8c1ca6c1eb92d7db4a1a908a53f59c90f00bfbd478046a4ba2",
                ),
            ),
            # MD5 of the official train.csv / test.csv, as torchtext publishes them.
            member_checksums=(
                "md5:b1a00f826fdfbd249f79597b59e1dc12",
                "md5:d52ea96a97a2d943681189a97654912d",
            ),
            extras=(
                FileSpec(
                    "ag_news/test.raw.csv.xz",
                    "a9175d8db5f82f815d6622473c39e830a816cf28231511178d73bc60fe9f770c",
                ),
                FileSpec(
                    "ag_news/classes.txt",
                    "612dbfa932f07a6ed837295a7d5746ce7412e7bb4bc32ba919fdb3cda3a1b9b5",
                ),
                FileSpec(
                    "ag_news/readme.txt",
                    "779c2e6bbf93dd810d9c7b318006daef7a4bfc34062002461d251dc10fb9f58c",
                ),
            ),
        ),
        _zhang(
            "dbpedia14",
            "dbpedia",
            "dbpedia_csv",
            "DBpedia ontology classification (Zhang et al. 2015): 14 classes, title + content.",
            ("title", "content"),
            _DBPEDIA14,
            (560000, 70000),
        ),
        _zhang(
            "yelp_polarity",
            "yelp_review_polarity",
            "yelp_review_polarity_csv",
            "Yelp review polarity (Zhang et al. 2015): 1-2 stars negative, 3-4 positive.",
            ("text",),
            ("negative", "positive"),
            (560000, 38000),
        ),
        _zhang(
            "yelp_full",
            "yelp_review_full",
            "yelp_review_full_csv",
            "Yelp review full (Zhang et al. 2015): the star rating, 1 to 5.",
            ("text",),
            ("1", "2", "3", "4", "5"),
            (650000, 50000),
        ),
        _wikitext(
            "wikitext2",
            "wikitext-2",
            "sha1:3c914d17d80b1459be871a5039ac23e752a53cbe",
            36718,
            # SHA-1 of wiki.{train,valid,test}.tokens as GluonNLP publishes them.
            (
                "863f29c46ef9d167fff4940ec821195882fe29d1",
                "0418625c8b4da6e4b5c7a0b9e78d4ae8f7ee5422",
                "c7b8ce0aa086fb34dab808c5c49224211eb2b172",
            ),
            (
                "69ca8b1132d18104a1f4b4569a7fda6f79f422348867f755b4308964ae859153",
                "07eeba52fffcd71044ced625bc3f6694b0aa4d4cd812481bda7bc48eedd3c533",
            ),
            "WikiText-2 (Merity et al. 2016), tokenized: 2M training tokens, 33k vocabulary.",
        ),
        _wikitext(
            "wikitext103",
            "wikitext-103",
            "sha1:0aec09a7537b58d4bb65362fee27650eeaba625a",
            1801350,
            (
                "b7497e2dfe77e72cfef5e3dbc61b7b53712ac211",
                "c326ac59dc587676d58c422eb8a03e119582f92b",
                "8a5befc548865cec54ed4273cf87dbbad60d1e47",
            ),
            (
                "5c3d5f8a00bb12e46ae0896e58bb6f738b589f9327bed62b171c8b8f13fc854f",
                "32911084aa79e33439f10e8498defad1729efc962cb82afd03745b11e1146ffd",
            ),
            "WikiText-103 (Merity et al. 2016), tokenized: 103M training tokens; "
            "the ULMFiT pretraining corpus.",
        ),
        DatasetSpec(
            name="reuters21578",
            description="Reuters-21578 (Distribution 1.0), ModApte split: documents with at "
            "least one of the 90 topics that have a train and a test document; multilabel.",
            task="multilabel",
            text_fields=("text",),
            label_field="labels",
            classes=_REUTERS90,
            splits=(
                SplitSpec(
                    "train",
                    (
                        FileSpec(
                            "reuters21578/train.jsonl.xz",
                            "d3eac048eabdff582e75a35213a0bb54a13dbe094b075b93be447d5d3c4e4651",
                        ),
                    ),
                    7770,
                    Source(_REUTERS_URL, member="reut2-*.sgm (LEWISSPLIT=TRAIN, TOPICS=YES)"),
                ),
                SplitSpec(
                    "test",
                    (
                        FileSpec(
                            "reuters21578/test.jsonl.xz",
                            "9552ac71086e3b351e60bfe1bcd7072efde10118031d949a9a1fd0ff697213f2",
                        ),
                    ),
                    3019,
                    Source(_REUTERS_URL, member="reut2-*.sgm (LEWISSPLIT=TEST, TOPICS=YES)"),
                ),
            ),
            extras=(
                FileSpec(
                    "reuters21578/labels.txt",
                    "f9f2f45f295272bf1ca5bf43b666e9e80fec57d559ec12e400120f5f8bc6372c",
                ),
                FileSpec(
                    "reuters21578/reuters21578_sgml.tar.xz",
                    "ec6a093347b7c1fa7f62eb2cace97c02c53ee6d04cdefe2264b6f1f4c0544e6b",
                ),
            ),
            homepage="https://kdd.ics.uci.edu/databases/reuters21578/reuters21578.html",
        ),
        DatasetSpec(
            name="newsgroups20",
            description="20 Newsgroups, bydate version (Lang 1995; Rennie): 20 groups under "
            "7 top-level hierarchies; labels are [top, group], e.g. ['comp', 'comp.graphics'].",
            task="hierarchical",
            text_fields=("text",),
            label_field="labels",
            classes=_NEWSGROUPS20,
            splits=(
                SplitSpec(
                    "train",
                    (
                        FileSpec(
                            "20newsgroups/train.jsonl.xz",
                            "aa938ea4ae9c4e4d06a5a3861949e0ae00197a22487fc773ae4313265a83f1d5",
                        ),
                    ),
                    11314,
                    # scikit-learn publishes sha256 8f1b2514... for its figshare copy of
                    # this archive; identity with this URL's bytes is not established, so
                    # the per-split counts guard the conversion instead.
                    Source(_NEWSGROUPS_URL, member="20news-bydate-train"),
                ),
                SplitSpec(
                    "test",
                    (
                        FileSpec(
                            "20newsgroups/test.jsonl.xz",
                            "8ca79c1e68ace4fe63b042a16b783717a610a0e164529f1edd8daeedefaee767",
                        ),
                    ),
                    7532,
                    Source(_NEWSGROUPS_URL, member="20news-bydate-test"),
                ),
            ),
            converter="newsgroups",
            extras=(
                FileSpec(
                    "20newsgroups/taxonomy.txt",
                    "a924f5d70858b6f35532104d76da8e6eff38d180637fe6cd51b408da70ffd3ff",
                ),
            ),
            homepage="http://qwone.com/~jason/20Newsgroups/",
        ),
        DatasetSpec(
            name="wos46985",
            description="Web of Science WOS-46985 (Kowsari et al. 2017, HDLTex): 46,985 "
            "abstracts, 7 domains -> 134 areas; labels are [domain-D, area-A] with the "
            "archive's ids (names: its Meta-data/Data.xlsx). No official test split: "
            "load_splits carves a seeded one.",
            task="hierarchical",
            text_fields=("text",),
            label_field="labels",
            splits=(
                SplitSpec(
                    "train",
                    (FileSpec("wos46985/all.jsonl.xz"),),
                    46985,
                    Source(
                        _WOS_URL,
                        f"sha256:{_WOS_SHA256}",
                        member="WOS46985",
                        filename="WebOfScience.zip",
                    ),
                ),
            ),
            converter="wos",
            test_split=None,
            homepage="https://data.mendeley.com/datasets/9rw3vkcfy4/6",
        ),
        DatasetSpec(
            name="semeval2018_ec",
            description="SemEval-2018 Task 1 E-c (English): 11 emotions per tweet, multilabel "
            "(a tweet may have none). The gold test labels are not in the mirror, so the "
            "official dev split serves as the test set; 'test' is the unlabelled release.",
            task="multilabel",
            text_fields=("text",),
            label_field="labels",
            classes=_SEMEVAL_EMOTIONS,
            splits=(
                SplitSpec(
                    "train",
                    (
                        FileSpec(
                            "semeval2018_ec/train.jsonl.xz",
                            "62819414174818ca27c5f34fb69f28387173eddb21d2064421897348e7be8bdc",
                        ),
                    ),
                    6838,
                    Source(_SEMEVAL_URL, member="2018-E-c-En-train.txt"),
                ),
                SplitSpec(
                    "dev",
                    (
                        FileSpec(
                            "semeval2018_ec/dev.jsonl.xz",
                            "aa5b501d31a5abbe3237037a769a560cdfdf25a1a7bf269ee1807d2406bb56fc",
                        ),
                    ),
                    886,
                    Source(_SEMEVAL_URL, member="2018-E-c-En-dev.txt"),
                ),
                SplitSpec(
                    "test",
                    (
                        FileSpec(
                            "semeval2018_ec/test_unlabeled.jsonl.xz",
                            "63b46dce6d1c296971195c052725bc593c3b730a86e37a39d6bd1c3d6cfc3b11",
                        ),
                    ),
                    3259,
                    Source(_SEMEVAL_URL, member="2018-E-c-En-test.txt"),
                    labelled=False,
                ),
            ),
            test_split="dev",
            extras=(
                FileSpec(
                    "semeval2018_ec/labels.txt",
                    "e83071ee0ddd0b8ffb98a13b4b051865a097af4c87477dcc66d1c6178282c2af",
                ),
            ),
            homepage=_SEMEVAL_URL,
        ),
        DatasetSpec(
            name="wikipedia_en_2015_subset",
            description="English Wikipedia (2015 dump), WikiExtractor output, parts AA and AB: "
            "12,980 whole articles, 32.5M words; stands in for the WikiText-103 train set.",
            task="lm",
            text_fields=(),
            label_field=None,
            splits=(
                SplitSpec(
                    "train",
                    (
                        FileSpec(
                            "wikipedia_en_2015_subset/AA.txt.xz",
                            "22f56cb55a948a8c085705426a3bdcf1b5d643e5fbd1d64a0a613fc145864cf6",
                        ),
                        FileSpec(
                            "wikipedia_en_2015_subset/AB.txt.xz",
                            "5826ae842b8f85e317da9a84db98ddcc941a7851b20dbe5dbb0c65f980b4ec9b",
                        ),
                    ),
                    12980,
                    Source(_WIKI_SUBSET_URL, member="text/AA/wiki_00..99, text/AB/wiki_00..99"),
                    labelled=False,
                ),
            ),
            test_split=None,
            homepage="https://dumps.wikimedia.org/enwiki/",
        ),
    ]
    return {s.name: s for s in specs}


REGISTRY: dict[str, DatasetSpec] = _registry()


def list_datasets() -> list[DatasetSpec]:
    """Every registered dataset, in registry order."""
    return list(REGISTRY.values())


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name``; ValueError (with a suggestion) if unknown."""
    try:
        return REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown dataset {name!r}{hint}; known: {', '.join(REGISTRY)}") from None


# --------------------------------------------------------------------------- paths


def data_dir(path: str | Path | None = None) -> Path:
    """``path`` if given, else ``$ULMFIT_DATA``, else ``$ULMFIT_CACHE/datasets``."""
    return _root(path)


def _root(path: str | Path | None) -> Path:
    # (Functions below take a ``data_dir`` argument, which hides data_dir().)
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("ULMFIT_DATA")
    if env:
        return Path(env).expanduser()
    return default_cache_dir() / "datasets"


def split_present(spec: DatasetSpec, split: str, root: str | Path | None = None) -> bool:
    """Whether every file of ``split`` is in the data directory."""
    base = _root(root)
    return all((base / f.path).is_file() for f in spec.split(split).files)


# --------------------------------------------------------------------------- checksums


def _check_file(path: Path, fspec: FileSpec) -> None:
    """Verify a data-directory file against the mirror's sha256."""
    stamp = _read_stamp(path)
    if stamp is not None and stamp.get("converted_from"):
        # Written here from a verified download: its compressed bytes need not equal
        # the mirror's (xz output varies with the encoder), its content was checked.
        return
    verify_file(path, fspec.sha256)


# --------------------------------------------------------------------------- converters
#
# Each converter reads the raw download of one split and writes the mirror's file
# (bytes, to ``out``); it returns the counts to compare with the spec.

Counts = dict[str, int]
Converter = Callable[[DatasetSpec, SplitSpec, Path, IO[bytes]], Counts]


class _HashingReader(io.RawIOBase):
    """A read-only stream that hashes what passes through it."""

    def __init__(self, raw: IO[bytes], h: Any) -> None:
        self._raw = raw
        self._h = h

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        data = self._raw.read(len(buf))
        n = len(data)
        buf[:n] = data
        self._h.update(data)
        return n


def _checked_member(raw: IO[bytes], checksum: str | None) -> tuple[IO[bytes], Callable[[], None]]:
    """``raw`` wrapped to hash what is read, and a function that checks the digest."""
    if checksum is None:
        return raw, lambda: None
    algo, expected = _parse_digest(checksum)
    h = hashlib.new(algo)
    stream = io.BufferedReader(_HashingReader(raw, h), _CHUNK)
    name = getattr(raw, "name", "archive member")

    def check() -> None:
        while stream.read(_CHUNK):  # the digest covers the whole member
            pass
        if h.hexdigest() != expected:
            raise _mismatch(
                f"archive member {name}",
                algo,
                expected,
                h.hexdigest(),
                "The download is not the published one; delete it and download again.",
            )

    return stream, check


@contextmanager
def _text_out(out: IO[bytes]) -> Iterator[IO[str]]:
    """UTF-8 text on top of ``out``, left open afterwards."""
    text = io.TextIOWrapper(out, encoding="utf-8", newline="")
    try:
        yield text
    finally:
        text.flush()
        text.detach()


def _tar_member(tar: tarfile.TarFile, archive: Path, name: str) -> IO[bytes]:
    try:
        f = tar.extractfile(name)
    except KeyError:
        raise CorpusError(f"{archive}: no member {name!r}") from None
    if f is None:
        raise CorpusError(f"{archive}: {name!r} is not a regular file")
    return f


def _convert_trec(spec: DatasetSpec, sp: SplitSpec, raw: Path, out: IO[bytes]) -> Counts:
    """CogComp ``LABEL:fine question`` lines -> CSV label,fine_label,text."""
    # Latin-1: the official train file has one non-UTF-8 byte (0xF0, line 66).
    text = raw.read_bytes().decode("latin-1")
    n = 0
    with _text_out(out) as dst:
        w = csv.writer(dst, lineterminator="\n")
        w.writerow(["label", "fine_label", "text"])
        for lineno, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            fine, sep, question = line.partition(" ")
            coarse = fine.split(":")[0]
            if not sep or ":" not in fine or coarse not in _TREC6:
                raise CorpusError(f"{raw}: line {lineno}: expected 'COARSE:fine question'")
            w.writerow([coarse, fine, question])
            n += 1
    return {"rows": n}


def _convert_zhang(spec: DatasetSpec, sp: SplitSpec, raw: Path, out: IO[bytes]) -> Counts:
    """``X_csv/{train,test}.csv`` (class index, fields...; no header) -> labelled CSV."""
    member = sp.source.member or f"{sp.name}.csv"
    n_fields = len(spec.text_fields)
    n = 0
    with tarfile.open(raw, "r:*") as tar:
        classes_name = posixpath.join(posixpath.dirname(member), "classes.txt")
        try:
            listed = _tar_member(tar, raw, classes_name).read().decode("utf-8").split("\n")
        except CorpusError:
            listed = None  # the Yelp archives have no classes.txt
        if listed is not None and [c.strip() for c in listed if c.strip()] != list(spec.classes):
            raise CorpusError(
                f"{raw}: {classes_name} lists {listed}, expected {list(spec.classes)}"
            )
        stream, check = _checked_member(_tar_member(tar, raw, member), sp.source.member_checksum)
        reader = csv.reader(io.TextIOWrapper(stream, encoding="utf-8", newline=""))
        with _text_out(out) as dst:
            w = csv.writer(dst, lineterminator="\n")
            w.writerow(["label", *spec.text_fields])
            for row in reader:
                if not row:
                    continue
                idx = row[0].strip()
                if (
                    len(row) != 1 + n_fields
                    or not idx.isdigit()
                    or not 1 <= int(idx) <= len(spec.classes)
                ):
                    raise CorpusError(
                        f"{raw}:{member}: line {reader.line_num}: expected a class index "
                        f"1..{len(spec.classes)} and {n_fields} text field(s), got {row[:3]!r}"
                    )
                w.writerow([spec.classes[int(idx) - 1], *row[1:]])
                n += 1
        check()
    return {"rows": n}


def _convert_wikitext(spec: DatasetSpec, sp: SplitSpec, raw: Path, out: IO[bytes]) -> Counts:
    """``wiki.SPLIT.tokens`` from the zip, unchanged."""
    member = sp.source.member or ""
    with zipfile.ZipFile(raw) as zf:
        try:
            src = zf.open(member)
        except KeyError:
            raise CorpusError(f"{raw}: no member {member!r} (has {zf.namelist()[:10]})") from None
        with src:
            stream, check = _checked_member(src, sp.source.member_checksum)
            lines = 0
            while chunk := stream.read(_CHUNK):
                out.write(chunk)
                lines += chunk.count(b"\n")
            check()
    return {"lines": lines}


_IMDB_FILE = re.compile(r"(?:^|/)(?:aclImdb/)?(train|test)/(neg|pos|unsup)/(\d+)_(\d+)\.txt$")


def _convert_imdb(spec: DatasetSpec, sp: SplitSpec, raw: Path, out: IO[bytes]) -> Counts:
    """``aclImdb/{train,test}/{neg,pos,unsup}/ID_RATING.txt`` -> CSV label,text,rating,id."""
    folder = sp.name if sp.name != "unsup" else "train"
    wanted = spec.classes if sp.labelled else ("unsup",)
    found: list[tuple[int, int, str, str, str]] = []  # (class order, id, label, rating, text)
    with tarfile.open(raw, "r:*") as tar:
        for info in tar:
            m = _IMDB_FILE.search(info.name)
            if not info.isfile() or m is None or m[1] != folder or m[2] not in wanted:
                continue
            f = tar.extractfile(info)
            data = f.read() if f is not None else b""
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise CorpusError(f"{raw}:{info.name}: not UTF-8 ({e})") from e
            found.append((wanted.index(m[2]), int(m[3]), m[2], m[4], text))
    found.sort(key=lambda r: r[:2])  # the mirror's order: neg then pos, by numeric id
    with _text_out(out) as dst:
        w = csv.writer(dst, lineterminator="\n")
        w.writerow(["label", "text", "rating", "id"])
        for _, num, label, rating, text in found:
            w.writerow([label, text, rating, f"{folder}/{label}/{num}_{rating}"])
    return {"rows": len(found)}


def _convert_newsgroups(spec: DatasetSpec, sp: SplitSpec, raw: Path, out: IO[bytes]) -> Counts:
    """``20news-bydate-SPLIT/GROUP/ID`` messages -> JSONL id,text,label,labels."""
    folder = sp.source.member or f"20news-bydate-{sp.name}"
    pattern = re.compile(rf"(?:^|/){re.escape(folder)}/([^/]+)/([^/]+)$")
    groups = set(spec.classes)
    found: list[tuple[str, int, str, str]] = []
    with tarfile.open(raw, "r:*") as tar:
        for info in tar:
            m = pattern.search(info.name)
            if not info.isfile() or m is None:
                continue
            if m[1] not in groups:
                raise CorpusError(f"{raw}:{info.name}: unknown newsgroup {m[1]!r}")
            f = tar.extractfile(info)
            # Latin-1 keeps every byte, as scikit-learn reads these files.
            text = (f.read() if f is not None else b"").decode("latin-1")
            num = int(m[2]) if m[2].isdigit() else -1
            found.append((m[1], num, m[2], text))
    found.sort(key=lambda r: (r[0], r[1], r[2]))
    with _text_out(out) as dst:
        for group, _, name, text in found:
            rec = {
                "id": f"{group}/{name}",
                "text": text,
                "label": group,
                "labels": [group.split(".")[0], group],
            }
            dst.write(json.dumps(rec) + "\n")
    return {"rows": len(found)}


def _convert_wos(spec: DatasetSpec, sp: SplitSpec, raw: Path, out: IO[bytes]) -> Counts:
    """``WOS46985/{X,YL1,Y}.txt`` in WebOfScience.zip (one abstract / id a line) -> JSONL
    id,text,labels with labels ``[domain-YL1, area-Y]``."""
    import zipfile

    folder = sp.source.member or "WOS46985"
    columns: dict[str, list[str]] = {}
    with zipfile.ZipFile(raw) as z:
        names = {posixpath.basename(posixpath.dirname(n)) + "/" + posixpath.basename(n): n
                 for n in z.namelist()}  # fmt: skip
        for part in ("X", "YL1", "Y"):
            name = names.get(f"{folder}/{part}.txt")
            if name is None:
                raise CorpusError(f"{raw}: no {folder}/{part}.txt in the archive")
            data = z.read(name)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:  # Latin-1 keeps every byte
                log.info("%s:%s is not UTF-8; read as Latin-1", raw, name)
                text = data.decode("latin-1")
            columns[part] = text.splitlines()
    n = {part: len(lines) for part, lines in columns.items()}
    if len(set(n.values())) != 1:
        raise CorpusError(f"{raw}: {folder} files have different line counts {n}")
    with _text_out(out) as dst:
        for i, (text, top, area) in enumerate(
            zip(columns["X"], columns["YL1"], columns["Y"], strict=True)
        ):
            top, area = top.strip(), area.strip()
            if not (top.isdigit() and area.isdigit()):
                raise CorpusError(f"{raw}: {folder} line {i + 1}: labels {top!r}, {area!r}")
            rec = {"id": i + 1, "text": text, "labels": [f"domain-{top}", f"area-{area}"]}
            dst.write(json.dumps(rec) + "\n")
    return {"rows": len(columns["X"])}


CONVERTERS: dict[str, Converter] = {
    "trec": _convert_trec,
    "zhang2015": _convert_zhang,
    "wikitext": _convert_wikitext,
    "imdb": _convert_imdb,
    "newsgroups": _convert_newsgroups,
    "wos": _convert_wos,
}


def _convert_split(spec: DatasetSpec, sp: SplitSpec, raw: Path, root: Path) -> Path:
    """Run the converter for ``sp``; the output appears only if its counts are right."""
    if len(sp.files) != 1 or spec.converter is None:
        raise AssertionError(f"{spec.name}/{sp.name}: converters write exactly one file")
    dest = root / sp.files[0].path
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    log.info("%s/%s: converting %s -> %s", spec.name, sp.name, raw.name, dest)
    try:
        # xz preset 1: several times faster than the default 6 (which would take minutes
        # on the 0.5 GB Yelp and WikiText-103 files) for a slightly larger file.
        xz = dest.suffix == ".xz"
        with lzma.open(tmp, "wb", preset=1) if xz else open(tmp, "wb") as out:
            counts = CONVERTERS[spec.converter](spec, sp, raw, out)
        for key, want in (("rows", sp.rows), ("lines", sp.lines)):
            if want is not None and key in counts and counts[key] != want:
                raise CorpusError(
                    f"{raw}: the {sp.name} split has {counts[key]} {key}, the official count "
                    f"is {want}; the download is not the published {spec.name}"
                )
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _write_stamp(dest, file_digest(dest), converted_from=sp.source.url)
    return dest


# --------------------------------------------------------------------------- get / load


def _missing_message(spec: DatasetSpec, splits: Sequence[SplitSpec], root: Path) -> str:
    lines = [f"dataset {spec.name!r}: files missing from {root}:"]
    for sp in splits:
        missing = [f.path for f in sp.files if not (root / f.path).is_file()]
        member = f" (member {sp.source.member})" if sp.source.member else ""
        lines.append(f"  {sp.name}: {', '.join(missing)} <- {sp.source.url}{member}")
    return "\n".join(lines)


def get(
    name: str,
    split: str | None = None,
    data_dir: str | Path | None = None,
    *,
    progress: bool = True,
    verify: bool = True,
) -> dict[str, list[Path]]:
    """Make sure the files of ``name`` (one split, or all) are present and verified.

    Present files are checked against the mirror's sha256 (once; see
    :func:`verify_file`). Missing splits are downloaded from the canonical source
    and converted where a parser for that download exists; otherwise
    :class:`MissingDataError` names the missing files and their source. Returns
    ``{split: [paths]}``.
    """
    spec = dataset_spec(name)
    root = _root(data_dir)
    splits = [spec.split(split)] if split is not None else list(spec.splits)
    missing = [sp for sp in splits if not split_present(spec, sp.name, root)]
    if verify:
        for sp in splits:
            if sp not in missing:
                for f in sp.files:
                    _check_file(root / f.path, f)
        for f in spec.extras:
            if (root / f.path).is_file():
                _check_file(root / f.path, f)
    if missing:
        _obtain(spec, missing, root, progress)
    return {sp.name: [root / f.path for f in sp.files] for sp in splits}


def _obtain(spec: DatasetSpec, missing: Sequence[SplitSpec], root: Path, progress: bool) -> None:
    if spec.converter is None:
        raise MissingDataError(
            _missing_message(spec, missing, root)
            + f"\nReading the raw download of {spec.name!r} is not implemented here: get the "
            "files above from a copy of the mirror (or convert the source yourself to the "
            "mirror's layout) and put them under the data directory."
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
        writable = os.access(root, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        raise MissingDataError(
            _missing_message(spec, missing, root)
            + f"\n{root} is not writable; pass --data-dir (or set ULMFIT_DATA) to a writable "
            "folder to download into."
        )
    raws: dict[str, Path] = {}
    for sp in missing:
        src = sp.source
        if src.url not in raws:
            dest = root / "downloads" / (src.filename or _url_basename(src.url))
            try:
                raws[src.url] = download(src.url, dest, src.checksum, progress)
            except OSError as e:
                raise MissingDataError(
                    f"{_missing_message(spec, missing, root)}\ndownload failed: {e}"
                ) from e
        _convert_split(spec, sp, raws[src.url], root)


def _read_split(spec: DatasetSpec, sp: SplitSpec, paths: list[Path]) -> DatasetSplit:
    texts: list[str] = []
    labels: list[Any] | None = [] if sp.labelled and spec.label_field else None
    rows: list[int] = []
    for path in paths:
        if spec.task == "lm":
            docs = list(read_texts(path))
            texts.extend(docs)
            rows.extend(range(1, len(docs) + 1))
            continue
        data = read_labelled(
            path,
            text_column=list(spec.text_fields),
            label_column=spec.label_field if labels is not None else None,
            task=spec.reader_task,
            known_labels=spec.known_labels if labels is not None and spec.classes else None,
        )
        texts.extend(data.texts)
        rows.extend(data.rows)
        if labels is not None and data.labels is not None:
            labels.extend(data.labels)
    source = ", ".join(str(p) for p in paths)
    return DatasetSplit(
        texts, labels, source, rows, dataset=spec.name, split=sp.name, task=spec.task
    )


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | Path | None = None,
    verify: bool = True,
    *,
    download: bool = False,
) -> DatasetSplit:
    """Read one split of a registered dataset.

    With ``verify`` the files are checked against the mirror's sha256 (once per
    file) and the number of documents against the official count. A missing file
    raises :class:`MissingDataError` unless ``download`` lets :func:`get` fetch it.
    """
    spec = dataset_spec(name)
    sp = spec.split(split)
    root = _root(data_dir)
    if not split_present(spec, split, root):
        if not download:
            raise MissingDataError(
                _missing_message(spec, [sp], root)
                + f"\nRun `ulmfit data get {name} --split {split}` (or pass download=True)."
            )
        get(name, split, root, verify=verify)
    paths = [root / f.path for f in sp.files]
    if verify:
        for path, f in zip(paths, sp.files, strict=True):
            _check_file(path, f)
    ds = _read_split(spec, sp, paths)
    if verify and sp.rows is not None and len(ds) != sp.rows:
        raise CorpusError(
            f"{ds.source}: {len(ds)} documents, but {name}/{split} officially has {sp.rows}"
        )
    return ds


def load_splits(
    name: str,
    valid_frac: float = 0.1,
    seed: int = 0,
    data_dir: str | Path | None = None,
    verify: bool = True,
) -> dict[str, DatasetSplit]:
    """``train`` and ``valid`` (carved from the official train split) and ``test``.

    The validation part is drawn with a fixed ``seed`` (stratified by class for
    multiclass data, by leaf for hierarchical data), so it is the same on every run.
    ``test`` is the dataset's labelled held-out split (absent for pure LM corpora).
    """
    spec = dataset_spec(name)
    full = load_dataset(name, "train", data_dir, verify)
    if spec.task in ("multiclass", "hierarchical") and full.labels is not None:
        strata: list[Any] = [lab[-1] if isinstance(lab, list) else lab for lab in full.labels]
        task: Literal["multiclass", "multilabel"] = "multiclass"
    else:
        strata, task = [0] * len(full), "multilabel"  # multilabel: a plain seeded split
    train_idx, valid_idx = stratified_split(strata, valid_frac, seed, task)
    out = {"train": full.subset(train_idx, "train"), "valid": full.subset(valid_idx, "valid")}
    if spec.test_split is not None:
        out["test"] = load_dataset(name, spec.test_split, data_dir, verify)
    return out


def describe(name: str, data_dir: str | Path | None = None) -> str:
    """A readable summary of a dataset: task, fields, splits, files, sources, presence."""
    spec = dataset_spec(name)
    root = _root(data_dir)
    lines = [f"{spec.name}: {spec.description}", f"  task: {spec.task}"]
    if spec.text_fields:
        lines.append(f"  text: {' + '.join(spec.text_fields)}; label: {spec.label_field}")
    if spec.classes:
        shown = ", ".join(spec.classes[:12]) + (" ..." if len(spec.classes) > 12 else "")
        lines.append(f"  classes ({len(spec.classes)}): {shown}")
    for sp in spec.splits:
        count = [f"{sp.rows} docs" if sp.rows is not None else ""]
        count.append(f"{sp.lines} lines" if sp.lines is not None else "")
        here = "present" if split_present(spec, sp.name, root) else "missing"
        unlabelled = ", unlabelled" if not sp.labelled or spec.task == "lm" else ""
        lines.append(f"  {sp.name}: {', '.join(c for c in count if c)}{unlabelled} ({here})")
        for f in sp.files:
            lines.append(f"    {f.path}  sha256 {f.sha256 or '(not known)'}")
        src = sp.source
        lines.append(f"    source: {src.url}" + (f" [{src.member}]" if src.member else ""))
    lines.append(f"  data dir: {root}")
    lines.append(
        "  raw-download parser: "
        + (spec.converter or "not implemented (copy the mirror files in by hand)")
    )
    if spec.homepage:
        lines.append(f"  homepage: {spec.homepage}")
    return "\n".join(lines)


def count_lines(paths: Sequence[str | Path]) -> int:
    """Newlines in the (decompressed) files together: the official WikiText line counts."""
    n = 0
    for p in paths:
        with _open_binary(Path(p)) as f:
            while chunk := f.read(_CHUNK):
                n += chunk.count(b"\n")
    return n


def _open_binary(path: Path) -> io.BufferedIOBase:
    suffix = path.suffix.lower()
    if suffix == ".xz":
        return lzma.open(path, "rb")
    if suffix == ".gz":
        return gzip.open(path, "rb")
    if suffix == ".bz2":
        return bz2.open(path, "rb")
    return open(path, "rb")


__all__ = [
    "CONVERTERS",
    "REGISTRY",
    "ChecksumError",
    "DatasetSpec",
    "DatasetSplit",
    "FileSpec",
    "MissingDataError",
    "Source",
    "SplitSpec",
    "count_lines",
    "data_dir",
    "dataset_spec",
    "describe",
    "download",
    "file_digest",
    "get",
    "list_datasets",
    "load_dataset",
    "load_splits",
    "split_present",
    "verify_file",
]
