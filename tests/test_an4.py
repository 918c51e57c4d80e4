"""AN4: the loader on a generated copy of its layout and on the real files, the word
language model, and every speech stage on a slice of the corpus."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from data_prep import an4
from data_prep.ngram_lm import BOS, LanguageModelError, arpa_lines, write_arpa
from tests.helpers import ROOT

SPEAKERS = {"train": ["fash", "fbbh", "mcen"], "test": ["fcaw"]}
FOLDERS = {"train": "an4_clstk", "test": "an4test_clstk"}


def make_an4(root: Path, tags: bool = True) -> Path:
    """A tiny AN4 in the upstream layout: two utterances per speaker, 16 kHz SPHERE."""
    rng = np.random.default_rng(0)
    for split, speakers in SPEAKERS.items():
        fileids, lines = [], []
        for s, speaker in enumerate(speakers):
            for i in range(2):
                utterance = f"an{100 + 10 * s + i}-{speaker}-b"
                fileid = f"{FOLDERS[split]}/{speaker}/{utterance}"
                audio = root / "wav" / f"{fileid}.sph"
                audio.parent.mkdir(parents=True, exist_ok=True)
                sf.write(audio, 0.1 * rng.standard_normal(8000), 16000, format="NIST",
                         subtype="PCM_16")
                fileids.append(fileid)
                text = "ERASE C Q" if i else "FIFTY ONE"
                lines.append(f"<s> {text} </s> ({utterance})" if tags else f"{text} ({utterance})")
        (root / "etc").mkdir(parents=True, exist_ok=True)
        (root / "etc" / f"an4_{split}.fileids").write_text("\n".join(fileids) + "\n")
        (root / "etc" / f"an4_{split}.transcription").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("tags", [True, False])
def test_split_entries_match_ids_to_audio_and_text(tmp_path, tags):
    root = make_an4(tmp_path / "an4", tags)
    train = an4.split_entries(root, "train")
    assert len(train) == 6 and {e["speaker"] for e in train} == set(SPEAKERS["train"])
    first = train[0]
    assert first["text"] == "FIFTY ONE" and first["utterance"] == "an100-fash-b"
    assert Path(first["audio_filepath"]).is_file() and first["duration"] == pytest.approx(0.5)
    assert [e["text"] for e in an4.split_entries(root, "test")] == ["FIFTY ONE", "ERASE C Q"]


def test_root_dir_finds_the_data_directory(tmp_path):
    make_an4(tmp_path / "an4")
    assert an4.root_dir(tmp_path) == tmp_path / "an4"


@pytest.mark.parametrize("damage, message", [
    (lambda r: _edit(r / "etc/an4_train.transcription", "(an100-fash-b)", ""),
     "an4_train.transcription:1: expected '<s> TEXT </s> (utterance-id)'"),
    (lambda r: (r / "wav/an4_clstk/fbbh/an111-fbbh-b.sph").unlink(),
     "audio of an111-fbbh-b not found"),
    (lambda r: _edit(r / "etc/an4_train.transcription", "(an101-fash-b)", "(an999-fash-b)"),
     "no transcript for 1 utterances of an4_train.fileids (first: an101-fash-b)"),
    (lambda r: _edit(r / "etc/an4_test.transcription", "(an101-fcaw-b)", "(an100-fcaw-b)"),
     "an4_test.transcription:2: utterance an100-fcaw-b appears twice"),
    (lambda r: _edit(r / "etc/an4_train.fileids", "an4_clstk/fash/an100-fash-b", "an100-fash-b"),
     "an4_train.fileids:1: expected a unique <folder>/<speaker>/<utterance> file id"),
    (lambda r: (r / "etc/an4_test.fileids").unlink(), "an4_test.fileids: file-id list not found"),
])
def test_damaged_layouts_are_one_line_naming_the_file(tmp_path, damage, message):
    root = make_an4(tmp_path / "an4")
    damage(root)
    with pytest.raises(an4.AN4Error, match=None) as error:
        for split in ("train", "test"):
            an4.split_entries(root, split)
    assert message in str(error.value) and "\n" not in str(error.value)


def _edit(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new, 1))


def test_unreadable_audio_names_the_file(tmp_path):
    from data_prep.audio_features import AudioError, FeatureConfig, extract_features

    root = make_an4(tmp_path / "an4")
    bad = root / "wav/an4_clstk/fash/an100-fash-b.sph"
    bad.write_bytes(b"NIST_1A\n   1024\nnot audio")
    with pytest.raises(AudioError, match="an100-fash-b.sph"):
        extract_features([bad], FeatureConfig(sample_rate=16000), workers=1)


def test_split_speakers_holds_out_whole_speakers_reproducibly():
    entries = [{"speaker": f"s{i % 20}", "n": i} for i in range(100)]
    train, val = an4.split_speakers(entries, 0.1, seed=0)
    held_out = {e["speaker"] for e in val}
    assert len(held_out) == 2 and not held_out & {e["speaker"] for e in train}
    assert len(train) + len(val) == 100
    assert an4.split_speakers(entries, 0.1, seed=0) == (train, val)
    assert {e["speaker"] for e in an4.split_speakers(entries, 0.1, seed=1)[1]} != held_out
    with pytest.raises(an4.AN4Error, match="holds out all 20"):
        an4.split_speakers(entries, 0.99, seed=0)


def test_the_real_corpus(data_dir):
    if not (data_dir / "an4" / "etc").is_dir():
        pytest.skip(f"AN4 not found under {data_dir}")
    root = an4.root_dir(data_dir)
    train, test = an4.split_entries(root, "train"), an4.split_entries(root, "test")
    assert (len(train), len(test)) == (948, 130)
    speakers = {s: {e["speaker"] for e in items} for s, items in (("train", train), ("test", test))}
    assert (len(speakers["train"]), len(speakers["test"])) == (74, 10)
    assert not speakers["train"] & speakers["test"]
    assert sum(len(e["text"].split()) for e in test) == 773
    assert sum(e["duration"] for e in train) / 3600 == pytest.approx(0.71, abs=0.01)
    fit, val = an4.split_speakers(train, 0.1, seed=0)
    assert len({e["speaker"] for e in val}) == 7 and len(fit) + len(val) == 948


SENTENCES = ["erase c q", "fifty one", "erase f seven", "go", "yes", "fifty one fifteen",
             "enter five", "erase c q q f seven", "rubout g m e"]


@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_arpa_model_is_a_distribution_in_every_context(tmp_path, order):
    kenlm = pytest.importorskip("kenlm")
    path = write_arpa(tmp_path / "lm.arpa", SENTENCES, order)
    config = kenlm.Config()
    config.show_progress = False
    model = kenlm.Model(str(path), config)
    assert model.order == order
    vocab = sorted({w for s in SENTENCES for w in s.split()}) + ["</s>", "<unk>"]
    for context in ([], ["erase"], ["erase", "c"], ["fifty", "one"], ["unseen", "word"]):
        state = kenlm.State()
        model.BeginSentenceWrite(state)
        for word in context:
            out = kenlm.State()
            model.BaseScore(state, word, out)
            state = out
        total = sum(10 ** model.BaseScore(state, w, kenlm.State()) for w in vocab)
        assert total == pytest.approx(1.0, abs=1e-4), context
    # Seen word sequences are likelier than the same words shuffled.
    assert model.score("erase c q") > model.score("q c erase")


def test_arpa_header_counts_match_the_sections():
    lines = arpa_lines(SENTENCES, 3)
    counts = {int(line[6]): int(line.split("=")[1]) for line in lines if line.startswith("ngram ")}
    sections, current = {}, None
    for line in lines:
        if line.endswith("-grams:"):
            current = int(line[1])
            sections[current] = 0
        elif current and line and not line.startswith("\\"):
            sections[current] += 1
            fields = line.split("\t")
            assert len(fields) == (3 if current < 3 else 2) and len(fields[1].split()) == current
            assert math.isfinite(float(fields[0]))
    assert counts == sections
    assert f"-99.000000\t{BOS}\t" in "\n".join(lines)


def test_arpa_needs_words():
    with pytest.raises(LanguageModelError, match="no words"):
        arpa_lines(["", "  "], 3)


def test_language_model_corrects_a_spelling_the_acoustics_prefer(tmp_path):
    from models.ctc_lm_decoding import CTCLanguageModelDecoder
    from models.ctc_recognizer import CTCRecognizer

    labels = ["", *"abcdefghijklmnopqrstuvwxyz' "]
    path = write_arpa(tmp_path / "lm.arpa", ["yes", "yes please", "no"] * 5, 2)
    model = CTCRecognizer(num_features=4, vocab_size=len(labels), rnn_layers=1, rnn_units=4)
    decoder = CTCLanguageModelDecoder(model, labels, lambda text: [labels.index(c) for c in text],
                                      path, weight=0.0, word_bonus=0.0, beam_width=16)
    # y, e, then s or z (z slightly likelier), each frame followed by a blank.
    frames = np.full((6, len(labels)), 1e-4)
    for t, probs in enumerate([{"y": 0.9}, {"": 0.9}, {"e": 0.9}, {"": 0.9},
                               {"z": 0.5, "s": 0.45}, {"": 0.9}]):
        for char, p in probs.items():
            frames[t, labels.index(char)] = p
    log_probs = np.log(frames / frames.sum(axis=1, keepdims=True)).astype(np.float32)
    assert decoder.search(log_probs) == "yez"
    decoder.set_weights(1.0, 0.0)
    assert decoder.search(log_probs) == "yes"


@pytest.mark.slow
def test_every_stage_on_an4_smoke(data_dir, tmp_path):
    """Prepare (speaker-held-out validation), train, evaluate with and without the
    language model, transcribe, export: the an4_smoke config on a slice of AN4."""
    if not (data_dir / "an4" / "etc").is_dir():
        pytest.skip(f"AN4 not found under {data_dir}")
    from pipelines import speech

    run = tmp_path / "run"
    config = str(ROOT / "pipelines" / "configs" / "an4_smoke.yaml")
    common = ["--config", config, "--run-dir", str(run), "--data-dir", str(data_dir)]
    assert speech.main(["all", *common]) == 0
    report = json.loads((run / "data" / "report.json").read_text())
    assert report["test"]["utterances"] == 20
    splits = {s: [json.loads(line) for line in (run / "data" / f"{s}.jsonl").open()]
              for s in ("train", "val", "test")}
    assert not {e["speaker"] for e in splits["val"]} & {e["speaker"] for e in splits["train"]}
    assert all(e["text"] == e["text"].lower() for e in splits["test"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["strategy"] == "beam_search_lm"
    assert {"without_lm", "greedy", "lm", "per_speaker"} <= set(metrics)
    tuning = json.loads((run / "lm" / "tuning.json").read_text())
    assert len(tuning["grid"]) == 4 and tuning["training_sentences"] == 60
    lm_hyps = (run / "hyps" / "test.beam_search_lm.txt").read_text().splitlines()
    assert len(lm_hyps) == 20

    # transcribe decodes with the tuned language model, as evaluate did; one batch of
    # one speaker's files, which normalization: speaker takes as one speaker.
    first = [e for e in splits["test"] if e["speaker"] == splits["test"][0]["speaker"]]
    (tmp_path / "files.txt").write_text("".join(e["audio_filepath"] + "\n" for e in first))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert speech.main(["transcribe", *common, "--input", str(tmp_path / "files.txt")]) == 0
    assert out.getvalue().splitlines() == lm_hyps[:len(first)]
    # A damaged language model file is made again, not read (it derives from the run).
    arpa = run / "lm" / "words.arpa"
    arpa.write_text(arpa.read_text()[:300])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert speech.main(["transcribe", *common, "--input", str(tmp_path / "files.txt")]) == 0
    assert "not the file that was tuned; making it again" in out.getvalue()
    assert out.getvalue().splitlines()[-len(first):] == lm_hyps[:len(first)]
    assert speech.main(["export", *common]) == 0
    assert (run / "export" / "saved_model.pb").is_file()
    # The report reads all three decodings and normalizes its examples per speaker.
    assert speech.main(["report", *common]) == 0
    html = (run / "report" / "speech_report.html").read_text()
    assert "word LM" in html and "Spelled letters" in html


def test_piece_vocabulary_round_trips_and_names_unknown_characters():
    from data_prep.char_vocabulary import VocabularyError
    from data_prep.piece_vocabulary import PieceVocabulary, train_units

    texts = SENTENCES * 20 + ["p i t t s b u r g h", "a b d h j k l o s u w x y z"]
    for blank in (0, 5):
        vocab = PieceVocabulary(train_units(texts, 40), blank)
        assert vocab.size == 40 - 4 + 1 and vocab.blank_index == blank
        for text in ("erase c q", "fifty one fifteen", "zebra"):
            ids = vocab.encode(text)
            assert blank not in ids and all(0 <= i < vocab.size for i in ids)
            assert vocab.decode(ids) == text
            assert " ".join("".join(vocab.label_texts()[i] for i in ids).split()) == text
        assert vocab.labels()[blank] == "" and vocab.label_texts()[blank] == ""
        assert any(label.startswith("▁") for label in vocab.labels())
    with pytest.raises(VocabularyError, match=r"where: characters '7' are in no SentencePiece"):
        vocab.encode("erase 7", where="where")


@pytest.mark.slow
def test_sentencepiece_units_stream_and_export(data_dir, tmp_path, capfd, monkeypatch):
    """data.units: sentencepiece trains the units in prepare; training, the language
    model search (pyctcdecode's SentencePiece mode), the export and, for a causal model,
    the stream use them: the streamed transcripts are evaluate's (greedy, and with the
    language model)."""
    if not (data_dir / "an4" / "etc").is_dir():
        pytest.skip(f"AN4 not found under {data_dir}")
    from pipelines import speech

    run = tmp_path / "run"
    common = ["--config", str(ROOT / "pipelines" / "configs" / "an4_streaming.yaml"),
              "--run-dir", str(run), "--data-dir", str(data_dir)]
    common += [f"--set={o}" for o in (
        "data.units=sentencepiece", "data.unit_vocab_size=64", "data.speed_perturbation=[1.0]",
        "data.limit_train=60", "data.limit_val=20", "data.limit_test=8", "features.n_mels=40",
        "model.conv_channels=32", "model.rnn_layers=1", "model.rnn_units=48",
        # Barely trained, so that it still emits many labels (a CTC model learns blanks
        # first): the comparison with evaluate's transcripts then means something.
        "training.epochs=1", "training.learning_rate=1e-6", "training.average_last=0",
        "decoding.lm.weights=[0.5]", "decoding.lm.word_bonuses=[1.0]", "decoding.lm.beam_width=8")]
    assert speech.main(["all", *common]) == 0
    assert json.loads((run / "data" / "report.json").read_text())["vocabulary_size"] <= 61
    assert json.loads((run / "lm" / "tuning.json").read_text())["weight"] == 0.5
    assert speech.main(["export", *common]) == 0
    assert (run / "export" / "saved_model.pb").is_file()
    assert (run / "tflite" / "stream_int8.tflite").is_file()
    audio = [json.loads(line)["audio_filepath"] for line in (run / "data" / "test.jsonl").open()]
    greedy = (run / "hyps" / "test.greedy.txt").read_text().splitlines()
    with_lm = (run / "hyps" / "test.beam_search_lm.txt").read_text().splitlines()
    assert sum(map(bool, greedy)) >= 4 and with_lm != greedy
    capfd.readouterr()
    # streaming.final: lm (the config's): the final transcripts are evaluate's search with
    # the language model, the partials its greedy ones. The search reuses the streaming
    # step's model (the checkpoint is loaded once), and KenLM's notice stays off stderr.
    from pipelines.speech import language_model

    with monkeypatch.context() as patch:
        patch.setattr(language_model, "load_checkpoint", lambda run: pytest.fail("loaded twice"))
        assert speech.main(["stream", *common, *audio]) == 0
    captured = capfd.readouterr()
    assert captured.out.splitlines() == with_lm
    assert next(g for g in greedy if g) in captured.err.splitlines()  # a partial
    assert "binary file" not in captured.err
    assert speech.main(["stream", *common, "--set", "streaming.final=greedy", *audio]) == 0
    assert capfd.readouterr().out.splitlines() == greedy
    assert speech.main(["stream", *common, "--tflite", "--int8", *audio[:2]]) == 0
    int8 = capfd.readouterr().out.splitlines()
    assert len(int8) == 2
    # The server's streams end with the same search over the same int8 step.
    from tests.serve_server import Server, stream_wav

    server = Server("--speech", run)
    try:
        assert [stream_wav(server, wav)[1] for wav in audio[:2]] == int8
        assert httpx.get(server.url + "v1/models").json()["speech"]["streaming"]["final"] == "lm"
    finally:
        server.stop()
    # The streaming benchmark scores the same final search, and the partials' greedy one.
    import subprocess
    import sys

    from pipelines.metrics import wer_cer

    subprocess.run([sys.executable, "-m", "benchmarks.streaming", "--config",
                    run / "config.yaml", "--run-dir", run, "--chunks", "3", "--limit", "3"],
                   cwd=ROOT, check=True, capture_output=True)
    scores = json.loads((run / "streaming_benchmark.json").read_text())["backends"]["keras"]
    references = [json.loads(line)["text"] for line in (run / "data" / "test.jsonl").open()][:3]
    assert scores["wer"] == wer_cer(with_lm[:3], references)["wer"]
    assert scores["greedy_wer"] == wer_cer(greedy[:3], references)["wer"]
    assert scores["final_search_ms_median"] > 0


def test_audio_measurement_counts_edge_silence_and_clipping(tmp_path):
    from benchmarks.an4_audio import measure

    rate = 16000
    speech = 0.5 * np.sin(np.arange(rate) * 2 * np.pi * 440 / rate)
    audio = np.concatenate([np.zeros(rate), speech, np.zeros(rate)])  # 1 s, 1 s, 1 s
    audio[rate + 100] = 1.0  # one clipped sample
    path = tmp_path / "a.sph"
    sf.write(path, audio, rate, format="NIST", subtype="PCM_16")
    result = measure([{"audio_filepath": str(path)}], trim_db=30)
    assert result["edge_silence_fraction"] == pytest.approx(2 / 3, abs=0.02)
    assert (result["clipped_files"], result["clipped_samples"]) == (1, 1)
