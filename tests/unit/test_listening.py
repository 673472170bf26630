"""The listening pipeline's use of the VAD (a counting fake stands in for Silero: the real
one is exercised in tests/integration).

Digital silence (a muted microphone, the time a DTX stream skips) cannot hold speech: while
the VAD's last frame was silence it is not asked about such frames, which score 0; a turn
that ends in digital silence is still scored until the VAD itself hears silence."""

from __future__ import annotations

import asyncio

import numpy as np

from openrealtime.core.commands import InputAppended
from openrealtime.core.events import Result, SpeechProbabilities
from openrealtime.engines.base import FloatAudio
from openrealtime.engines.registry import EngineSet
from openrealtime.runtime.listening import SILENCE_CONTEXT_FRAMES, InputPipeline
from openrealtime.runtime.scheduler import Scheduler


class CountingStream:
    def __init__(self, owner: CountingVAD) -> None:
        self.owner = owner

    def speech_probability(self, frame: FloatAudio) -> float:
        self.owner.scored += 1
        return 0.9 if np.abs(frame).max() > 0.01 else 0.05

    def reset(self) -> None:
        return None


class CountingVAD:
    sample_rate = 16_000
    frame_samples = 512

    def __init__(self) -> None:
        self.scored = 0

    def new_stream(self) -> CountingStream:
        return CountingStream(self)


async def test_digital_silence_is_not_scored_while_the_vad_hears_silence() -> None:
    vad = CountingVAD()
    frames: list[float] = []

    def report(result: Result) -> None:
        if isinstance(result, SpeechProbabilities):
            frames.extend(f.probability for f in result.frames)

    pipeline = InputPipeline(EngineSet(llm=None, vad=vad), Scheduler(), report)  # type: ignore[arg-type]
    clock = 0.0

    async def append(pcm: np.ndarray) -> None:
        """Give the pipeline ``pcm`` and wait until all its whole frames are reported."""
        nonlocal clock
        pipeline.on_append(InputAppended(pcm=pcm.astype(np.int16), start_ms=clock))
        clock += len(pcm) / 24
        for _ in range(500):
            framed = pipeline.last_frame_end_ms
            if framed >= clock - 64 and len(frames) == round(framed / 32):
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the frames were not reported")

    second = np.zeros(24_000)
    tone = 8000 * np.sin(2 * np.pi * 220 * np.arange(24_000) / 24_000)
    try:
        await append(second)  # a muted microphone: 31 frames of 32 ms, none scored
        assert vad.scored == 0 and set(frames) == {0.0}
        muted = len(frames)
        await append(tone)  # speech: every frame scored, after zeros for the silence before it
        assert vad.scored == len(frames) - muted + SILENCE_CONTEXT_FRAMES and frames[-1] == 0.9
        scored = vad.scored
        await append(second[:2400])  # the speech ends in digital silence: still scored,
        assert vad.scored > scored and frames[-1] == 0.05  # until the VAD hears it
        scored = vad.scored
        await append(second)
        assert vad.scored == scored and frames[-1] == 0.0
        assert len(frames) >= whole_frames(clock) - 2  # every frame reported, none lost
    finally:
        await pipeline.aclose()


def whole_frames(clock_ms: float) -> int:
    """Whole 32 ms frames in ``clock_ms`` of input."""
    return int(clock_ms // 32)
