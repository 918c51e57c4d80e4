import io
import json
import shutil
from pathlib import Path

import keras
import pytest

from data_prep.multi30k import load_multi30k
from data_prep.pair_shards import pair_dataset, verified_shards
from data_prep.subword_tokenizer import SubwordTokenizer, train_sentencepiece
from data_prep.text_dataset import make_training_dataset
from pipelines import translation
from pipelines.config import load_config
from pipelines.metrics import bleu_chrf
from pipelines.run_dir import RunDir
from pipelines.translation.config import TranslationConfig
from pipelines.translation.data import load_tokenizers
from pipelines.translation.inference import greedy, translate_texts
from pipelines.translation.stages import build_model
from tests.helpers import TOY_PAIRS, assert_weights_saved_once, saved_model_client

SMOKE = Path(__file__).resolve().parent.parent / "pipelines" / "configs" / "translation_smoke.yaml"


def run(*args) -> int:
    return translation.main([str(a) for a in args])


@pytest.mark.slow
def test_smoke_config_end_to_end(translation_smoke_run, multi30k_dir, tmp_path, capsys,
                                 monkeypatch):
    run_dir = tmp_path / "run"
    shutil.copytree(translation_smoke_run, run_dir)
    common = ["--config", SMOKE, "--run-dir", run_dir, "--data-dir", multi30k_dir]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"bleu", "chrf", "signature", "test_sentences"} <= set(metrics)
    assert metrics["test_sentences"] == 100 and "tok:13a" in metrics["signature"]
    assert 0.0 <= metrics["bleu"] <= 100.0 and metrics["greedy"]["beam_size"] == 1
    for path in ["config.yaml", "tokenizer/source.model", "checkpoints/best.keras",
                 "checkpoints/last.keras", "logs/history.json", "hyps/test.beam3.txt",
                 "hyps/test.greedy.txt", "data/report.json"]:
        assert (run_dir / path).is_file(), path
    assert len((run_dir / "hyps" / "test.beam3.txt").read_text().splitlines()) == 100
    history = json.loads((run_dir / "logs" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["loss"] < history[0]["loss"]
    capsys.readouterr()

    # Unchanged inputs and config: every stage is skipped.
    assert run("all", *common) == 0
    out = capsys.readouterr().out
    assert out.count("up to date") == 3

    # A changed decoding setting reruns only evaluate.
    assert run("all", *common, "--set", "decoding.beam_size=2") == 0
    out = capsys.readouterr().out
    assert "[prepare] up to date" in out and "[train] up to date" in out
    assert "[evaluate] test BLEU" in out and (run_dir / "hyps" / "test.beam2.txt").is_file()

    # --force reruns a stage that is up to date.
    assert run("evaluate", *common, "--set", "decoding.beam_size=2", "--force") == 0
    assert "[evaluate] test BLEU" in capsys.readouterr().out

    # translate: one line out per line in.
    source = tmp_path / "in.de"
    source.write_text("Ein Hund rennt im Park.\nZwei Männer spielen Fußball.\n\n")
    assert run("translate", *common, "--input", source) == 0
    from_file = capsys.readouterr().out.splitlines()
    assert len(from_file) == 3 and from_file[2] == ""  # an empty line stays empty
    # The same from standard input.
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(source.read_bytes())))
    assert run("translate", *common) == 0
    assert capsys.readouterr().out.splitlines() == from_file
    # Bad bytes on standard input are an error naming the line, not a traceback.
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"Ein Hund.\n\xff\n")))
    assert run("translate", *common) == 1
    assert "<stdin>:2: invalid UTF-8" in capsys.readouterr().err

    # A prepare rerun with another tokenizer forgets the model trained on the old one:
    # evaluate and translate refuse to use it, and train refuses to resume it.
    assert run("prepare", *common, "--set", "tokenizer.vocab_size=500") == 0
    for stage in ("evaluate", "translate"):
        assert run(stage, *common, "--set", "tokenizer.vocab_size=500") == 1
        assert "stage 'train' has not run yet" in capsys.readouterr().err
    assert run("train", *common, "--set", "tokenizer.vocab_size=500") == 1
    assert "use --force" in capsys.readouterr().err


