"""Silero VAD + segmenter on real recorded speech: detected edges against annotated edges.

Each clip from /work/shared/audio is played as a caller would send it: resampled to the
protocol's 24 kHz pcm16, 1 s of room tone before and 1.5 s after (noise with the clip's own
background spectrum, cross-faded in, so the VAD sees one continuous recording), sent in 20 ms
chunks. The reference edges were annotated by hand from spectrogram and waveform (first and
last audible frame of the first and last word, fricatives included, ±20 ms).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from openrealtime.audio import formats
from openrealtime.audio.resample import AudioFramer
from openrealtime.core.turns import (
    SegmenterEvent,
    ServerVadConfig,
    SpeechSegmenter,
    SpeechStarted,
    SpeechStopped,
)
from openrealtime.engines.vad.silero import SileroVAD
from tests.speech_audio import (
    AUDIO_DIR,
    LEAD_MS,
    PREFIX_MS,
    REFERENCE_EDGES,
    TOLERANCE_MS,
    caller_audio,
)

pytestmark = pytest.mark.skipif(not AUDIO_DIR.is_dir(), reason="shared real-speech clips not present")


@pytest.fixture(scope="module")
def vad() -> SileroVAD:
    return SileroVAD()


def detect(
    vad: SileroVAD, pcm24: np.ndarray, cfg: ServerVadConfig, chunk_ms: int = 20
) -> tuple[list[SegmenterEvent], float]:
    """Run the live pipeline; return the events and the VAD's CPU seconds."""
    framer = AudioFramer(24000, vad.sample_rate, vad.frame_samples)
    segmenter = SpeechSegmenter(cfg)
    found: list[SegmenterEvent] = []
    vad_seconds = 0.0
    with vad.new_stream() as stream:
        step = chunk_ms * 24
        for i in range(0, pcm24.size, step):
            for frame in framer.push(pcm24[i : i + step]):
                t0 = time.process_time()
                p = stream.speech_probability(frame.samples)
                vad_seconds += time.process_time() - t0
                found += segmenter.process(p, frame.start_ms, frame.end_ms, frame.level_db)
    return found, vad_seconds


def edges(found: list[SegmenterEvent]) -> tuple[SpeechStarted, SpeechStopped, int]:
    starts = [e for e in found if isinstance(e, SpeechStarted)]
    stops = [e for e in found if isinstance(e, SpeechStopped)]
    assert starts and stops and len(starts) == len(stops)
    return starts[0], stops[-1], len(starts)


@pytest.mark.parametrize("silence_ms", [200, 500])
def test_detected_edges_within_100_ms(vad: SileroVAD, silence_ms: int) -> None:
    cfg = ServerVadConfig(prefix_padding_ms=PREFIX_MS, silence_duration_ms=silence_ms)
    errors = {}
    for name, (onset, offset) in REFERENCE_EDGES.items():
        found, _ = detect(vad, caller_audio(name), cfg)
        start, stop, turns = edges(found)
        if silence_ms >= 500:
            assert turns == 1, (name, found)
        # audio_start_ms includes the prefix padding: it is the onset minus 300 ms.
        onset_err = start.audio_start_ms + PREFIX_MS - (LEAD_MS + onset)
        offset_err = stop.audio_end_ms - (LEAD_MS + offset)
        errors[name] = (onset_err, offset_err)
        assert stop.detected_at_ms >= stop.audio_end_ms + silence_ms
    bad = {k: v for k, v in errors.items() if max(abs(v[0]), abs(v[1])) > TOLERANCE_MS}
    assert not bad, f"edges off by more than {TOLERANCE_MS} ms: {bad} (all: {errors})"


def test_edges_do_not_depend_on_chunking_or_the_noise_sample(vad: SileroVAD) -> None:
    cfg = ServerVadConfig(silence_duration_ms=500)
    for name in ("cards-004", "librivox-0920"):
        onset, offset = REFERENCE_EDGES[name]
        for chunk_ms, seed in ((100, 7), (37, 11)):
            start, stop, _ = edges(detect(vad, caller_audio(name, seed), cfg, chunk_ms)[0])
            assert abs(start.speech_start_ms - (LEAD_MS + onset)) <= TOLERANCE_MS
            assert abs(stop.audio_end_ms - (LEAD_MS + offset)) <= TOLERANCE_MS


