"""The page in a real browser: Debian's Chromium, driven by Selenium (chromium-driver),
with a fake microphone playing a test wav. Skipped, saying why, without them (``make
browser`` installs them when run as root). The screenshot is saved in test-artifacts/."""

from __future__ import annotations

import shutil
import time

import librosa
import numpy as np
import pytest
import soundfile as sf

from data_prep.manifest import read_manifest
from pipelines import speech, translation
from tests.helpers import ROOT

CONFIGS = ROOT / "pipelines" / "configs"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def steady_utterance(run) -> str:
    """The test utterance with the most words whose streamed transcript stays the same
    when the audio starts a fraction of a 10 ms hop later, or goes through 48 kHz.

    The browser's audio is the wav at some offset (capture starts a moment after the
    fake microphone does), through Chromium's resampling (to the device rate and back
    to the page's 8 kHz AudioContext); the barely trained smoke model changes many of
    its transcripts for either, so the test compares only one that does not.
    """
    from pipelines.config import load_config
    from pipelines.run_dir import RunDir
    from pipelines.speech.config import SpeechConfig
    from pipelines.speech.data import vocabulary
    from pipelines.speech.streaming import stream_step, stream_utterance, tflite_runner

    run = RunDir(run)
    cfg = load_config(SpeechConfig, run.path("config.yaml"))
    step, vocab = stream_step(cfg, run), vocabulary(cfg)
    runner = tflite_runner(run.path("tflite", "stream_int8.tflite"), step)
    entries = sorted(read_manifest(run.path("data", "test.jsonl")),
                     key=lambda e: -len(e["text"].split()))
    for entry in entries:
        audio, rate = sf.read(entry["audio_filepath"], dtype="float32")
        round_trip = librosa.resample(librosa.resample(audio, orig_sr=rate, target_sr=48000),
                                      orig_sr=48000, target_sr=rate)
        variants = [np.r_[np.zeros(offset, np.float32), audio] for offset in (0, 20, 40, 60)]
        texts = {stream_utterance(step, runner, [a], vocab) for a in [*variants, round_trip]}
        if len(texts) == 1 and texts != {""}:
            return entry["audio_filepath"]
    pytest.skip("the smoke model has no test utterance that it transcribes steadily")


def browser(wav, profile):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                 "--window-size=1000,1100",
                 # A microphone that plays the wav once (then silence), granted without asking.
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-audio-capture={wav}%noloop"]:
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(DRIVER))


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium and chromium-driver are not "
                    "installed (make browser, as root: apt-get install chromium chromium-driver)")
def test_the_page_transcribes_the_microphone_and_files_and_translates_typing(served, capsys, tmp_path):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server, translation_run, speech_run = served
    # A test utterance with half a second of silence each side: the browser starts
    # capturing a moment after the fake microphone starts playing.
    audio, rate = sf.read(steady_utterance(speech_run), dtype="int16")
    silence = np.zeros(rate // 2, np.int16)
    wav = tmp_path / "speech.wav"
    sf.write(wav, np.concatenate([silence, audio, silence]), rate, subtype="PCM_16")
    capsys.readouterr()
    assert speech.main(["stream", "--config", str(CONFIGS / "speech_smoke_streaming.yaml"),
                        "--run-dir", str(speech_run), "--tflite", "--int8", str(wav)]) == 0
    expected_transcript = capsys.readouterr().out.strip()
    assert expected_transcript
    (tmp_path / "wavs.txt").write_text(f"{wav}\n")
    assert speech.main(["transcribe", "--config", str(CONFIGS / "speech_smoke_streaming.yaml"),
                        "--run-dir", str(speech_run), "--input", str(tmp_path / "wavs.txt")]) == 0
    expected_file_text = capsys.readouterr().out.strip()
    sentence = "Ein Hund läuft auf dem Rasen."
    (tmp_path / "de.txt").write_text(sentence + "\n", encoding="utf-8")
    assert translation.main(["translate", "--config", str(CONFIGS / "translation_smoke.yaml"),
                             "--run-dir", str(translation_run),
                             "--input", str(tmp_path / "de.txt")]) == 0
    expected_translation = capsys.readouterr().out.strip()

    driver = browser(wav, tmp_path / "profile")
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(server.url)
        wait.until(lambda d: "WER" in d.find_element(By.ID, "models").text)
        assert "BLEU" in driver.find_element(By.ID, "models").text
        driver.find_element(By.ID, "mic").click()
        seen = set()
        deadline = time.time() + len(audio) / rate + 1.5
        while time.time() < deadline:  # the wav plays in real time
            seen.add(driver.find_element(By.ID, "partial").text)
            time.sleep(0.05)
        driver.find_element(By.ID, "mic").click()  # stop: the page sends the end event
        wait.until(lambda d: d.find_element(By.ID, "final").text)
        shown = driver.find_element(By.ID, "final").text
        assert len(seen - {""}) >= 2  # partial transcripts showed while it played
        driver.find_element(By.ID, "source").send_keys(sentence)  # translated as one types
        try:  # a pause in the typing may first show the translation of a part of it
            wait.until(lambda d: d.find_element(By.ID, "translation").text == expected_translation)
        except TimeoutException:
            pass  # the assertion below shows what the page shows
        translated = driver.find_element(By.ID, "translation").text
        driver.find_element(By.ID, "audio-file").send_keys(str(wav))  # the file upload
        wait.until(lambda d: d.find_element(By.ID, "file-text").text not in ("", "…"))
        file_text = driver.find_element(By.ID, "file-text").text
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "serve_page.png"))
        assert driver.find_element(By.ID, "status").text == ""
    finally:
        driver.quit()
    assert shown == expected_transcript
    assert translated == expected_translation
    assert file_text == expected_file_text