@pytest.mark.slow
def test_export_translates_strings_in_graph(translation_smoke_run, multi30k_dir, tmp_path):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the SentencePiece ops for loading)

    run_dir = tmp_path / "run"
    shutil.copytree(translation_smoke_run, run_dir)
    assert run("export", "--config", SMOKE, "--run-dir", run_dir, "--data-dir", multi30k_dir) == 0
    exported = tf.saved_model.load(str(run_dir / "export"))
    texts = [line for line in (run_dir / "data" / "test.src").read_text().splitlines()[:8]]
    texts += ["", "  "]  # blank sources: empty translations
    cfg = load_config(TranslationConfig, SMOKE)
    assert cfg.decoding.beam_size > 1
    source_tok, target_tok = load_tokenizers(RunDir(run_dir))
    model = keras.saving.load_model(run_dir / "checkpoints" / "best.keras")
    # translate: the config's beam search; translate_greedy: greedy search.
    got = {}
    for name, decoding in [("translate", cfg.decoding),
                           ("translate_greedy", greedy(cfg.decoding))]:
        signature = getattr(exported, name)
        got[name] = [s.decode() for s in signature(tf.constant(texts)).numpy()]
        assert got[name][-2:] == ["", ""]
        assert got[name] == translate_texts(model, source_tok, target_tok, texts, decoding,
                                            progress=False)
        assert signature(tf.zeros([0], tf.string)).numpy().tolist() == []  # empty batch
    assert_weights_saved_once(run_dir / "export", model)
    # A fresh process that imports only TensorFlow and tensorflow-text gets the same.
    assert saved_model_client("translate", run_dir / "export",
                              stdin="".join(t + "\n" for t in texts)) == got["translate"]


def test_bad_config_exits_with_message(tmp_path, capsys):
    assert run("prepare", "--config", SMOKE, "--run-dir", tmp_path, "--set", "model.celll=x") == 2
    assert "model.celll: unknown field" in capsys.readouterr().err


def test_bad_corpus_exits_with_message(toy_corpus, tmp_path, capsys):
    Path(toy_corpus["val"][1]).write_text("only one line\n")
    code = run("prepare", "--config", SMOKE, "--run-dir", tmp_path / "r", "--set", "data.corpus=files",
               "--set", f"data.paths={json.dumps(toy_corpus)}")
    assert code == 1
    err = capsys.readouterr().err
    assert "line counts differ" in err and "val.en has 1 lines" in err


def test_train_before_prepare_is_explained(tmp_path, capsys):
    assert run("train", "--config", SMOKE, "--run-dir", tmp_path) == 1
    assert "stage 'prepare' has not run yet" in capsys.readouterr().err


@pytest.mark.slow
def test_small_model_memorizes_64_pairs(multi30k_dir):
    corpus = load_multi30k("train", "de", "en", multi30k_dir)
    src, tgt = corpus.source[:64], corpus.target[:64]
    tok = SubwordTokenizer(train_sentencepiece(src + tgt, 600, "unigram"))
    cfg = load_config(TranslationConfig, SMOKE, [
        "model.embedding_dim=128", "model.attentional_dim=256", "model.encoder_units=128",
        "model.decoder_units=256", "model.dropout=0.0", "training.label_smoothing=0.0",
        "training.learning_rate=0.003", "decoding.batch_tokens=4000",
    ])
    keras.utils.set_random_seed(0)
    model = build_model(cfg, tok, tok)
    data = make_training_dataset(src, tgt, tok, tok, max_tokens=1200, max_length=80, seed=0)
    model.fit(data.repeat(), steps_per_epoch=50, epochs=8, verbose=0, shuffle=False)
    hyps = translate_texts(model, tok, tok, src, greedy(cfg.decoding), progress=False)
    scores = bleu_chrf(hyps, tgt)
    assert scores["bleu"] > 90, (scores, hyps[:3])
    assert sum(h == t for h, t in zip(hyps, tgt)) >= 58


def test_prepare_separate_vocabularies_and_dropped_pairs(toy_corpus, tmp_path):
    # One training pair is empty on the target side and one is too long: both are dropped
    # and counted; separate vocabularies give each side its own SentencePiece model.
    src, tgt = toy_corpus["train"]
    with open(src, "a", encoding="utf-8") as s, open(tgt, "a", encoding="utf-8") as t:
        s.write("ein satz ohne übersetzung .\n" + "hund " * 60 + "\n")
        t.write("\n" + "dog " * 60 + "\n")
    run_dir = tmp_path / "run"
    assert run("prepare", "--config", SMOKE, "--run-dir", run_dir, "--set", "data.corpus=files",
               "--set", f"data.paths={json.dumps(toy_corpus)}", "--set", "tokenizer.joint=false",
               "--set", "tokenizer.vocab_size=60", "--set", "data.max_length=40") == 0
    report = json.loads((run_dir / "data" / "report.json").read_text())
    assert report["train"] == {"pairs": 8, "dropped": {"empty": 1, "too_long": 1}, "shards": 1}
    assert (run_dir / "tokenizer" / "source.model").read_bytes() != \
        (run_dir / "tokenizer" / "target.model").read_bytes()


