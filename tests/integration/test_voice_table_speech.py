"""The voice table's real voices: marin and cedar sound different, every voice is understood by
the server's ASR, and codes, order numbers and phone numbers are read back exactly."""

from __future__ import annotations

import datetime
import os
import random
import re
import string
from collections.abc import Iterator

import numpy as np
import pytest

from openrealtime.engines.base import PcmAudio
from openrealtime.engines.tts.normalize import SPELLING_ALPHABET, spell_code
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

LETTERS = "".join(c for c in string.ascii_uppercase if c not in "IO")  # as booking codes avoid them
LETTER_WORDS = {
    "ay": "a", "eh": "a", "bee": "b", "be": "b", "see": "c", "sea": "c", "cee": "c", "dee": "d",
    "ee": "e", "eff": "f", "ef": "f", "gee": "g", "jee": "g", "aitch": "h", "jay": "j", "kay": "k",
    "el": "l", "em": "m", "en": "n", "pee": "p", "cue": "q", "queue": "q", "are": "r", "ar": "r",
    "ess": "s", "tee": "t", "tea": "t", "you": "u", "vee": "v", "ex": "x", "why": "y", "zee": "z",
    "zed": "z", "zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "dash": "", "hyphen": "",
    "for": "4", "to": "2", "too": "2", "ate": "8", "won": "1", "number": "", "mic": "m",
}  # fmt: skip
"""Whisper writes a spelled-out character as itself, its name or a homophone (also of a
spelling word: "mic"); "number" only announces digits."""

SPELLING_WORDS = {
    **{word.lower(): letter.lower() for letter, word in SPELLING_ALPHABET.items()},
    "alpha": "a", "alfa": "a", "bravo": "b", "charlie": "c", "delta": "d", "echo": "e",
    "foxtrot": "f", "golf": "g", "hotel": "h", "india": "i", "juliet": "j", "juliett": "j",
    "kilo": "k", "lima": "l", "mike": "m", "november": "n", "oscar": "o", "papa": "p",
    "quebec": "q", "romeo": "r", "sierra": "s", "tango": "t", "uniform": "u", "victor": "v",
    "whiskey": "w", "whisky": "w", "xray": "x", "yankee": "y", "zulu": "z",
}  # fmt: skip
"""Spelling-alphabet words a listener maps back to letters: the server's own alphabet and the
NATO one."""

_AS_IN = re.compile(
    r"(?:\b(?P<glued>[a-z0-9]*?)[a-z][.,]?\s+)?\b(?:as|is)\s*(?:in|an|a)\s+(?P<word>"
    + "|".join(SPELLING_WORDS)
    + r")\b"
)
"""``<letter> as in <word>``: the letter is the word's, whatever the letter was heard as; a
letter Whisper glued to what came before ("xd as in Boston") is replaced, the rest kept."""


CODE_MISSES_ALLOWED = 2
"""Of 50 (>= 95 % exact); measured 0-2 with Piper joe and Whisper base (README, "Voices")."""


def generated_codes(seed: int = 19) -> list[tuple[str, str]]:
    """50 (sentence, expected characters): confirmation codes, order numbers, phone numbers."""
    rng = random.Random(seed)
    out = []
    for i in range(30):
        if i % 2:
            code = "".join(rng.choice(LETTERS + string.digits) for _ in range(6))
        else:
            head = "".join(rng.choice(LETTERS) for _ in range(2)) + rng.choice(string.digits)
            code = f"{head}-{rng.randint(1000, 9999)}"
        if not (re.search(r"\d", code) and re.search(r"[A-Z]", code)):
            code = code[:-1] + "7"
        out.append((f"Your confirmation code is {code}.", code))
    for _ in range(10):
        number = str(rng.randint(10_000_000, 99_999_999))
        out.append((f"Your order number is {number}.", number))
    for _ in range(10):
        phone = f"({rng.randint(200, 999)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}"
        out.append((f"You can reach us at {phone}.", phone))
    return out


