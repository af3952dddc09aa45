"""Dataset registry: real row counts and label sets, checksums, download, conversion, CLI."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import io
import json
import lzma
import os
import tarfile
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ulmfit import datasets as D
from ulmfit import downloads
from ulmfit.cli.data_cmd import add_data_parser, run_data
from ulmfit.text.readers import CorpusError

Loader = Callable[[str, str], D.DatasetSplit]


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Verification stamps go to a temporary cache, never ~/.cache."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ULMFIT_CACHE", str(path))
        mp.delenv("ULMFIT_DATA", raising=False)
        yield path


@pytest.fixture(scope="module")
def mirror(shared_data: Path) -> Iterator[Path]:
    """The shared copies as the default data directory."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ULMFIT_DATA", str(shared_data))
        yield shared_data


@pytest.fixture(scope="module")
def load(mirror: Path) -> Loader:
    """load_dataset, read once per module (IMDb alone is 100k reviews)."""
    done: dict[tuple[str, str], D.DatasetSplit] = {}

    def get(name: str, split: str) -> D.DatasetSplit:
        if (name, split) not in done:
            done[name, split] = D.load_dataset(name, split)
        return done[name, split]

    return get


def xz_text(path: Path) -> bytes:
    return lzma.decompress(path.read_bytes())


def file_url(path: Path) -> str:
    return path.resolve().as_uri()


def patch_spec(mp: pytest.MonkeyPatch, name: str, **splits: dict[str, Any]) -> D.DatasetSpec:
    """Replace fields of some splits (``source`` given as a dict of Source fields)."""
    spec = D.REGISTRY[name]
    new = []
    for sp in spec.splits:
        changes = dict(splits.get(sp.name, {}))
        if "source" in changes:
            changes["source"] = dataclasses.replace(sp.source, **changes["source"])
        new.append(dataclasses.replace(sp, **changes))
    patched = dataclasses.replace(spec, splits=tuple(new))
    mp.setitem(D.REGISTRY, name, patched)
    return patched


# -- registry ----------------------------------------------------------------------------

NAMES = [
    "imdb", "trec6", "trec50", "ag_news", "dbpedia14", "yelp_polarity", "yelp_full",
    "wikitext2", "wikitext103", "reuters21578", "newsgroups20", "wos46985", "semeval2018_ec",
    "wikipedia_en_2015_subset",
]  # fmt: skip


def test_registry_lists_every_dataset_with_sources() -> None:
    specs = D.list_datasets()
    assert [s.name for s in specs] == NAMES
    for spec in specs:
        assert spec.task in ("multiclass", "multilabel", "hierarchical", "lm")
        assert spec.splits and spec.description
        for sp in spec.splits:
            assert sp.source.url.startswith(("http://", "https://")), (spec.name, sp.name)
            assert sp.files and all(not f.path.startswith("/") for f in sp.files)
            if spec.converter is not None:
                assert len(sp.files) == 1
        assert spec.converter is None or spec.converter in D.CONVERTERS
    assert D.dataset_spec("trec6").split("test").source.url.endswith("/TREC_10.label")
    assert D.dataset_spec("imdb").split("unsup").labelled is False
    assert D.dataset_spec("wikitext103").split("train").source.url.endswith("wikitext-103-v1.zip")
    assert D.dataset_spec("newsgroups20").task == "hierarchical"
    with pytest.raises(ValueError, match=r"did you mean 'imdb'"):
        D.dataset_spec("imbd")
    with pytest.raises(ValueError, match="its splits are train, dev, test"):
        D.dataset_spec("semeval2018_ec").split("valid")


def test_data_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ULMFIT_DATA", raising=False)
    monkeypatch.setenv("ULMFIT_CACHE", str(tmp_path / "c"))
    assert D.data_dir() == tmp_path / "c" / "datasets"
    monkeypatch.setenv("ULMFIT_DATA", str(tmp_path / "d"))
    assert D.data_dir() == tmp_path / "d"
    assert D.data_dir(tmp_path / "e") == tmp_path / "e"


# -- the real datasets: official counts and label sets -------------------------------------