def toy_prepare_args(toy_corpus, run_dir) -> list:
    return ["--config", SMOKE, "--run-dir", run_dir, "--set", "data.corpus=files",
            "--set", f"data.paths={json.dumps(toy_corpus)}", "--set", "tokenizer.vocab_size=60"]


def test_config_yaml_is_written_only_by_a_stage_that_runs(toy_corpus, tmp_path, capsys):
    run_dir = tmp_path / "run"
    common = toy_prepare_args(toy_corpus, run_dir)
    assert run("prepare", *common) == 0
    assert json.loads((run_dir / "run.json").read_text()) == {"pipeline": "translation"}
    written = (run_dir / "config.yaml").read_bytes()
    # Up to date (training settings are not prepare's inputs): nothing is rewritten.
    assert run("prepare", *common, "--set", "training.epochs=7") == 0
    assert "[prepare] up to date" in capsys.readouterr().out
    # A failing stage leaves the recorded config alone.
    assert run("evaluate", *common, "--set", "decoding.beam_size=2") == 1
    assert "stage 'train' has not run yet" in capsys.readouterr().err
    assert (run_dir / "config.yaml").read_bytes() == written


def test_a_failed_command_leaves_no_run_directory(tmp_path, capsys):
    assert run("train", "--config", SMOKE, "--run-dir", tmp_path / "new") == 1
    assert "stage 'prepare' has not run yet" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_other_pipelines_run_directory_is_refused(tmp_path, capsys):
    from pipelines import speech

    speech_smoke = SMOKE.parent / "speech_smoke.yaml"
    owned = tmp_path / "speech_run"
    owned.mkdir()
    (owned / "run.json").write_text('{"pipeline": "speech"}')
    (owned / "config.yaml").write_text("name: s\n")
    assert run("evaluate", "--config", SMOKE, "--run-dir", owned) == 1
    err = capsys.readouterr().err
    assert "a speech run, not a translation one" in err and "Traceback" not in err
    assert (owned / "config.yaml").read_text() == "name: s\n"
    # A run from before run.json existed is recognized by its config's sections.
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "config.yaml").write_text("name: t\ntokenizer:\n  vocab_size: 100\n")
    assert speech.main(["evaluate", "--config", str(speech_smoke), "--run-dir", str(legacy)]) == 1
    assert "not a speech run" in capsys.readouterr().err
    # A file given as the run directory.
    (tmp_path / "file").write_text("x")
    assert run("train", "--config", SMOKE, "--run-dir", tmp_path / "file") == 1
    assert "the run directory is a file" in capsys.readouterr().err


def test_blank_sources_translate_to_empty_strings(toy_tokenizer, tmp_path):
    cfg = load_config(TranslationConfig, SMOKE, [
        "model.embedding_dim=8", "model.encoder_units=8", "model.decoder_units=8",
        "model.attentional_dim=8", "decoding.beam_size=2"])
    model = build_model(cfg, toy_tokenizer, toy_tokenizer)
    got = translate_texts(model, toy_tokenizer, toy_tokenizer, ["", "ein hund .", "  "],
                          cfg.decoding, progress=False)
    assert got[0] == "" and got[2] == "" and len(got) == 3
    assert translate_texts(model, toy_tokenizer, toy_tokenizer, [""],
                           greedy(cfg.decoding), progress=False) == [""]


