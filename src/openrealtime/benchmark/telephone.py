"""Speech as a telephone line carries it: 300-3400 Hz, 8 kHz, G.711 µ-law or A-law.

Used by ``bench/telephone_asr.py`` and the telephone-language tests to turn the shared 16 kHz
recordings (and espeak-ng speech in other languages) into what a SIP trunk or a Twilio-style
bridge sends, and to cut single-word turns out of them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import wave
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from openrealtime.audio import g711
from openrealtime.audio.resample import resample
from openrealtime.benchmark.audio import room_tone

__all__ = [
    "Codec",
    "TelephoneTurn",
    "band_limit",
    "decode_line",
    "encode_line",
    "espeak_speech",
    "read_wav16k",
    "telephone_turn",
]

Codec = Literal["pcmu", "pcma"]
LINE_RATE = 8000
LOW_HZ, HIGH_HZ = 300.0, 3400.0
Int16 = npt.NDArray[np.int16]


def read_wav16k(path: Path) -> Int16:
    """A 16 kHz mono 16-bit WAV file's samples."""
    with wave.open(str(path)) as wav:
        if wav.getframerate() != 16000 or wav.getnchannels() != 1 or wav.getsampwidth() != 2:
            raise ValueError(f"{path} is not 16 kHz mono 16-bit")
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").copy()


def band_limit(pcm: Int16, rate: int) -> Int16:
    """The telephone band (300-3400 Hz, smooth 100 Hz edges), at 8 kHz."""
    line = resample(pcm, rate, LINE_RATE).astype(np.float64)
    n = line.size
    if n == 0:
        return np.zeros(0, dtype=np.int16)
    spectrum = np.fft.rfft(line)
    freqs = np.fft.rfftfreq(n, 1 / LINE_RATE)
    gain = np.clip((freqs - (LOW_HZ - 100)) / 200, 0, 1) * np.clip(((HIGH_HZ + 100) - freqs) / 200, 0, 1)
    filtered = np.fft.irfft(spectrum * gain, n)
    return np.clip(np.rint(filtered), -32768, 32767).astype(np.int16)


def encode_line(pcm8k: Int16, codec: Codec) -> bytes:
    codes = g711.ulaw_encode(pcm8k) if codec == "pcmu" else g711.alaw_encode(pcm8k)
    return bytes(codes.tobytes())


def decode_line(data: bytes, codec: Codec) -> Int16:
    codes = np.frombuffer(data, dtype=np.uint8)
    return g711.ulaw_decode(codes) if codec == "pcmu" else g711.alaw_decode(codes)


@dataclass(frozen=True)
class TelephoneTurn:
    """One caller turn as line bytes: lead-in, speech, then enough quiet to end the turn."""

    name: str
    reference: str
    codec: Codec
    line: bytes
    speech_seconds: float

    @property
    def seconds(self) -> float:
        return len(self.line) / LINE_RATE

    def pcm16k(self) -> Int16:
        """What the server's recogniser gets from this turn (decoded, resampled to 16 kHz)."""
        return resample(decode_line(self.line, self.codec), LINE_RATE, 16000)


def telephone_turn(
    name: str,
    speech16k: Int16,
    reference: str,
    codec: Codec,
    *,
    lead_ms: int = 600,
    trail_ms: int = 1500,
    seed: int = 1,
    gain_db: float = 0.0,
) -> TelephoneTurn:
    """``speech16k`` with room tone around it, band-limited and G.711-coded."""
    tone_source = speech16k if speech16k.size >= 2048 else np.concatenate([speech16k] * 4)
    head = room_tone(tone_source, lead_ms * 16, seed)
    tail = room_tone(tone_source, trail_ms * 16, seed + 100)
    speech = speech16k.astype(np.float64) * 10 ** (gain_db / 20)
    signal = np.concatenate([head, np.clip(speech, -32768, 32767).astype(np.int16), tail])
    line = encode_line(band_limit(signal, 16000), codec)
    return TelephoneTurn(name, reference, codec, line, speech16k.size / 16000)


