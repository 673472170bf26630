"""The voice table's real voices: marin and cedar sound different, every voice is understood by
the server's ASR, and codes, order numbers and phone numbers are read back exactly."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator

import numpy as np
import pytest

from openrealtime.benchmark.readback import canonical, generated_codes, generated_details, read_well
from openrealtime.engines.base import PcmAudio
from openrealtime.engines.tts.voices import OPENAI_VOICES, VoiceTable, default_engines

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def transcriber() -> object:
    """The server's ASR (Whisper base, as ``ASR`` defaults to)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from openrealtime.engines.asr.whisper import WhisperTranscriber

    return WhisperTranscriber("whisper-base", cpu_threads=1)


@pytest.fixture(scope="module")
def server_table() -> VoiceTable:
    """The table the server builds with its default settings."""
    from openrealtime.config import Settings

    settings = Settings()
    return VoiceTable(default_engines(kokoro=settings.kokoro, onnx_threads=1))


@pytest.fixture(scope="module")
def kokoro_table() -> VoiceTable:
    """The table with Kokoro enabled (``KOKORO=true``): the ten names on six neural voices."""
    return VoiceTable(default_engines(kokoro=True, onnx_threads=1))


def speak(table: VoiceTable, name: str, text: str) -> tuple[np.ndarray, int]:
    synth, voice = table.resolve(name)
    chunks: Iterator[PcmAudio] = synth.synthesize(text, voice=voice)
    return np.concatenate(list(chunks)), synth.sample_rate


def hear(transcriber: object, audio: np.ndarray, rate: int, language: str = "en") -> str:
    import soxr

    pcm = soxr.resample(audio.astype(np.float32) / 32768.0, rate, 16000).astype(np.float32)
    return str(transcriber.transcribe(pcm, language=language).text)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- distinct voices


def median_pitch(audio: np.ndarray, rate: int) -> float:
    """Median F0 (Hz) of the voiced 40 ms frames, by normalised autocorrelation (60-400 Hz)."""
    x = audio.astype(np.float64) / 32768.0
    frame, hop = int(0.04 * rate), int(0.01 * rate)
    lo, hi = int(rate / 400), int(rate / 60)
    loudness = np.sqrt(np.mean(x**2)) if len(x) else 0.0
    pitches = []
    for start in range(0, len(x) - frame, hop):
        seg = x[start : start + frame] - x[start : start + frame].mean()
        if np.sqrt(np.mean(seg**2)) < 0.5 * loudness:
            continue
        ac = np.correlate(seg, seg, mode="full")[frame - 1 :]
        if ac[0] <= 0:
            continue
        ac = ac / ac[0]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.5:
            pitches.append(rate / lag)
    assert len(pitches) > 20, "too few voiced frames"
    return float(np.median(pitches))


def test_marin_and_cedar_are_different_voices(kokoro_table: VoiceTable) -> None:
    marin, cedar = kokoro_table.spec("marin"), kokoro_table.spec("cedar")
    assert marin.ref != cedar.ref
    text = "Thanks for calling. Your package will arrive on Friday morning."
    f_marin = median_pitch(*speak(kokoro_table, "marin", text))
    f_cedar = median_pitch(*speak(kokoro_table, "cedar", text))
    # a female and a male voice: typically ~200+ Hz against ~110 Hz
    assert f_marin > 1.4 * f_cedar, (f_marin, f_cedar)
    assert f_marin > 160 and f_cedar < 150, (f_marin, f_cedar)


def test_the_names_use_distinct_neural_voices(kokoro_table: VoiceTable) -> None:
    rows = {row["name"]: row for row in kokoro_table.describe()}
    neural = {(r["engine"], r["voice"]) for r in rows.values() if r["neural"]}
    assert len(neural) >= 4, neural
    assert rows["marin"]["neural"] and rows["cedar"]["neural"]
    assert all("en" in r["languages"] for r in rows.values())


# ---------------------------------------------------------------------------- intelligibility

SENTENCES = [
    "Please call me back when you get home tonight.",
    "Your package was delivered to the front door this morning.",
    "Thank you for calling, how can I help you today?",
]


@pytest.mark.parametrize("table_name", ["server_table", "kokoro_table"])
def test_every_voice_is_understood_by_the_asr(
    table_name: str, request: pytest.FixtureRequest, transcriber: object
) -> None:
    from openrealtime.engines.asr.wer import corpus_wer

    table: VoiceTable = request.getfixturevalue(table_name)
    seen: set[str] = set()
    for name in OPENAI_VOICES:
        ref = table.spec(name).ref
        if ref in seen:
            continue
        seen.add(ref)
        hyps = [hear(transcriber, *speak(table, name, s)) for s in SENTENCES]
        score = corpus_wer(zip(SENTENCES, hyps, strict=True))
        # neural voices measured 0-2 %, espeak-ng's robotic ones 2-21 %
        limit = 0.1 if table.describe()[OPENAI_VOICES.index(name)]["neural"] else 0.3
        assert score <= limit, (name, ref, hyps)