@pytest.mark.parametrize("problem, message", [
    ("no lines", "train.de and {dir}/train.en: the train split has no lines"),
    ("blank targets", "every one of the 8 training pairs has an empty source or target side"),
    ("too long", "every one of the 8 non-empty training pairs is longer than "
                 "data.max_length=1 subwords"),
    ("small vocabulary", "tokenizer.vocab_size=10 is too small: the training text needs at least"),
])
def test_unusable_training_corpus_is_explained(toy_corpus, tmp_path, capsys, problem, message):
    src, tgt = toy_corpus["train"]
    args = toy_prepare_args(toy_corpus, tmp_path / "run")
    if problem == "no lines":
        Path(src).write_text("")
        Path(tgt).write_text("")
    elif problem == "blank targets":
        Path(tgt).write_text("\n" * 8)
    elif problem == "too long":
        args += ["--set", "data.max_length=1"]
    else:
        args += ["--set", "tokenizer.vocab_size=10"]
    assert run("prepare", *args) == 1
    err = capsys.readouterr().err
    assert message.format(dir=tmp_path) in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_more_epochs_resume_a_run_and_a_field_of_speech_training_is_refused(
        toy_translation_run, tmp_path, capsys):
    args = list(toy_translation_run)
    at = args.index("--run-dir") + 1
    shutil.copytree(args[at], tmp_path / "run")
    args[at] = str(tmp_path / "run")
    capsys.readouterr()
    # training.batch_size is speech's: refused in one line, before anything runs ...
    assert run("train", *args, "--set", "training.batch_size=7") == 2
    assert "training.batch_size: unknown field" in capsys.readouterr().err
    # ... and more epochs resume the trained run instead of refusing its checkpoints.
    assert run("train", *args, "--set", "training.epochs=2") == 0
    assert "resuming after epoch 1" in capsys.readouterr().out



def test_prepare_streams_training_pairs_into_shards_and_samples_for_the_tokenizer(
        toy_corpus, tmp_path):
    # 3 pairs per shard: the 8 toy pairs span 3 shards, and train reads back all of them;
    # SentencePiece trained on a 4-pair sample knows fewer pieces than on all 8.
    args = toy_prepare_args(toy_corpus, tmp_path / "run") + ["--set", "data.shard_pairs=3"]
    assert run("prepare", *args) == 0
    report = json.loads((tmp_path / "run" / "data" / "report.json").read_text())
    assert len(TOY_PAIRS) == 8
    assert report["train"]["shards"] == 3 and report["train"]["pairs"] == 8
    shards = verified_shards(tmp_path / "run" / "data", "train")
    read = [tuple(x.numpy().tolist() for x in pair)
            for pair in pair_dataset(shards, seed=0, shuffle=False, shuffle_buffer=1)]
    tok, _ = load_tokenizers(RunDir(tmp_path / "run"))
    # (interleaved from the shards: compared as sets)
    assert sorted(read) == sorted((tok.encode([s])[0], tok.encode([t])[0]) for s, t in TOY_PAIRS)

    sampled = toy_prepare_args(toy_corpus, tmp_path / "sampled") + [
        "--set", "tokenizer.sample_pairs=4"]
    assert run("prepare", *sampled) == 0
    small, _ = load_tokenizers(RunDir(tmp_path / "sampled"))
    assert small.vocab_size < tok.vocab_size


def test_corrupt_training_shard_is_an_error_naming_it(toy_translation_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(Path(toy_translation_run[toy_translation_run.index("--run-dir") + 1]),
                    run_dir)
    args = list(toy_translation_run)
    args[args.index("--run-dir") + 1] = str(run_dir)
    shard = run_dir / "data" / "train-00000.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-5])
    assert run("train", *args, "--force") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(shard) in err and "truncated or corrupt" in err


def test_the_translation_export_answers_an_empty_batch(toy_run_copy):
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the SentencePiece ops for loading)

    assert run("export", *toy_run_copy) == 0
    exported = tf.saved_model.load(toy_run_copy[toy_run_copy.index("--run-dir") + 1] + "/export")
    assert exported.translate(tf.zeros([0], tf.string)).numpy().tolist() == []
    assert len(exported.translate(tf.constant(["ein hund ."])).numpy()) == 1


def test_a_vocabulary_the_corpus_cannot_fill_is_a_warning(toy_corpus, tmp_path, capsys):
    args = toy_prepare_args(toy_corpus, tmp_path / "run")
    assert run("prepare", *args, "--set", "tokenizer.vocab_size=500") == 0
    report = json.loads((tmp_path / "run" / "data" / "report.json").read_text())
    assert report["source_vocab_size"] < 500
    assert (f"[prepare] warning: tokenizer.vocab_size=500, but the training text gives only "
            f"{report['source_vocab_size']} (source)") in capsys.readouterr().err
