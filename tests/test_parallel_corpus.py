import gzip

import pytest

from data_prep.file_io import CorpusError, decode_lines, read_lines
from data_prep.multi30k import load_multi30k
from data_prep.parallel_corpus import drop_empty, read_parallel, read_tsv


def test_line_count_mismatch_names_both_files(tmp_path):
    (tmp_path / "a.de").write_text("eins\nzwei\n")
    (tmp_path / "a.en").write_text("one\n")
    with pytest.raises(CorpusError) as e:
        read_parallel(tmp_path / "a.de", tmp_path / "a.en")
    assert "a.de has 2 lines" in str(e.value) and "a.en has 1 lines" in str(e.value)


def test_invalid_utf8_names_file_and_line(tmp_path):
    (tmp_path / "bad.de").write_bytes(b"gut\nschlecht \xff\n")
    (tmp_path / "bad.en").write_text("good\nbad\n")
    with pytest.raises(CorpusError, match=r"bad\.de:2: invalid UTF-8"):
        read_parallel(tmp_path / "bad.de", tmp_path / "bad.en")


def test_missing_file(tmp_path):
    with pytest.raises(CorpusError, match="nope.de: file not found"):
        read_parallel(tmp_path / "nope.de", tmp_path / "nope.en")


def test_gzip_and_tsv(tmp_path):
    with gzip.open(tmp_path / "x.gz", "wt", encoding="utf-8") as f:
        f.write("Grüße\n")
    (tmp_path / "y.txt").write_text("greetings\n")
    assert read_parallel(tmp_path / "x.gz", tmp_path / "y.txt").source == ["Grüße"]
    (tmp_path / "c.tsv").write_text("a\tb\nc\td\n")
    corpus = read_tsv(tmp_path / "c.tsv")
    assert corpus.source == ["a", "c"] and corpus.target == ["b", "d"]


def test_tsv_field_count_error(tmp_path):
    (tmp_path / "c.tsv").write_text("a\tb\nno tab here\n")
    with pytest.raises(CorpusError, match=r"c\.tsv:2: expected 2 tab-separated fields"):
        read_tsv(tmp_path / "c.tsv")


def test_drop_empty_counts(tmp_path):
    (tmp_path / "s").write_text("a\n\nc\nd\n")
    (tmp_path / "t").write_text("A\nB\n\nD\n")
    corpus = drop_empty(read_parallel(tmp_path / "s", tmp_path / "t"))
    assert corpus.source == ["a", "d"] and corpus.dropped == {"empty": 2}


def test_multi30k_real_splits(multi30k_dir):
    val = load_multi30k("val", "de", "en", multi30k_dir)
    assert len(val) == 1014
    test = load_multi30k("test2016", "en", "fr", multi30k_dir)
    assert len(test) == 1000 and test.source[0] and test.target[0]
    with pytest.raises(CorpusError, match="unknown Multi30k language"):
        load_multi30k("val", "de", "xx", multi30k_dir)


def test_only_newlines_split_lines(tmp_path):
    # U+2028, U+0085, a form feed and a lone \r are characters of a sentence, not line
    # breaks: splitting there would misalign the two sides.
    (tmp_path / "s").write_bytes("a\u2028b\x85c\x0cd\re\r\nf\n".encode())
    (tmp_path / "t").write_text("A\nF\n")
    corpus = read_parallel(tmp_path / "s", tmp_path / "t")
    assert corpus.source == ["a\u2028b\x85c\x0cd\re", "f"]


def test_tsv_empty_fields_are_empty_pairs(tmp_path):
    (tmp_path / "c.tsv").write_text("a\tb\nsrc\t\n\n\ttgt\n")
    corpus = drop_empty(read_tsv(tmp_path / "c.tsv"))
    assert corpus.source == ["a"] and corpus.dropped == {"empty": 3}


def test_decode_lines_names_the_stream():
    assert decode_lines(b"x\r\ny\n", "<stdin>") == ["x", "y"]
    with pytest.raises(CorpusError, match=r"<stdin>:2: invalid UTF-8"):
        decode_lines(b"ok\n\xff\n", "<stdin>")


def test_a_directory_is_not_a_text_file(tmp_path):
    with pytest.raises(CorpusError, match="is a directory, not a text file"):
        read_lines(tmp_path)
