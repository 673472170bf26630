"""The real TTS engines: audible, plausibly long, speed-aware, cancellable, intelligible."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import numpy as np
import pytest

from openrealtime.engines.base import CancelToken, PcmAudio, Synthesizer
from openrealtime.engines.tts.chunker import ClauseChunker
from openrealtime.engines.tts.espeak import EspeakSynthesizer
from openrealtime.engines.tts.piper import DEFAULT_VOICE, PiperSynthesizer
from openrealtime.engines.tts.voices import VoiceTable, default_engines

SENTENCE = "The quick brown fox jumps over the lazy dog."
PARAGRAPH = (
    "Thanks for calling. I can help you with that. "
    "Your order will arrive on Tuesday. Is there anything else I can do for you today?"
)


def collect(chunks: Iterator[PcmAudio]) -> list[PcmAudio]:
    out = list(chunks)
    for chunk in out:
        assert chunk.dtype == np.int16 and chunk.ndim == 1
    return out


def seconds(chunks: list[PcmAudio], rate: int) -> float:
    return sum(len(c) for c in chunks) / rate


def rms(chunks: list[PcmAudio]) -> float:
    audio = np.concatenate(chunks).astype(np.float64)
    return float(np.sqrt(np.mean(audio**2)))


@pytest.fixture(scope="module")
def piper() -> PiperSynthesizer:
    engine = PiperSynthesizer(onnx_threads=1)
    engine.preload()
    return engine


@pytest.fixture(scope="module")
def espeak() -> EspeakSynthesizer:
    assert EspeakSynthesizer.available(), "espeak-ng missing: run scripts/system-deps.sh"
    return EspeakSynthesizer()


@pytest.fixture(scope="module")
def kokoro() -> Synthesizer:
    pytest.importorskip("kokoro_onnx", reason="Kokoro is optional: pip install kokoro-onnx==0.6.1")
    from openrealtime.engines.assets import AssetError
    from openrealtime.engines.tts.kokoro import KokoroSynthesizer

    try:
        engine = KokoroSynthesizer(onnx_threads=1)
    except AssetError as exc:
        pytest.skip(f"Kokoro weights not installed: {exc}")
    return engine


def check_engine(engine: Synthesizer, voice: str) -> None:
    """Non-silent audio of plausible length; faster speech is shorter; cancel stops early."""
    normal = collect(engine.synthesize(SENTENCE, voice=voice))
    dur = seconds(normal, engine.sample_rate)
    assert 1.2 < dur < 6.0, dur
    assert rms(normal) > 500, "audio is (near) silent"

    fast = seconds(collect(engine.synthesize(SENTENCE, voice=voice, speed=1.5)), engine.sample_rate)
    slow = seconds(collect(engine.synthesize(SENTENCE, voice=voice, speed=0.5)), engine.sample_rate)
    assert fast < dur * 0.85 < dur < slow * 0.85, (fast, dur, slow)

    full = seconds(collect(engine.synthesize(PARAGRAPH, voice=voice)), engine.sample_rate)
    cancel = CancelToken()
    got: list[PcmAudio] = []
    for chunk in engine.synthesize(PARAGRAPH, voice=voice, cancel=cancel):
        got.append(chunk)
        cancel.cancel()
    assert len(got) == 1
    assert seconds(got, engine.sample_rate) < full * 0.6

    pre_cancelled = CancelToken()
    pre_cancelled.cancel()
    assert list(engine.synthesize(PARAGRAPH, voice=voice, cancel=pre_cancelled)) == []
    assert list(engine.synthesize("  ", voice=voice)) == []


# ---------------------------------------------------------------------------- piper


def test_piper_reports_the_voice_sample_rate(piper: PiperSynthesizer) -> None:
    from openrealtime.engines.assets import resolve

    config = json.loads(resolve("piper-joe").with_suffix(".onnx.json").read_text())
    assert piper.sample_rate == config["audio"]["sample_rate"] == 22050
    assert [v.id for v in piper.voices()] == [DEFAULT_VOICE]


def test_piper_engine(piper: PiperSynthesizer) -> None:
    check_engine(piper, DEFAULT_VOICE)


def test_piper_streams_sentence_by_sentence(piper: PiperSynthesizer) -> None:
    chunks = collect(piper.synthesize(PARAGRAPH, voice=DEFAULT_VOICE))
    assert len(chunks) == 4


def test_piper_user_voice_files(tmp_path: os.PathLike[str]) -> None:
    """A user voice folder is registered under its file name; another rate is resampled."""
    from pathlib import Path

    from openrealtime.engines.assets import resolve

    src = resolve("piper-joe")
    folder = Path(tmp_path)
    (folder / "en_US-copy-low.onnx").symlink_to(src)
    config = json.loads(src.with_suffix(".onnx.json").read_text())
    config["audio"]["sample_rate"] = 16000  # pretend: the same network declared at 16 kHz
    (folder / "en_US-copy-low.onnx.json").write_text(json.dumps(config))
    engine = PiperSynthesizer([folder], onnx_threads=1)
    assert [v.id for v in engine.voices()] == [DEFAULT_VOICE, "en_US-copy-low"]
    assert engine.sample_rate == 22050
    base = seconds(collect(engine.synthesize(SENTENCE, voice=DEFAULT_VOICE)), 22050)
    copy = seconds(collect(engine.synthesize(SENTENCE, voice="en_US-copy-low")), 22050)
    # Same samples declared at 16 kHz last 22050/16000 times longer once resampled.
    assert copy == pytest.approx(base * 22050 / 16000, rel=0.15)
    with pytest.raises(ValueError, match="unknown Piper voice"):
        engine.synthesize(SENTENCE, voice="nobody")
    with pytest.raises(ValueError, match="single speaker"):
        engine.synthesize(SENTENCE, voice=DEFAULT_VOICE + "#2")


# ---------------------------------------------------------------------------- espeak


def test_espeak_engine(espeak: EspeakSynthesizer) -> None:
    check_engine(espeak, "en-us+f5")


def test_espeak_voices_and_pitch(espeak: EspeakSynthesizer) -> None:
    ids = {v.id for v in espeak.voices()}
    assert {"en-us", "en-gb", "en-gb-x-rp"} <= ids
    assert espeak.has_voice("en-us+m3") and espeak.has_voice("en-gb+f2")
    assert not espeak.has_voice("en-us+nope") and not espeak.has_voice("--stdout")
    with pytest.raises(ValueError, match="unknown espeak-ng voice"):
        espeak.synthesize("hi", voice="xx-zz")
    low = np.concatenate(collect(espeak.synthesize("Hello", voice="en-us", pitch=10)))
    high = np.concatenate(collect(espeak.synthesize("Hello", voice="en-us", pitch=90)))
    assert not np.array_equal(low, high)
    # espeak-ng ignores variants on "en-gb"; the engine maps it to the same British voice "en".
    plain = np.concatenate(collect(espeak.synthesize("Hello", voice="en-gb")))
    female = np.concatenate(collect(espeak.synthesize("Hello", voice="en-gb+f2")))
    assert not np.array_equal(plain, female)


def test_espeak_text_is_never_an_option(espeak: EspeakSynthesizer) -> None:
    chunks = collect(espeak.synthesize("--version -v xx", voice="en-us"))
    assert seconds(chunks, espeak.sample_rate) > 0.5


# ---------------------------------------------------------------------------- kokoro


@pytest.mark.slow
def test_kokoro_engine(kokoro: Synthesizer) -> None:
    assert kokoro.sample_rate == 24000
    assert {v.id for v in kokoro.voices()} == {
        "jf_alpha",
        "jf_gongitsune",
        "jf_nezumi",
        "jf_tebukuro",
        "jm_kumo",
    }
    check_engine(kokoro, "jf_alpha")


@pytest.mark.slow
def test_kokoro_speaks_other_languages_and_repeats_short_pieces_from_cache(kokoro: Synthesizer) -> None:
    from openrealtime.engines.tts.kokoro import KokoroSynthesizer

    assert isinstance(kokoro, KokoroSynthesizer)
    assert kokoro.languages("jf_alpha") == ("en", "pt") and "es" in kokoro.languages("jm_kumo")
    spanish = collect(kokoro.synthesize("Buenos días, ¿en qué puedo ayudarle?", voice="jm_kumo", lang="es"))
    assert seconds(spanish, kokoro.sample_rate) > 1.0 and rms(spanish) > 500
    assert kokoro.phonemize("Hola.", "es") != kokoro.phonemize("Hola.", "en-us")
    with pytest.raises(ValueError, match="does not speak"):
        kokoro.synthesize("Hallo.", voice="jf_alpha", lang="xx")
    first = np.concatenate(collect(kokoro.synthesize("Sure, let me check.", voice="jf_alpha")))
    again = np.concatenate(collect(kokoro.synthesize("Sure, let me check.", voice="jf_alpha")))
    assert np.array_equal(first, again)


# ---------------------------------------------------------------------------- voice table


def test_default_voice_table_speaks_every_builtin_name() -> None:
    table = VoiceTable(default_engines(onnx_threads=1))
    for row in table.describe():
        synth, voice = table.resolve(row["name"])
        chunks = collect(synth.synthesize("Hi.", voice=voice))
        assert chunks and synth.sample_rate == row["sample_rate"]


# ---------------------------------------------------------------------------- intelligibility


def transcribe_all(audios: list[tuple[np.ndarray, int]]) -> list[str]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import soxr
    from faster_whisper import WhisperModel

    from openrealtime.engines.assets import resolve

    model = WhisperModel(str(resolve("whisper-tiny.en")), device="cpu", compute_type="int8", cpu_threads=1)
    texts = []
    for audio, rate in audios:
        pcm16k = soxr.resample(audio.astype(np.float32) / 32768.0, rate, 16000)
        segments, _ = model.transcribe(pcm16k, language="en", beam_size=1)
        texts.append(" ".join(s.text for s in segments))
    return texts


@pytest.mark.slow
def test_piper_is_intelligible_through_asr(piper: PiperSynthesizer) -> None:
    from openrealtime.engines.asr.wer import corpus_wer

    sentences = [
        "Please call me back when you get home tonight.",
        "I would like to book a table for four people at seven o'clock.",
        "The weather today is sunny with a light breeze from the west.",
        "Your package was delivered to the front door this morning.",
        "Thank you for calling, how can I help you today?",
    ]
    # Through the chunker, as the session does: first clause, then sentences.
    pieces = ClauseChunker().feed([" ".join(sentences)])
    audio = np.concatenate([c for piece in pieces for c in piper.synthesize(piece, voice=DEFAULT_VOICE)])
    per_sentence = [np.concatenate(collect(piper.synthesize(s, voice=DEFAULT_VOICE))) for s in sentences]
    hyps = transcribe_all([(a, piper.sample_rate) for a in per_sentence])
    score = corpus_wer(zip(sentences, hyps, strict=True))
    assert score <= 0.15, list(zip(sentences, hyps, strict=True))
    whole = transcribe_all([(audio, piper.sample_rate)])[0]
    assert corpus_wer([(" ".join(sentences), whole)]) <= 0.15, whole