@pytest.mark.parametrize("fmt", ["audio/pcmu", "audio/pcma"])
def test_telephony_input_through_g711(vad: SileroVAD, fmt: str) -> None:
    """Through 8 kHz G.711 the onsets hold; ends come earlier (up to ~170 ms) because the
    fricative energy above 4 kHz that the wideband reference counts is gone."""
    cfg = ServerVadConfig(silence_duration_ms=500)
    for name in ("cards-001", "goforward", "librivox-0880"):
        onset, offset = REFERENCE_EDGES[name]
        wire = formats.encode(fmt, caller_audio(name))
        decoder = formats.StreamDecoder(fmt)
        pcm24 = np.concatenate(
            [decoder.decode(wire[i : i + 160]) for i in range(0, len(wire), 160)] + [decoder.flush()]
        )
        start, stop, turns = edges(detect(vad, pcm24, cfg)[0])
        assert turns == 1
        assert abs(start.speech_start_ms - (LEAD_MS + onset)) <= TOLERANCE_MS
        assert abs(stop.audio_end_ms - (LEAD_MS + offset)) <= 200


def test_vad_cost_per_second_of_audio(vad: SileroVAD) -> None:
    pcm24 = caller_audio("librivox-0870")
    _, cpu = detect(vad, pcm24, ServerVadConfig())
    per_second_ms = 1000 * cpu / (pcm24.size / 24000)
    # ~8 ms of CPU per second of audio on an idle core here; allow for a busy shared machine.
    assert per_second_ms < 60, per_second_ms


def test_streams_are_independent_and_reset(vad: SileroVAD) -> None:
    frame = (np.sin(np.arange(512) / 5.0) * 0.3).astype(np.float32)
    with vad.new_stream() as a, vad.new_stream() as b:
        for _ in range(10):
            a.speech_probability(frame)
        fresh = b.speech_probability(frame)
        assert a.speech_probability(frame) != fresh
        a.reset()
        assert a.speech_probability(frame) == fresh
    with pytest.raises(RuntimeError):
        a.speech_probability(frame)
    with pytest.raises(ValueError):
        vad.new_stream().speech_probability(np.zeros(480, dtype=np.float32))


def test_batched_scores_equal_one_stream_at_a_time(vad: SileroVAD) -> None:
    """Real speech scored inside batches with other streams (uneven frame counts) gets exactly
    the probabilities it gets alone, and the same speech_started/stopped."""
    clips = [caller_audio(name) for name in ("librivox-0880", "cards-005", "goforward")]
    framed = []
    for pcm24 in clips:
        framer = AudioFramer(24000, vad.sample_rate, vad.frame_samples)
        framed.append([f for i in range(0, pcm24.size, 480) for f in framer.push(pcm24[i : i + 480])])
    alone = []
    for frames in framed:
        with vad.new_stream() as stream:
            alone.append([stream.speech_probability(f.samples) for f in frames])
    streams = [vad.new_stream() for _ in framed]
    together: list[list[float]] = [[] for _ in framed]
    cursor = [0 for _ in framed]
    while any(at < len(frames) for at, frames in zip(cursor, framed, strict=True)):
        requests = []
        for index, frames in enumerate(framed):
            take = frames[cursor[index] : cursor[index] + 1 + index]  # uneven amounts per stream
            cursor[index] += len(take)
            if take:
                requests.append((index, [f.samples for f in take]))
        scored = vad.score([(streams[index], samples) for index, samples in requests])
        for (index, _), probabilities in zip(requests, scored, strict=True):
            together[index].extend(probabilities)
    for index, frames in enumerate(framed):
        assert np.allclose(together[index], alone[index], atol=1e-5)
        alone_events = _segment(alone[index], frames)
        assert alone_events and _segment(together[index], frames) == alone_events


def _segment(probabilities: list[float], frames: list) -> list[SegmenterEvent]:
    segmenter = SpeechSegmenter(ServerVadConfig())
    found: list[SegmenterEvent] = []
    for p, frame in zip(probabilities, frames, strict=True):
        found += segmenter.process(p, frame.start_ms, frame.end_ms, frame.level_db)
    return found
