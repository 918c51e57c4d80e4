"""IWSLT'14 De-En on a generated fixture in the upstream layout (the real corpus cannot
be downloaded here)."""

import io
import json
import tarfile
from pathlib import Path

import pytest

from data_prep import iwslt14
from data_prep.file_io import CorpusError
from pipelines import translation
from tests.helpers import serve_downloads

CONFIG = Path(__file__).resolve().parent.parent / "pipelines" / "configs" / "iwslt14_de_en.yaml"
SENTENCES = 60  # per language in the training file


def sentence(lang: str, i: int) -> str:
    words = {"de": ["ich", "sehe", "den", "baum", "heute"],
             "en": ["i", "see", "the", "tree", "today"]}[lang]
    return " ".join(words[: 2 + i % 4]) + f" {i} ."


def training_lines(lang: str) -> list[str]:
    """Two talks: metadata lines, a title and a description, then sentences."""
    lines, i = [], 0
    for talk in range(2):
        lines += [f"<url>http://www.ted.com/talks/{talk}</url>",
                  f"<keywords>talks, {lang}</keywords>", "<speaker>Ann Example</speaker>",
                  f"<talkid>{talk}</talkid>", f"<title>Title {lang} {talk}</title>",
                  f"<description>About {lang} {talk}</description>"]
        for _ in range((SENTENCES - 4) // 2):
            i += 1
            lines.append(sentence(lang, i))
    return lines


def xml_lines(lang: str, name: str, count: int) -> list[str]:
    return (['<?xml version="1.0" encoding="UTF-8"?>', "<mteval>",
             f'<srcset setid="{name}" srclang="{lang}">', '<doc docid="1">']
            + [f'<seg id="{i}"> {name} {sentence(lang, i)} </seg>' for i in range(1, count + 1)]
            + ["</doc>", "</srcset>", "</mteval>"])


def write_upstream(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for lang in iwslt14.LANGUAGES:
        (folder / f"train.tags.de-en.{lang}").write_text(
            "".join(line + "\n" for line in training_lines(lang)), encoding="utf-8")
        for k, name in enumerate(iwslt14.TEST_SETS):
            (folder / f"{name}.de-en.{lang}.xml").write_text(
                "".join(line + "\n" for line in xml_lines(lang, name, 2 + k)), encoding="utf-8")
    return folder


@pytest.fixture
def iwslt_data_dir(tmp_path) -> Path:
    write_upstream(tmp_path / "data" / iwslt14.RELATIVE_DIR)
    return tmp_path / "data"


def pairs(split, data_dir, source="de", target="en"):
    return list(iwslt14.iter_pairs(split, iwslt14.split_files(split, source, target, data_dir)))


def test_splits_follow_fairseq(iwslt_data_dir):
    train, val = pairs("train", iwslt_data_dir), pairs("val", iwslt_data_dir)
    # Titles and descriptions are sentences; the other metadata lines are not.
    def text(lang):
        for line in training_lines(lang):
            if not line.startswith(("<url>", "<keywords>", "<speaker>", "<talkid>")):
                for tag in ("<title>", "</title>", "<description>", "</description>"):
                    line = line.replace(tag, "")
                yield line

    everything = list(zip(text("de"), text("en")))
    assert ("Title de 0", "Title en 0") in train and all("<" not in s for s, _ in train)
    assert val == everything[iwslt14.VAL_EVERY - 1::iwslt14.VAL_EVERY]
    assert train == [p for i, p in enumerate(everything, 1) if i % iwslt14.VAL_EVERY]
    test = pairs("test", iwslt_data_dir)
    assert len(test) == sum(2 + k for k in range(len(iwslt14.TEST_SETS)))
    assert test[0] == (f"{iwslt14.TEST_SETS[0]} {sentence('de', 1)}",
                       f"{iwslt14.TEST_SETS[0]} {sentence('en', 1)}")
    assert test[-1][1].startswith(iwslt14.TEST_SETS[-1])
    # En->De swaps the sides.
    assert pairs("val", iwslt_data_dir, "en", "de") == [(t, s) for s, t in val]


def test_misaligned_metadata_names_the_file_and_line(iwslt_data_dir):
    path = iwslt_data_dir / iwslt14.RELATIVE_DIR / "train.tags.de-en.en"
    lines = path.read_text().splitlines()
    lines[0] = "a sentence where German has a url line"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorpusError, match=r"train\.tags\.de-en\.de:1: not a sentence"):
        pairs("train", iwslt_data_dir)


def test_other_languages_are_refused(iwslt_data_dir):
    with pytest.raises(CorpusError, match="German and English only"):
        iwslt14.split_files("train", "de", "fr", iwslt_data_dir)


def test_release_archive_is_extracted_into_the_cache(tmp_path, monkeypatch):
    upstream = write_upstream(tmp_path / "upstream" / "de-en")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(upstream, arcname="de-en")
    requested = serve_downloads(monkeypatch, tmp_path / "cache", buffer.getvalue())
    folder = iwslt14.iwslt14_dir(tmp_path / "empty_data_dir")
    assert requested == [iwslt14.ARCHIVE_URL]
    assert folder == tmp_path / "cache" / iwslt14.RELATIVE_DIR
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in upstream.iterdir())
    assert iwslt14.iwslt14_dir(None) == folder and len(requested) == 1


def test_config_prepares_the_corpus(iwslt_data_dir, tmp_path):
    run_dir = tmp_path / "run"
    assert translation.main(["prepare", "--config", str(CONFIG), "--run-dir", str(run_dir),
                             "--data-dir", str(iwslt_data_dir),
                             "--set", "tokenizer.vocab_size=60"]) == 0
    report = json.loads((run_dir / "data" / "report.json").read_text())
    assert report["val"]["pairs"] == len(pairs("val", iwslt_data_dir))
    assert report["train"]["pairs"] == len(pairs("train", iwslt_data_dir))
    assert report["test"]["pairs"] == len(pairs("test", iwslt_data_dir))