def canonical(text: str) -> str:
    """Letters and digits only, as a listener writes down what was spelled: letter names,
    homophones and spelling words ("N as in November", "November") become their characters,
    spoken digits digits, "dash" and "number" nothing."""
    text = re.sub(r"\bx[ -]ray\b", "xray", text.lower())
    text = re.sub(r"\bdouble[ -]?(?:you|u)\b", " w ", text)
    text = _AS_IN.sub(lambda m: f" {m.group('glued') or ''} {SPELLING_WORDS[m.group('word')]} ", text)
    words = re.findall(r"[a-z]+|\d+", text)
    out = []
    for w in words:
        if w in SPELLING_WORDS:
            out.append(SPELLING_WORDS[w])
        elif len(w) > 1 and not w.isdigit():
            out.append(LETTER_WORDS.get(w, w))
        else:
            out.append(w)
    return "".join(out)


def test_fifty_codes_are_read_back_exactly(server_table: VoiceTable, transcriber: object) -> None:
    """Codes spoken by the default voice (``marin``) and transcribed by the server's ASR:
    >= 95 % exact after a listener's normalisation (``canonical``). The transcript the client
    sees keeps the code as written; only the audio spells it (``normalize.spell_code``)."""
    cases = generated_codes()
    assert len(cases) == 50
    misses = []
    for sentence, code in cases:
        heard = hear(transcriber, *speak(server_table, "marin", sentence))
        if canonical(code) not in canonical(heard):
            misses.append((code, heard))
    numbers = [m for m in misses if not re.search(r"[A-Z]", m[0])]
    assert len(numbers) <= 1, numbers  # 20 order and phone numbers
    assert len(misses) <= CODE_MISSES_ALLOWED, misses


def generated_details(seed: int = 23) -> list[tuple[str, str, str]]:
    """(kind, sentence, what was written) for e-mail addresses, amounts and dates."""
    rng = random.Random(seed)
    names = ["john.smith", "maria", "support", "anna.lee", "peter_parker", "orders"]
    domains = ["example.com", "shop.org", "mail.net", "airline.com"]
    out = []
    for name, domain in zip(rng.sample(names, 4), domains, strict=True):
        address = f"{name}@{domain}"
        out.append(("email", f"Please write to {address} for help.", address))
    for _ in range(4):
        amount = f"${rng.randint(2, 2500):,}.{rng.randint(10, 99)}"
        out.append(("amount", f"The total comes to {amount} today.", amount))
    for _ in range(4):
        date = f"{rng.randint(2021, 2029)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        out.append(("date", f"Your appointment is on {date}.", date))
    return out


def read_well(kind: str, written: str, heard: str) -> bool:
    """Whether ``heard`` carries ``written``: an address's letters in order ("dot"/"at" or
    their signs), an amount's digits and currency, a date's month, day and year."""
    low = heard.lower()
    if kind == "email":
        letters = re.sub(r"\b(?:dot|at|underscore)\b|[^a-z0-9]", "", low)
        return re.sub(r"[^a-z0-9]", "", written) in letters
    if kind == "amount":
        return re.sub(r"\D", "", written) in re.sub(r"\D", "", low) and ("$" in low or "dollar" in low)
    year, month, day = (int(p) for p in written.split("-"))
    month_name = datetime.date(year, month, 1).strftime("%B").lower()
    return (
        month_name in low and str(year) in low and re.search(rf"\b{day}(?:st|nd|rd|th)?\b", low) is not None
    )


def test_addresses_amounts_and_dates_are_read_back(server_table: VoiceTable, transcriber: object) -> None:
    """E-mail addresses, amounts and dates as the default voice reads them (``normalize``)."""
    misses = []
    for kind, sentence, written in generated_details():
        heard = hear(transcriber, *speak(server_table, "marin", sentence))
        if not read_well(kind, written, heard):
            misses.append((kind, written, heard))
    assert len(misses) <= 1, misses  # of 12


def test_canonical_form() -> None:
    assert canonical("Your confirmation code is A, 7, X, dash 4, 9, 2, 1.").endswith("a7x4921")
    assert canonical("The code is ay-seven-ex 4921").endswith("a7x4921")
    assert canonical("W, double you") == "ww"
    assert canonical("(555) 123-4567") == "5551234567"
    assert canonical("and as in November, number 8") == "n8"
    assert canonical("B is in Boston. D. As in David, Zulu, x-ray") == "bdzx"
    assert canonical("he is an echo, 29, 77") == "e2977"
    assert canonical("the Asin Boston, 56, mic") == "b56m"
    assert canonical("xd as in Boston, 56d is in David") == "xb56d"
    assert canonical(" ".join(spell_code("NV8-2977").split(","))) == "nv82977"