def test_trec_counts_and_labels(load: Loader) -> None:
    train, test = load("trec6", "train"), load("trec6", "test")
    assert (len(train), len(test)) == (5452, 500)
    assert Counter(train.labels) == {
        "ENTY": 1250, "HUM": 1223, "DESC": 1162, "NUM": 896, "LOC": 835, "ABBR": 86,
    }  # fmt: skip
    assert Counter(test.labels) == {
        "DESC": 138, "NUM": 113, "ENTY": 94, "LOC": 81, "HUM": 65, "ABBR": 9,
    }  # fmt: skip
    assert train.texts[0] == "How did serfdom develop in and then leave Russia ?"
    assert "sister\u00f0city" in train.texts[65]  # raw line 66: its one Latin-1 byte
    fine_train, fine_test = load("trec50", "train"), load("trec50", "test")
    assert len(set(fine_train.labels or [])) == 50 and len(set(fine_test.labels or [])) == 42
    assert set(fine_train.labels or []) == set(D.dataset_spec("trec50").classes)
    assert fine_train.texts == train.texts


def test_imdb_counts(load: Loader) -> None:
    train, test, unsup = load("imdb", "train"), load("imdb", "test"), load("imdb", "unsup")
    assert Counter(train.labels) == Counter(test.labels) == {"neg": 12500, "pos": 12500}
    assert len(unsup) == 50000 and unsup.labels is None  # the LM fine-tuning text
    assert "<br />" in train.texts[0] + train.texts[1] + train.texts[2]  # text untouched


def test_reuters_modapte(load: Loader, mirror: Path) -> None:
    train, test = load("reuters21578", "train"), load("reuters21578", "test")
    assert (len(train), len(test)) == (7770, 3019)
    assert train.labels is not None and test.labels is not None
    assert sum(map(len, train.labels)) == 9586 and sum(map(len, test.labels)) == 3745
    listed = (mirror / "reuters21578" / "labels.txt").read_text().split()
    assert {lab for labs in train.labels for lab in labs} == set(listed)
    assert {lab for labs in test.labels for lab in labs} == set(listed)
    assert list(D.dataset_spec("reuters21578").classes) == listed


def test_ag_news_test_only(load: Loader) -> None:
    test = load("ag_news", "test")
    assert len(test) == 7600
    assert Counter(test.labels) == {c: 1900 for c in ("World", "Sports", "Business", "Sci/Tech")}
    # title + description, joined as read_labelled joins several text columns
    assert test.texts[0].startswith("xxfld 1 Fears for T N pension after talks xxfld 2 Unions")
    with pytest.raises(D.MissingDataError) as err:
        D.load_dataset("ag_news", "train")
    msg = str(err.value)
    assert (
        "ag_news/train.csv.xz" in msg
        and "https://s3.amazonaws.com/fast-ai-nlp/ag_news_csv.tgz" in msg
    )


NG_TRAIN_TEST = {
    "alt.atheism": (480, 319), "comp.graphics": (584, 389), "comp.os.ms-windows.misc": (591, 394),
    "comp.sys.ibm.pc.hardware": (590, 392), "comp.sys.mac.hardware": (578, 385),
    "comp.windows.x": (593, 395), "misc.forsale": (585, 390), "rec.autos": (594, 396),
    "rec.motorcycles": (598, 398), "rec.sport.baseball": (597, 397),
    "rec.sport.hockey": (600, 399), "sci.crypt": (595, 396), "sci.electronics": (591, 393),
    "sci.med": (594, 396), "sci.space": (593, 394), "soc.religion.christian": (599, 398),
    "talk.politics.guns": (546, 364), "talk.politics.mideast": (564, 376),
    "talk.politics.misc": (465, 310), "talk.religion.misc": (377, 251),
}  # fmt: skip
NG_TOPS = {
    "alt": (480, 319), "comp": (2936, 1955), "misc": (585, 390), "rec": (2389, 1590),
    "sci": (2373, 1579), "soc": (599, 398), "talk": (1952, 1301),
}  # fmt: skip