def espeak_speech(text: str, voice: str, *, speed_wpm: int = 160) -> Int16:
    """``text`` spoken by espeak-ng (Debian) in ``voice`` (``es``, ``de``, ...), at 16 kHz.

    A formant synthesiser, unlike any answer voice, so a test never hears its own server.
    """
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    wav = subprocess.run(
        [binary, "-v", voice, "-s", str(speed_wpm), "--stdout"],
        input=text.encode("utf-8"),
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    with wave.open(BytesIO(wav)) as reader:
        rate = reader.getframerate()
        pcm = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2").copy()
    return resample(pcm, rate, 16000)


@dataclass
class _TurnEvents:
    """The server events of one played turn that matter for its transcripts."""

    committed: list[str] = field(default_factory=list)
    done: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    speaking: bool = False

    def note(self, event: dict[str, object]) -> None:
        kind = event.get("type")
        item = str(event.get("item_id"))
        if kind == "input_audio_buffer.speech_started":
            self.speaking = True
        elif kind == "input_audio_buffer.speech_stopped":
            self.speaking = False
        elif kind == "input_audio_buffer.committed":
            self.committed.append(item)
        elif kind == "conversation.item.input_audio_transcription.completed":
            self.done[item] = str(event.get("transcript") or "")
        elif kind == "conversation.item.input_audio_transcription.failed":
            self.done[item] = ""
            self.failures.append(str(event.get("error")))

    @property
    def finished(self) -> bool:
        return all(item in self.done for item in self.committed) and not self.speaking

    @property
    def transcripts(self) -> list[str]:
        return [self.done.get(item, "") for item in self.committed]


@dataclass
class LineResult:
    """What the server transcribed for one turn (the items its VAD committed while it played)."""

    turn: TelephoneTurn
    transcripts: list[str]
    failures: list[str]

    @property
    def text(self) -> str:
        return " ".join(t.strip() for t in self.transcripts if t.strip())


async def transcribe_over_line(
    realtime_url: str,
    api_key: str,
    turns: list[TelephoneTurn],
    *,
    language: str | None = None,
    speed: float = 1.0,
    chunk_ms: int = 40,
    timeout_s: float = 60.0,
) -> list[LineResult]:
    """Play ``turns`` into one Realtime session as G.711 (server VAD, no answers) and collect
    each turn's input transcripts. All turns must use one codec (a session has one format).
    ``language`` sets ``audio.input.transcription.language``."""
    import asyncio
    import base64
    import json
    import time

    import websockets

    codecs = {turn.codec for turn in turns}
    if len(codecs) != 1:
        raise ValueError("one codec per session")
    transcription: dict[str, str] = {"model": "whisper-1"}
    if language is not None:
        transcription["language"] = language
    update = {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "output_modalities": ["text"],
            "audio": {
                "input": {
                    "format": {"type": f"audio/{codecs.pop()}"},
                    "transcription": transcription,
                    "turn_detection": {
                        "type": "server_vad",
                        "create_response": False,
                        "silence_duration_ms": 500,
                    },
                }
            },
        },
    }
    results: list[LineResult] = []
    headers = {"Authorization": f"Bearer {api_key}"}
    async with websockets.connect(realtime_url, additional_headers=headers, max_size=None) as ws:

        async def next_event(deadline: float) -> dict[str, object] | None:
            try:
                raw = await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                return None
            event: dict[str, object] = json.loads(raw)
            if event.get("type") == "error":
                raise RuntimeError(f"server error: {event.get('error')}")
            return event

        await ws.send(json.dumps(update))
        deadline = time.monotonic() + timeout_s
        while (event := await next_event(deadline)) is not None and event.get("type") != "session.updated":
            pass
        if event is None:
            raise RuntimeError("no session.updated")
        step = LINE_RATE * chunk_ms // 1000
        for turn in turns:
            heard = _TurnEvents()
            started = time.monotonic()
            for sent, index in enumerate(range(0, len(turn.line), step)):
                chunk = turn.line[index : index + step]
                payload = {"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()}
                await ws.send(json.dumps(payload))
                due = started + (sent + 1) * chunk_ms / 1000 / speed
                while (wait := due - time.monotonic()) > 0:
                    event = await next_event(time.monotonic() + wait)
                    if event is not None:
                        heard.note(event)
            # the trailing quiet has been played: the VAD commits within its silence duration
            deadline = time.monotonic() + timeout_s
            settle = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                finished = heard.finished
                if finished and time.monotonic() > settle:
                    break
                event = await next_event(min(deadline, time.monotonic() + 0.2))
                if event is not None:
                    heard.note(event)
            results.append(LineResult(turn, heard.transcripts, heard.failures))
    return results


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float


def word_timings(whisper: object, speech16k: Int16) -> list[Word]:
    """Word start/end times in ``speech16k`` from faster-whisper's word timestamps (English)."""
    samples = speech16k.astype(np.float32) / 32768.0
    segments, _ = whisper.transcribe(  # type: ignore[attr-defined]
        samples, language="en", word_timestamps=True, beam_size=1, condition_on_previous_text=False
    )
    words: list[Word] = []
    for segment in segments:
        for word in segment.words or ():
            text = "".join(c for c in word.word.lower() if c.isalnum() or c == "'")
            if text:
                words.append(Word(text, float(word.start), float(word.end)))
    return words


def cut(speech16k: Int16, start: float, end: float, margin: float = 0.08) -> Int16:
    """The samples from ``start`` to ``end`` seconds, with a short margin and 10 ms fades."""
    a = max(0, round((start - margin) * 16000))
    b = min(speech16k.size, round((end + margin) * 16000))
    piece = speech16k[a:b].astype(np.float64)
    fade = min(160, piece.size // 2)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        piece[:fade] *= ramp
        piece[-fade:] *= ramp[::-1]
    return np.clip(np.rint(piece), -32768, 32767).astype(np.int16)


WORDS_PER_CLIP = 2
"""One-word turns: the longest words of each read clip, plus every word of the command clips."""


def load_whisper() -> Any:
    """faster-whisper's model on the embedded Whisper base (for word timestamps)."""
    from faster_whisper import WhisperModel

    from openrealtime.engines.asr.whisper import resolve_model_dir

    return WhisperModel(str(resolve_model_dir("whisper-base")), compute_type="int8", cpu_threads=1)


def references(audio_dir: Path) -> dict[str, str]:
    """The shared clips' reference transcripts by clip name (without ``.wav``)."""
    data = json.loads((audio_dir / "transcripts.json").read_text())
    return {name.removesuffix(".wav"): text for name, text in data.items()}


def clip_turns(audio_dir: Path, codec: Codec) -> list[TelephoneTurn]:
    """Every shared clip as a telephone turn."""
    return [
        telephone_turn(name, read_wav16k(audio_dir / f"{name}.wav"), text, codec, seed=i + 1)
        for i, (name, text) in enumerate(sorted(references(audio_dir).items()))
    ]


def word_turns(
    audio_dir: Path, codec: Codec, whisper: Any, words_per_clip: int = WORDS_PER_CLIP
) -> list[TelephoneTurn]:
    """Single words cut from the shared clips at Whisper's word timestamps (only words of the
    reference transcript, so a cut is always a real word of the recording): the longest words
    of each read clip and every word of the short command clips."""
    turns: list[TelephoneTurn] = []
    for i, (name, text) in enumerate(sorted(references(audio_dir).items())):
        clip = read_wav16k(audio_dir / f"{name}.wav")
        reference = set(text.split())
        words = [w for w in word_timings(whisper, clip) if w.text in reference]
        if name.startswith("librivox"):
            words = sorted(words, key=lambda w: (-len(w.text), w.start))[:words_per_clip]
        for j, word in enumerate(words):
            piece = cut(clip, word.start, word.end)
            turns.append(
                telephone_turn(f"{name}:{word.text}", piece, word.text, codec, seed=100 + 10 * i + j)
            )
    return turns
