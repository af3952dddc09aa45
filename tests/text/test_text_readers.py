"""Corpus readers: formats, compression, errors that name the file, the real datasets."""

from __future__ import annotations

import bz2
import gzip
import itertools
import json
import lzma
import zipfile
from pathlib import Path

import pytest

from ulmfit.text.readers import CorpusError, detect_format, open_text, read_table, read_texts

# Real WikiText lines start with a space and end with " \n".
WIKITEXT = "".join(
    f" {line} \n"
    for line in [
        "",
        "= First Article =",
        "",
        "Intro line with <unk> and 1 @,@ 000 .",
        "",
        "= = Section = =",
        "",
        "Section text .",
        "",
        "= = = Sub = = =",
        "Deep text .",
        "",
        "= Second =",
        "",
        "Second body .",
    ]
)

WIKIEXTRACTOR = """<doc id="1" url="http://x?curid=1" title="Alpha">
Alpha

Alpha is a letter.
It comes first.
</doc>
<doc id="2" url="http://x?curid=2" title="Beta">
Beta

Beta follows.
</doc>
"""


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8") if isinstance(text, str) else text
    path.write_bytes(data)
    return path


# -- plain text and compression -------------------------------------------------------


def test_txt_per_line_and_per_file(tmp_path: Path) -> None:
    p = write(tmp_path / "c.txt", "first doc\n\n   \nsecond doc  \r\nthird")
    assert list(read_texts(p)) == ["first doc", "second doc", "third"]
    assert list(read_texts(p, one_doc_per="file")) == ["first doc\n\n   \nsecond doc  \r\nthird"]
    with pytest.raises(ValueError, match="one_doc_per"):
        read_texts(p, one_doc_per="para")


@pytest.mark.parametrize("suffix", [".gz", ".xz", ".bz2", ".zip"])
def test_compressed_files_read_transparently(tmp_path: Path, suffix: str) -> None:
    text = "héllo wörld\nline two\n"
    p = tmp_path / f"corpus.txt{suffix}"
    data = text.encode("utf-8")
    if suffix == ".gz":
        p.write_bytes(gzip.compress(data))
    elif suffix == ".xz":
        p.write_bytes(lzma.compress(data))
    elif suffix == ".bz2":
        p.write_bytes(bz2.compress(data))
    else:
        with zipfile.ZipFile(p, "w") as zf:
            zf.writestr("inner.txt", data)
    assert list(read_texts(p)) == ["héllo wörld", "line two"]
    with open_text(p) as f:
        assert f.read() == text


def test_zip_with_several_members(tmp_path: Path) -> None:
    p = tmp_path / "two.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("a.txt", "from a\n")
        zf.writestr("b.txt", "from b\n")
    with pytest.raises(CorpusError, match=r"two\.zip.*2 members"):
        open_text(p)
    with open_text(p, member="b.txt") as f:
        assert f.read() == "from b\n"
    with pytest.raises(CorpusError, match=r"no member 'c\.txt'"):
        open_text(p, member="c.txt")


def test_bom_is_dropped_and_csv_lines_keep_endings(tmp_path: Path) -> None:
    p = write(tmp_path / "bom.txt", "\ufeffone\r\ntwo\n")
    with open_text(p) as f:
        assert list(f) == ["one\r\n", "two\n"]
        assert f.line_no == 2


def test_invalid_utf8_names_file_line_and_offset(tmp_path: Path) -> None:
    p = write(tmp_path / "bad.txt", b"good line\nsecond\nsister\xf0city\n")
    with pytest.raises(CorpusError) as info:
        list(read_texts(p))
    msg = str(info.value)
    assert "bad.txt" in msg and "line 3" in msg and "byte offset 23" in msg
    # The same inside a compressed file and through read().
    gz = tmp_path / "bad.txt.gz"
    gz.write_bytes(gzip.compress(p.read_bytes()))
    with pytest.raises(CorpusError, match=r"bad\.txt\.gz: line 3"):
        list(read_texts(gz))
    with pytest.raises(CorpusError, match="line 3"), open_text(p) as f:
        f.read()