def test_newsgroups_hierarchy(load: Loader) -> None:
    train, test = load("newsgroups20", "train"), load("newsgroups20", "test")
    assert (len(train), len(test)) == (11314, 7532)
    for i, data in enumerate((train, test)):
        assert data.labels is not None
        assert all(len(p) == 2 and p[1].split(".")[0] == p[0] for p in data.labels)
        assert Counter(p[1] for p in data.labels) == {g: n[i] for g, n in NG_TRAIN_TEST.items()}
        assert Counter(p[0] for p in data.labels) == {t: n[i] for t, n in NG_TOPS.items()}
    assert set(D.dataset_spec("newsgroups20").classes) == set(NG_TRAIN_TEST)
    assert train.texts[0].startswith("From: ")


def test_semeval_multilabel(load: Loader) -> None:
    train, dev, test = (load("semeval2018_ec", s) for s in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (6838, 886, 3259)
    assert test.labels is None and train.labels is not None and dev.labels is not None
    assert Counter(len(labs) for labs in train.labels) == {
        0: 204, 1: 982, 2: 2773, 3: 2114, 4: 658, 5: 96, 6: 11,
    }  # fmt: skip
    assert Counter(lab for labs in train.labels for lab in labs) == {
        "anger": 2544, "anticipation": 978, "disgust": 2602, "fear": 1242, "joy": 2477,
        "love": 700, "optimism": 1984, "pessimism": 795, "sadness": 2008, "surprise": 361,
        "trust": 357,
    }  # fmt: skip
    assert Counter(lab for labs in dev.labels for lab in labs) == {
        "anger": 315, "anticipation": 124, "disgust": 319, "fear": 121, "joy": 400, "love": 132,
        "optimism": 307, "pessimism": 100, "sadness": 265, "surprise": 35, "trust": 43,
    }  # fmt: skip
    assert sum(1 for labs in dev.labels if not labs) == 14
    assert len(D.dataset_spec("semeval2018_ec").classes) == 11


@pytest.mark.parametrize("name", ["wikitext2", "wikitext103"])
@pytest.mark.parametrize(("split", "articles", "lines"), [("valid", 60, 3760), ("test", 62, 4358)])
def test_wikitext_valid_test(
    load: Loader, mirror: Path, name: str, split: str, articles: int, lines: int
) -> None:
    data = load(name, split)
    assert len(data) == articles and data.labels is None
    assert data.texts[0].startswith("= ")
    sp = D.dataset_spec(name).split(split)
    path = mirror / sp.files[0].path
    assert D.count_lines([path]) == lines == sp.lines
    # The mirror's text is the official file: GluonNLP's published SHA-1 of the member.
    assert f"sha1:{hashlib.sha1(xz_text(path)).hexdigest()}" == sp.source.member_checksum
    with pytest.raises(D.MissingDataError, match=r"wiki\.train\.tokens"):
        D.load_dataset(name, "train")


@pytest.mark.slow
def test_wikipedia_subset(load: Loader, mirror: Path) -> None:
    sp = D.dataset_spec("wikipedia_en_2015_subset").split("train")
    per_file = []
    for f in sp.files:
        with lzma.open(mirror / f.path) as fh:
            per_file.append(sum(1 for line in fh if line.startswith(b"<doc ")))
    assert per_file == [6514, 6466]
    data = load("wikipedia_en_2015_subset", "train")
    assert len(data) == sp.rows == 12980 and data.texts[0].startswith("Anarchism")


# -- checksums -----------------------------------------------------------------------------


def test_every_mirror_file_verifies(mirror: Path) -> None:
    checked = 0
    for spec in D.list_datasets():
        for f in [f for sp in spec.splits for f in sp.files] + list(spec.extras):
            if (mirror / f.path).is_file():
                assert f.sha256 is not None, f.path  # every mirror file has a published sha256
                assert D.verify_file(mirror / f.path, f.sha256) == f.sha256
                checked += 1
    assert checked >= 30
    # The raw copies in the mirror are the official files (published digests).
    trec = D.dataset_spec("trec6")
    for split, raw in (("train", "train_5500.label.xz"), ("test", "TREC_10.label.xz")):
        digest = hashlib.sha256(xz_text(mirror / "trec" / raw)).hexdigest()
        assert f"sha256:{digest}" == trec.split(split).source.checksum
    ag_raw = hashlib.md5(xz_text(mirror / "ag_news" / "test.raw.csv.xz")).hexdigest()
    assert f"md5:{ag_raw}" == D.dataset_spec("ag_news").split("test").source.member_checksum


def test_corrupted_copy_is_refused(mirror: Path, tmp_path: Path) -> None:
    f = D.dataset_spec("trec6").split("test").files[0]
    data = bytearray((mirror / f.path).read_bytes())
    data[len(data) // 2] ^= 0x01
    bad = tmp_path / "test.csv.xz"
    bad.write_bytes(bytes(data))
    with pytest.raises(D.ChecksumError) as err:
        D.verify_file(bad, f.sha256)
    msg = str(err.value)
    assert str(bad) in msg and f.sha256 in msg and hashlib.sha256(data).hexdigest() in msg
    assert "delete it and download again" in msg
    # get() refuses it too, as a file of a data directory
    (tmp_path / "data" / "trec").mkdir(parents=True)
    (tmp_path / "data" / f.path).write_bytes(bytes(data))
    with pytest.raises(D.ChecksumError):
        D.get("trec6", "test", tmp_path / "data")


def test_verification_is_remembered(
    mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = D.dataset_spec("trec6").split("train").files[0]
    copy = tmp_path / "train.csv.xz"
    copy.write_bytes((mirror / f.path).read_bytes())
    calls: list[Path] = []
    real = downloads.file_digest

    def counting(path: str | Path, algo: str = "sha256") -> str:
        calls.append(Path(path))
        return real(path, algo)

    monkeypatch.setattr(downloads, "file_digest", counting)
    D.verify_file(copy, f.sha256)
    D.verify_file(copy, f.sha256)
    assert calls == [copy]  # hashed once; the stamp answered the second time
    st = copy.stat()
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # "modified": hash again
    D.verify_file(copy, f.sha256)
    assert calls == [copy, copy]
    copy.write_bytes(copy.read_bytes()[:-1])  # changed content with a stale stamp: refused
    with pytest.raises(D.ChecksumError):
        D.verify_file(copy, f.sha256)


# -- download ------------------------------------------------------------------------------


def test_download_with_wrong_checksum_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 << 20))
    out = tmp_path / "out"
    with pytest.raises(D.ChecksumError, match="Download refused"):
        D.download(file_url(src), out / "file.bin", "0" * 64, progress=False)
    assert not (out / "file.bin").exists()
    assert list(out.iterdir()) == []  # no partial file either


def test_download_lands_atomically(tmp_path: Path) -> None:
    payload = os.urandom((2 << 20) + 123)
    src = tmp_path / "src.bin"
    src.write_bytes(payload)
    dest = tmp_path / "out" / "file.bin"
    got = D.download(file_url(src), dest, hashlib.sha256(payload).hexdigest(), progress=False)
    assert got == dest and dest.read_bytes() == payload
    assert list(dest.parent.iterdir()) == [dest]
    # A published MD5 works as well, and a verified file is not fetched again.
    src.unlink()
    md5 = f"md5:{hashlib.md5(payload).hexdigest()}"
    assert D.download(file_url(src), dest, md5, progress=False) == dest
    with pytest.raises(OSError, match="cannot download"):
        D.download(file_url(src), tmp_path / "out" / "other.bin", None, progress=False)
    assert list(dest.parent.iterdir()) == [dest]


# -- get: download + convert from the canonical layout ------------------------------------


def test_get_converts_trec_raw_files(
    mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The official CogComp files (checked with their real sha256) -> the mirror's CSVs."""
    raw = tmp_path / "cogcomp"
    raw.mkdir()
    for name in ("train_5500.label", "TREC_10.label"):
        (raw / name).write_bytes(xz_text(mirror / "trec" / f"{name}.xz"))
    patch_spec(
        monkeypatch,
        "trec6",
        train={"source": {"url": file_url(raw / "train_5500.label")}},
        test={"source": {"url": file_url(raw / "TREC_10.label")}},
    )
    data = tmp_path / "data"
    paths = D.get("trec6", data_dir=data, progress=False)
    assert paths == {"train": [data / "trec/train.csv.xz"], "test": [data / "trec/test.csv.xz"]}
    for split in ("train", "test"):
        assert xz_text(data / f"trec/{split}.csv.xz") == xz_text(mirror / f"trec/{split}.csv.xz")
    assert (data / "downloads" / "train_5500.label").is_file()
    converted = D.load_dataset("trec6", "test", data)  # verified via its conversion stamp
    assert converted.texts == D.load_dataset("trec6", "test", mirror).texts
    assert D.get("trec6", data_dir=data, progress=False) == paths  # present now: no work


def _ag_archive(mirror: Path, path: Path, edit: bool = False) -> Path:
    raw = xz_text(mirror / "ag_news" / "test.raw.csv.xz")
    if edit:
        raw = raw.replace(b"Fears for T N", b"Fears for T M", 1)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (
            ("ag_news_csv/classes.txt", (mirror / "ag_news" / "classes.txt").read_bytes()),
            ("ag_news_csv/test.csv", raw),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_get_converts_zhang_csv_archive(
    mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fast.ai's ag_news_csv.tgz layout; the member is checked against torchtext's MD5."""
    archive = _ag_archive(mirror, tmp_path / "ag_news_csv.tgz")
    patch_spec(monkeypatch, "ag_news", test={"source": {"url": file_url(archive)}})
    data = tmp_path / "data"
    D.get("ag_news", "test", data, progress=False)
    assert xz_text(data / "ag_news/test.csv.xz") == xz_text(mirror / "ag_news/test.csv.xz")
    # An archive whose member differs from the published one converts to nothing.
    (tmp_path / "bad").mkdir()
    bad = _ag_archive(mirror, tmp_path / "bad" / "ag_news_csv.tgz", edit=True)
    patch_spec(monkeypatch, "ag_news", test={"source": {"url": file_url(bad)}})
    with pytest.raises(D.ChecksumError, match="md5 mismatch"):
        D.get("ag_news", "test", tmp_path / "data2", progress=False)
    assert not (tmp_path / "data2" / "ag_news" / "test.csv.xz").exists()
    assert [p.name for p in (tmp_path / "data2" / "ag_news").iterdir()] == []


def test_get_converts_wikitext_zip(
    mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    member = "wikitext-2/wiki.valid.tokens"
    archive = tmp_path / "wikitext-2-v1.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(member, xz_text(mirror / "wikitext/wikitext-2/wiki.valid.tokens.xz"))
    # This zip is not the published one (so no zip checksum); the member's SHA-1 is real.
    patch_spec(
        monkeypatch, "wikitext2", valid={"source": {"url": file_url(archive), "checksum": None}}
    )
    data = tmp_path / "data"
    D.get("wikitext2", "valid", data, progress=False)
    out = data / "wikitext/wikitext-2/wiki.valid.tokens.xz"
    assert xz_text(out) == xz_text(mirror / "wikitext/wikitext-2/wiki.valid.tokens.xz")
    assert len(D.load_dataset("wikitext2", "valid", data)) == 60


def _imdb_archive(rows: list[list[str]], path: Path) -> Path:
    """aclImdb's layout: aclImdb/{train,test}/{neg,pos,unsup}/ID_RATING.txt."""
    with tarfile.open(path, "w:gz") as tar:
        for _label, text, _rating, rid in reversed(rows):  # archive order is not file order
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"aclImdb/{rid}.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("aclImdb/README")
        tar.addfile(info, io.BytesIO(b""))
    return path


def test_get_converts_imdb_archive(
    mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with lzma.open(mirror / "imdb/test.csv.xz", "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))[1:]
    subset = rows[:20] + rows[12500:12520]  # 20 neg, 20 pos, in the mirror's order
    archive = _imdb_archive(subset, tmp_path / "aclImdb_v1.tar.gz")
    source = {"url": file_url(archive), "checksum": None}
    # The official count refuses a partial archive ...
    patch_spec(monkeypatch, "imdb", test={"source": source})
    with pytest.raises(CorpusError, match="40 rows, the official count is 25000"):
        D.get("imdb", "test", tmp_path / "partial", progress=False)
    assert not (tmp_path / "partial" / "imdb" / "test.csv.xz").exists()
    # ... and with the count set to the subset's, the conversion equals the mirror's rows.
    patch_spec(monkeypatch, "imdb", test={"source": source, "rows": 40})
    D.get("imdb", "test", tmp_path / "data", progress=False)
    with lzma.open(tmp_path / "data/imdb/test.csv.xz", "rt", encoding="utf-8", newline="") as f:
        assert list(csv.reader(f)) == [["label", "text", "rating", "id"], *subset]


def test_get_converts_newsgroups_archive(
    mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with lzma.open(mirror / "20newsgroups/test.jsonl.xz", "rt", encoding="utf-8") as f:
        recs = [json.loads(line) for line in f]
    subset = [r for g in NG_TRAIN_TEST for r in [x for x in recs if x["label"] == g][:2]]
    archive = tmp_path / "20news-bydate.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for r in subset:
            data = r["text"].encode("latin-1")  # the raw bytes of the message file
            info = tarfile.TarInfo(f"20news-bydate-test/{r['id']}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    patch_spec(monkeypatch, "newsgroups20", test={"source": {"url": file_url(archive)}, "rows": 40})
    D.get("newsgroups20", "test", tmp_path / "data", progress=False)
    with lzma.open(tmp_path / "data/20newsgroups/test.jsonl.xz", "rt", encoding="utf-8") as f:
        assert [json.loads(line) for line in f] == subset


def test_get_converts_the_web_of_science_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WebOfScience.zip's layout (WOS46985/X.txt, YL1.txt, Y.txt; other folders beside it)
    -> [domain, area] paths; the published archive's size and sha256 are registered."""
    spec = D.dataset_spec("wos46985")
    src = spec.split("train").source
    assert spec.task == "hierarchical" and src.checksum == (
        "sha256:b787d484bff88b0dcdb3fa291d06ec9d2f025dc2a67ce1045d0c688cd96ccf8a"
    )
    assert src.url.startswith("https://data.mendeley.com/") and src.filename == "WebOfScience.zip"
    archive = tmp_path / "WebOfScience.zip"
    texts = ["Deep learning for text. ", "Bridges and concrete", "Gene éxpression"]
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("WebOfScience/WOS46985/X.txt", "\n".join(texts) + "\n")
        zf.writestr("WebOfScience/WOS46985/YL1.txt", "0\n4\n6\n")
        zf.writestr("WebOfScience/WOS46985/Y.txt", "3\n90\n130\n")
        zf.writestr("WebOfScience/WOS5736/X.txt", "not this one\n")
    source = {"url": file_url(archive), "checksum": None}  # not the published bytes
    patch_spec(monkeypatch, "wos46985", train={"source": source, "rows": 3})
    D.get("wos46985", "train", tmp_path / "data", progress=False)
    data = D.load_dataset("wos46985", "train", tmp_path / "data")
    assert data.texts == texts
    assert data.labels == [
        ["domain-0", "area-3"],
        ["domain-4", "area-90"],
        ["domain-6", "area-130"],
    ]
    # A label file shorter than the texts is refused, and nothing is written.
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("WebOfScience/WOS46985/X.txt", "\n".join(texts) + "\n")
        zf.writestr("WebOfScience/WOS46985/YL1.txt", "0\n4\n")
        zf.writestr("WebOfScience/WOS46985/Y.txt", "3\n90\n130\n")
    with pytest.raises(CorpusError, match="different line counts"):
        D.get("wos46985", "train", tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad" / "wos46985" / "all.jsonl.xz").exists()


def test_get_explains_what_cannot_be_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(D.MissingDataError) as err:
        D.get("reuters21578", data_dir=tmp_path)
    msg = str(err.value)
    assert "reuters21578/train.jsonl.xz" in msg and "reuters21578/test.jsonl.xz" in msg
    assert "https://kdd.ics.uci.edu/databases/reuters21578/reuters21578.tar.gz" in msg
    assert "not implemented" in msg
    with pytest.raises(D.MissingDataError, match=r"codalab\.org/competitions/17751"):
        D.get("semeval2018_ec", "train", tmp_path)
    # A convertible dataset whose download fails names the URL (offline here).
    gone = (tmp_path / "nowhere" / "dbpedia_csv.tgz").as_uri()
    patch_spec(monkeypatch, "dbpedia14", test={"source": {"url": gone}})
    with pytest.raises(D.MissingDataError, match="download failed: cannot download file:"):
        D.get("dbpedia14", "test", tmp_path / "data", progress=False)


# -- splits --------------------------------------------------------------------------------


def test_validation_split_is_stable_and_disjoint(mirror: Path) -> None:
    a = D.load_splits("trec6", valid_frac=0.1, seed=0)
    b = D.load_splits("trec6", valid_frac=0.1, seed=0)
    c = D.load_splits("trec6", valid_frac=0.1, seed=1)
    assert a["valid"].rows == b["valid"].rows and a["train"].rows == b["train"].rows
    assert a["valid"].rows != c["valid"].rows
    train, valid = set(a["train"].rows), set(a["valid"].rows)
    assert not train & valid and len(train | valid) == 5452
    assert len(a["valid"]) == 546 and len(a["test"]) == 500
    assert a["valid"].split == "valid" and a["valid"].dataset == "trec6"
    # stratified: every class keeps its share (ABBR has 86 of 5452)
    assert Counter(a["valid"].labels)["ABBR"] in (8, 9)
    full = D.load_dataset("trec6", "train")
    valid_labels = a["valid"].labels or []
    for text, label, row in zip(a["valid"].texts, valid_labels, a["valid"].rows, strict=True):
        j = full.rows.index(row)  # texts and labels travel with their source rows
        assert (text, label) == (full.texts[j], (full.labels or [])[j])


def test_splits_of_multilabel_and_hierarchical(mirror: Path) -> None:
    sem = D.load_splits("semeval2018_ec", seed=3)
    assert len(sem["train"]) + len(sem["valid"]) == 6838
    assert sem["test"].split == "dev" and len(sem["test"]) == 886  # dev serves as test
    ng = D.load_splits("newsgroups20", valid_frac=0.2, seed=0)
    assert len(ng["valid"]) == round(11314 * 0.2) or abs(len(ng["valid"]) - 2263) <= 1
    per_group = Counter(p[1] for p in ng["valid"].labels or [])
    assert len(per_group) == 20 and min(per_group.values()) >= 70  # stratified by leaf


# -- CLI -----------------------------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ulmfit")
    add_data_parser(parser.add_subparsers(dest="command"))
    return run_data(parser.parse_args(argv))


def test_cli_list(mirror: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["data", "list"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    for name in NAMES:
        assert name in lines
    assert lines["trec6"].split()[-1] == "y" and lines["dbpedia14"].split()[-1] == "n"
    assert "partial: test" in lines["ag_news"] and "5452/500" in lines["trec6"]
    assert run_cli(["data", "list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert all(line.split()[-1] == "n" for line in out.splitlines()[1:14])


def test_cli_get_and_info(mirror: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["data", "get", "trec6"]) == 0
    out = capsys.readouterr().out
    assert "train: 5452 documents" in out and "test: 500 documents" in out
    assert str(mirror / "trec" / "train.csv.xz") in out
    assert run_cli(["data", "get", "wikitext2", "--split", "valid"]) == 0
    assert "valid: 60 articles, 3760 lines" in capsys.readouterr().out
    assert run_cli(["data", "info", "imdb"]) == 0
    out = capsys.readouterr().out
    assert "aclImdb_v1.tar.gz" in out and "unsup: 50000 docs, unlabelled" in out
    with pytest.raises(D.MissingDataError, match="not implemented"):
        run_cli(["data", "get", "reuters21578", "--data-dir", str(tmp_path), "--no-progress"])
