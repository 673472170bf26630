"""The assistant's own answer (Piper joe) fed back through a simulated room at -6 dB, 50-250 ms
late, must not start a turn after echo cancellation and the different-talker gate; a real
utterance at the echo's level must, within 300 ms of its onset (echo path learnt: the
session's second answer). Silero + the server_vad segmenter decide, 32 ms frames.

The session-level test (over a WebSocket) needs the canceller wired into the runtime's
listening path; this one exercises the engine side end to end on real audio.
"""

from __future__ import annotations

import numpy as np
import pytest

from openrealtime.audio.echo import EchoCanceller, EchoSettings
from openrealtime.audio.resample import int16_to_float32, resample
from openrealtime.benchmark.echo_path import echo_of, mix_at, rms_db, room_impulse_response
from openrealtime.core.turns import ServerVadConfig, SpeechSegmenter, SpeechStarted
from openrealtime.engines.vad.silero import SileroVAD
from tests.speech_audio import REFERENCE_EDGES, load_clip, room_tone

pytestmark = pytest.mark.slow  # the shared clips are on every machine: nothing is skipped

RATE = 16_000
FRAME = 512
ANSWERS = [
    "Sure. Your order left the warehouse this morning and should arrive on Friday between nine and noon.",
    "The weather in Paris is sunny today, with a light breeze and about twenty two degrees.",
]


@pytest.fixture(scope="module")
def answers() -> list[np.ndarray]:
    from openrealtime.engines.tts.piper import DEFAULT_VOICE, PiperSynthesizer

    tts = PiperSynthesizer()
    out = []
    for text in ANSWERS:
        pcm = np.concatenate(list(tts.synthesize(text, voice=DEFAULT_VOICE)))
        out.append(resample(int16_to_float32(pcm), tts.sample_rate, RATE))
    return out


def session(
    vad: SileroVAD, answers: list[np.ndarray], delay_ms: float, seed: int, talker: str | None = None
) -> tuple[list[float], float | None, float]:
    """Both answers 1 s apart; returns (speech_started times, talker onset, second answer start)."""
    starts, position, played_parts = [], RATE // 2, []
    for answer in answers:
        starts.append(position)
        played_parts.append(answer)
        position += answer.size + RATE
    total = (position + RATE // 2) // FRAME * FRAME
    played = np.zeros(total, dtype=np.float32)
    for begin, answer in zip(starts, played_parts, strict=True):
        played[begin : begin + answer.size] = answer
    ir = room_impulse_response(RATE, rt60_s=0.3, seed=seed)
    echo = echo_of(played, RATE, delay_ms=delay_ms, level_db=-6.0, ir=ir)
    base = load_clip("librivox-0880")
    mic = echo + (room_tone(base, total, seed) / 32768.0).astype(np.float32)
    onset = None
    if talker is not None:
        at = starts[1] + RATE // 2
        mic = mix_at(mic, (load_clip(talker) / 32768.0).astype(np.float32), at, rms_db(echo))
        onset = at * 1000 / RATE + REFERENCE_EDGES[talker][0]
    canceller = EchoCanceller(RATE, EchoSettings.for_noise_reduction("far_field"))
    for begin, answer in zip(starts, played_parts, strict=True):
        for i in range(0, answer.size, 320):
            canceller.play(answer[i : i + 320], RATE, (begin + i) * 1000 / RATE)
    segmenter = SpeechSegmenter(ServerVadConfig(silence_duration_ms=500))
    found = []
    with vad.new_stream() as stream:
        for i in range(0, total, FRAME):
            t0, t1 = i * 1000 / RATE, (i + FRAME) * 1000 / RATE
            cleaned = canceller.process(mic[i : i + FRAME], t0)
            p = canceller.gate(stream.speech_probability(cleaned), t1)
            found += [t1 for e in segmenter.process(p, t0, t1) if isinstance(e, SpeechStarted)]
    canceller.close()
    return found, onset, starts[1] * 1000 / RATE


def test_own_echo_never_starts_a_turn_and_a_caller_does(answers: list[np.ndarray]) -> None:
    vad = SileroVAD()
    false_starts = {}
    for trial, delay in enumerate(np.linspace(50, 250, 5)):
        found, _, _ = session(vad, answers, float(delay), seed=trial)
        if found:
            false_starts[float(delay)] = found
    assert not false_starts, f"the echo started a turn: {false_starts}"

    for trial, (talker, delay) in enumerate((("goforward", 80.0), ("librivox-0880", 220.0))):
        found, onset, _ = session(vad, answers, delay, seed=10 + trial, talker=talker)
        assert onset is not None
        late = [t - onset for t in found if t >= onset - 50]
        assert late, f"{talker} over the answer was not heard"
        assert late[0] <= 300, f"{talker}: speech_started {late[0]:.0f} ms after its onset"