def test_damaged_compressed_file(tmp_path: Path) -> None:
    p = write(tmp_path / "fake.txt.gz", b"this is not gzip data at all\n")
    with pytest.raises(CorpusError, match=r"fake\.txt\.gz"):
        list(read_texts(p))


@pytest.mark.parametrize("content", ["", "  \n\n\t \n", "\n"])
def test_empty_corpus_names_file(tmp_path: Path, content: str) -> None:
    p = write(tmp_path / "empty.txt", content)
    with pytest.raises(CorpusError, match=r"empty\.txt: no documents"):
        list(read_texts(p))
    with pytest.raises(CorpusError, match="no documents"):
        list(read_texts(p, one_doc_per="file"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"nope\.txt: no such file"):
        read_texts(tmp_path / "nope.txt")
    with pytest.raises(CorpusError, match=r"nope\.txt: no such file"):
        open_text(tmp_path / "nope.txt")


def test_directory_of_txt_files(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    write(root / "b.txt", "doc b\n")
    write(root / "a.txt", "doc a\nsecond line\n")
    write(root / "sub" / "c.txt.gz", gzip.compress(b"doc c"))
    write(root / "notes.md", "not a document")
    write(root / "empty.txt", "   ")
    write(root / ".hidden" / "d.txt", "hidden")
    assert detect_format(root) == "dir"
    assert list(read_texts(root)) == ["doc a\nsecond line", "doc b", "doc c"]
    with pytest.raises(CorpusError, match="no documents"):
        list(read_texts(write(tmp_path / "none" / "x.md", "x").parent))


# -- tables ---------------------------------------------------------------------------


def test_csv_single_and_several_columns(tmp_path: Path) -> None:
    p = write(
        tmp_path / "t.csv",
        'label,title,text\npos,Nice,"Good film,\nreally"\nneg,Bad,Awful\nneg,,\n',
    )
    assert list(read_texts(p, text_column="text")) == ["Good film,\nreally", "Awful"]
    assert list(read_texts(p)) == ["Good film,\nreally", "Awful"]  # "text" is the default
    assert list(read_texts(p, text_column=["title", "text"])) == [
        "xxfld 1 Nice xxfld 2 Good film,\nreally",
        "xxfld 1 Bad xxfld 2 Awful",
    ]
    rows = list(read_table(p, "text", "label"))
    assert [(r["text"], r["label"]) for r in rows] == [
        ("Good film,\nreally", "pos"),
        ("Awful", "neg"),
        ("", "neg"),
    ]


def test_csv_missing_column_lists_columns(tmp_path: Path) -> None:
    p = write(tmp_path / "t.csv", "label,body\npos,hi\n")
    with pytest.raises(CorpusError) as info:
        list(read_texts(p, text_column="text"))
    msg = str(info.value)
    assert "t.csv" in msg and "'text'" in msg and "['label', 'body']" in msg


def test_csv_short_row_and_tsv(tmp_path: Path) -> None:
    p = write(tmp_path / "t.csv", "label,text\npos,ok\nneg\n")
    with pytest.raises(CorpusError, match=r"t\.csv: line 3"):
        list(read_texts(p))
    tsv = write(tmp_path / "t.tsv.gz", gzip.compress(b"text\tlabel\na, b\tx\nc\ty\n"))
    assert detect_format(tsv) == "tsv"
    assert list(read_texts(tsv)) == ["a, b", "c"]


def test_jsonl_fields_and_errors(tmp_path: Path) -> None:
    lines = [{"text": "one", "t": "T1"}, {"text": "two", "t": None}, {"text": 3, "t": "x"}]
    p = write(tmp_path / "d.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert list(read_texts(p)) == ["one", "two", "3"]
    assert next(read_texts(p, text_column=["t", "text"])) == "xxfld 1 T1 xxfld 2 one"
    bad = write(tmp_path / "bad.jsonl", '{"text": "ok"}\n{"text": "broken\n')
    with pytest.raises(CorpusError, match=r"bad\.jsonl: line 2: invalid JSON"):
        list(read_texts(bad))
    missing = write(tmp_path / "m.jsonl", '{"text": "ok"}\n{"body": "x", "id": 1}\n')
    with pytest.raises(CorpusError, match=r"m\.jsonl: line 2: no field 'text'.*\['body', 'id'\]"):
        list(read_texts(missing))
    nested = write(tmp_path / "n.jsonl", '{"text": ["a", "b"]}\n')
    with pytest.raises(CorpusError, match=r"n\.jsonl: line 1: field 'text'"):
        list(read_texts(nested))
    array = write(tmp_path / "a.jsonl", "[1, 2]\n")
    with pytest.raises(CorpusError, match="line 1: expected a JSON object"):
        list(read_texts(array))


# -- wiki formats ---------------------------------------------------------------------


def test_wikitext_articles(tmp_path: Path) -> None:
    p = write(tmp_path / "wiki.valid.tokens", WIKITEXT)
    assert detect_format(p) == "wikitext"
    docs = list(read_texts(p))
    assert docs == [
        "= First Article =\nIntro line with <unk> and 1 @,@ 000 .\n= = Section = =\n"
        "Section text .\n= = = Sub = = =\nDeep text .",
        "= Second =\nSecond body .",
    ]


def test_wikiextractor_docs(tmp_path: Path) -> None:
    p = write(tmp_path / "wiki_00.txt", WIKIEXTRACTOR)
    assert detect_format(p) == "wikiextractor"
    assert list(read_texts(p)) == [
        "Alpha\nAlpha is a letter.\nIt comes first.",
        "Beta\nBeta follows.",
    ]
    nested = write(tmp_path / "n.txt", '<doc id="1">\nA\n<doc id="2">\nB\n</doc>\n')
    with pytest.raises(CorpusError, match=r"n\.txt: line 3: <doc> inside"):
        list(read_texts(nested, fmt="wikiextractor"))


def test_format_detection_and_bad_format(tmp_path: Path) -> None:
    assert detect_format(write(tmp_path / "a.csv.xz", lzma.compress(b"text\nx\n"))) == "csv"
    assert detect_format(write(tmp_path / "a.ndjson", "{}")) == "jsonl"
    assert detect_format(write(tmp_path / "a.txt", "plain\n")) == "txt"
    assert detect_format(write(tmp_path / "noext", "\n\n<doc id='1'>\n")) == "wikiextractor"
    with pytest.raises(ValueError, match="unknown corpus format"):
        read_texts(tmp_path / "a.txt", fmt="parquet")
    with pytest.raises(CorpusError, match="needs a folder"):
        read_texts(tmp_path / "a.txt", fmt="dir")


# -- the real datasets ----------------------------------------------------------------


def test_real_trec_csv(shared_data: Path) -> None:
    docs = list(read_texts(shared_data / "trec" / "train.csv.xz", text_column="text"))
    assert len(docs) == 5452
    assert docs[0] == "How did serfdom develop in and then leave Russia ?"
    rows = read_table(shared_data / "trec" / "train.csv.xz", "text", "label")
    labels = {r["label"] for r in rows}
    assert labels == {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}


def test_real_reuters_jsonl(shared_data: Path) -> None:
    docs = list(read_texts(shared_data / "reuters21578" / "train.jsonl.xz", text_column="text"))
    assert len(docs) == 7770
    assert docs[0].startswith("BAHIA COCOA REVIEW\n")


def test_real_wikitext2_valid(shared_data: Path) -> None:
    docs = list(read_texts(shared_data / "wikitext" / "wikitext-2" / "wiki.valid.tokens.xz"))
    assert len(docs) == 60
    assert docs[0].startswith("= Homarus gammarus =\nHomarus gammarus , known as")
    assert all(d.startswith("= ") and not d.startswith("= =") for d in docs)
    assert sum(d.count("\n= = ") for d in docs) > 60  # sections stay inside articles


def test_real_wikipedia_prefix(shared_data: Path) -> None:
    path = shared_data / "wikipedia_en_2015_subset" / "AA.txt.xz"
    docs = list(itertools.islice(read_texts(path), 3))  # a prefix only: the file is 100 MB
    assert [d.split("\n", 1)[0] for d in docs] == ["Anarchism", "Autism", "Albedo"]
    assert all("<doc" not in d and "</doc>" not in d for d in docs)
    assert len(docs[0]) > 10_000