# ---------------------------------------------------------------------------- languages

SPANISH = ["Buenos días, ¿en qué puedo ayudarle hoy?", "Su pedido llegará el viernes por la mañana."]


@pytest.mark.parametrize(("table_name", "engine"), [("server_table", "espeak"), ("kokoro_table", "kokoro")])
def test_a_session_voice_answers_in_spanish(
    table_name: str, engine: str, request: pytest.FixtureRequest, transcriber: object
) -> None:
    """cedar speaks only English on Piper: in Spanish a stand-in of its gender speaks."""
    from openrealtime.engines.asr.wer import corpus_wer

    table: VoiceTable = request.getfixturevalue(table_name)
    synth, voice = table.resolve("cedar", language="es")
    assert synth.name == engine
    hyps = [
        hear(transcriber, np.concatenate(list(synth.synthesize(s, voice=voice))), synth.sample_rate, "es")
        for s in SPANISH
    ]
    # measured: Kokoro jm_kumo 7 %; espeak-ng es+klatt 33 % (robotic, but understood)
    assert corpus_wer(zip(SPANISH, hyps, strict=True)) <= (0.25 if engine == "kokoro" else 0.5), hyps


# ---------------------------------------------------------------------------- codes read back

CODE_MISSES_ALLOWED = 4
"""Of 50. Measured with Piper joe and Whisper base in eight runs with spelling words (README,
"Voices"): 46-49 exact, median 48.5 (97 %; the issue's target is 95 %). Piper samples
its noise afresh on every call, so single runs spread; the bound is the measured floor, below
which a change has made codes harder to hear."""
NUMBER_MISSES_ALLOWED = 2
"""Of the 20 order and phone numbers: 0 or 1 in most runs, 2 in one (a digit of a repeated
pair dropped by Whisper, "six six zero" heard as "assets 6600")."""


def test_fifty_codes_are_read_back_exactly(server_table: VoiceTable, transcriber: object) -> None:
    """Codes spoken by the default voice (``marin``) and transcribed by the server's ASR,
    exact after a listener's normalisation (``canonical``): 97 % in the median run. The transcript the client
    sees keeps the code as written; only the audio spells it (``normalize.spell_code``)."""
    cases = generated_codes()
    assert len(cases) == 50
    misses = []
    for sentence, code in cases:
        heard = hear(transcriber, *speak(server_table, "marin", sentence))
        if canonical(code) not in canonical(heard):
            misses.append((code, heard))
    numbers = [m for m in misses if not re.search(r"[A-Z]", m[0])]
    assert len(numbers) <= NUMBER_MISSES_ALLOWED, numbers
    assert len(misses) <= CODE_MISSES_ALLOWED, misses


def test_addresses_amounts_and_dates_are_read_back(server_table: VoiceTable, transcriber: object) -> None:
    """E-mail addresses, amounts and dates as the default voice reads them (``normalize``)."""
    misses = []
    for kind, sentence, written in generated_details():
        heard = hear(transcriber, *speak(server_table, "marin", sentence))
        if not read_well(kind, written, heard):
            misses.append((kind, written, heard))
    assert len(misses) <= 3, misses  # of 12; measured 9-11 read well in eight runs


# ---------------------------------------------------------------------------- verbatim text

LEGAL = (
    "This ticket is non-refundable after 24 hours; changes cost $50 per passenger and are "
    "subject to the conditions of carriage."
)
"""Without homophones ("fare" was written back as "fair": the words are exact, the sound cannot
tell them apart)."""


def test_a_verbatim_tool_text_is_spoken_word_for_word(server_table: VoiceTable, transcriber: object) -> None:
    """A function result's exact words, put in place of the model's marker, reach the caller
    word for word through the default voice (normaliser included) and the server's ASR."""
    from openrealtime.core.verbatim import VerbatimExpander, marker, render_tool_output
    from openrealtime.engines.asr.wer import wer
    from openrealtime.engines.tts.normalize import normalize_for_speech

    output = json.dumps({"status": "booked", "verbatim": {"terms": LEGAL}})
    shown, texts = render_tool_output(output, "call_19")
    (marker_id,) = texts
    assert marker(marker_id) in shown
    expander = VerbatimExpander(texts)
    answer = "".join(
        expander.push(piece) for piece in ("Booked. ", marker(marker_id)[:5], marker(marker_id)[5:])
    )
    answer += expander.flush()
    assert answer == f"Booked. {LEGAL}"
    # the words the voice is given are the exact words (the normaliser only writes out "24"
    # and "$50"); what the caller hears goes through Whisper base, which wrote "and are" back
    # as "and or" in one run of three, and on AVX-512 kernels also "non-refundable" as "not
    # refundable": two near-homophones of 23 words at most
    assert wer(f"Booked. {LEGAL}", normalize_for_speech(answer)).errors == 0
    heard = hear(transcriber, *speak(server_table, "marin", LEGAL))
    assert wer(LEGAL, heard).errors <= 2, heard  # of 23 words
