"""Server-side playout: frames, playback events, barge-in accounting and real-time pacing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openrealtime.audio.resample import downmix_to_float32, float32_to_int16, int16_to_float32, resample
from openrealtime.core.events import OutputAudio
from openrealtime.protocol import server_events as se
from openrealtime.runtime.playback import (
    MAX_HOLD_FRAMES,
    MediaPlayback,
    PlaybackCleared,
    PlaybackStarted,
    PlaybackStopped,
    Playout,
)
from openrealtime.transports.media import FramePacer, InboundAudio, MediaClock, RateConverter

RATE = 24000
FRAME = 480  # 20 ms at 24 kHz


def tone(ms: int, value: int = 1000) -> np.ndarray:
    return np.full(RATE * ms // 1000, value, dtype=np.int16)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pull_all(playout: Playout, frames: int) -> tuple[list[np.ndarray], list[object]]:
    out, events = [], []
    for _ in range(frames):
        frame, happened = playout.pull()
        out.append(frame)
        events.extend(happened)
    return out, events


def test_silence_when_nothing_is_queued() -> None:
    playout = Playout()
    frame, events = playout.pull()
    assert frame.shape == (FRAME,) and not frame.any() and events == []
    assert not playout.busy


def test_started_on_first_frame_and_stopped_after_done_and_drained() -> None:
    playout = Playout()
    playout.push("resp_1", "item_1", tone(50))
    assert playout.busy
    frames, events = pull_all(playout, 2)
    assert events == [PlaybackStarted("resp_1")]
    assert all(f.all() for f in frames)
    # 10 ms left; not done yet: the tail plays, then silence, and nothing stops
    frames, events = pull_all(playout, 3)
    assert events == []
    assert frames[0][:240].all() and not frames[0][240:].any()
    assert playout.current == "resp_1"
    # response.done after the audio drained: stopped at once
    assert playout.finish("resp_1") == [PlaybackStopped("resp_1")]
    assert not playout.busy
    assert playout.played_ms("item_1") == 50


def test_done_before_drained_stops_on_the_last_frame() -> None:
    playout = Playout()
    playout.push("resp_1", "item_1", tone(40))
    assert playout.finish("resp_1") == []
    _, first = playout.pull()
    _, second = playout.pull()
    assert first == [PlaybackStarted("resp_1")]
    assert second == [PlaybackStopped("resp_1")]
    assert playout.pull()[1] == []  # reported once


def test_next_response_starts_inside_the_same_frame() -> None:
    playout = Playout()
    playout.push("resp_1", "item_1", tone(10, 1))
    playout.finish("resp_1")
    playout.push("resp_2", "item_2", tone(30, 2))
    frame, events = playout.pull()
    assert events == [PlaybackStarted("resp_1"), PlaybackStopped("resp_1"), PlaybackStarted("resp_2")]
    assert (frame[:240] == 1).all() and (frame[240:] == 2).all()


def test_clear_reports_played_position_and_drops_the_rest() -> None:
    playout = Playout()
    playout.push("resp_1", "item_1", tone(1000))
    pull_all(playout, 15)  # 300 ms played
    cleared = playout.clear()
    assert cleared == PlaybackCleared("resp_1", "item_1", 300)
    assert not playout.busy and playout.queued_samples == 0
    frame, events = playout.pull()
    assert not frame.any() and events == []
    # late audio of the cleared response is not played, and it never reports stopped
    playout.push("resp_1", "item_1", tone(100))
    assert playout.finish("resp_1") == []
    assert not playout.pull()[0].any()
    assert playout.clear() is None


def test_clear_of_audio_not_yet_played() -> None:
    playout = Playout()
    playout.push("resp_1", "item_1", tone(100))
    assert playout.clear() == PlaybackCleared("resp_1", "item_1", 0)


def test_clear_during_an_underrun_still_targets_the_playing_response() -> None:
    playout = Playout()
    playout.push("resp_1", "item_1", tone(20))
    pull_all(playout, 3)
    assert playout.busy  # still synthesizing
    assert playout.clear() == PlaybackCleared("resp_1", "item_1", 20)


def test_two_items_of_one_response_count_separately() -> None:
    playout = Playout()
    playout.push("resp_1", "item_a", tone(20))
    playout.push("resp_1", "item_b", tone(40))
    _, events = pull_all(playout, 2)
    assert events == [PlaybackStarted("resp_1")]
    assert playout.played_ms("item_a") == 20 and playout.played_ms("item_b") == 20
    assert playout.clear() == PlaybackCleared("resp_1", "item_b", 20)


def test_a_start_can_be_held_back_to_the_end_of_the_frame() -> None:
    playout = Playout()
    playout.push("resp_1", "item_1", tone(10, 1))
    playout.finish("resp_1")
    playout.push("resp_2", "item_2", tone(30, 2))
    frame, events = playout.pull()
    assert events == [PlaybackStarted("resp_1"), PlaybackStopped("resp_1"), PlaybackStarted("resp_2")]
    playout = Playout()
    playout.push("resp_1", "item_1", tone(10, 1))
    playout.finish("resp_1")
    playout.push("resp_2", "item_2", tone(30, 2))
    frame, events = playout.pull(start=False)
    assert events == [] and not frame.any()  # resp_1 had not begun either
    assert playout.begin() == PlaybackStarted("resp_1")
    frame, events = playout.pull(start=False)  # a begun response plays
    assert events == [PlaybackStopped("resp_1")]
    assert (frame[:240] == 1).all() and not frame[240:].any()
    assert playout.begin() == PlaybackStarted("resp_2") and playout.begin() is None
    frame, events = playout.pull(start=False)
    assert events == [] and (frame == 2).all() and playout.played_ms("item_2") == 20


class EventsOut:
    """What the data channel says: has every event published so far left for the peer?"""

    def __init__(self) -> None:
        self.held: list[se.ServerEvent] = []
        self.sent: list[se.ServerEvent] = []

    def publish(self, event: se.ServerEvent) -> None:
        self.held.append(event)

    def transmit(self) -> None:
        self.sent += self.held
        self.held.clear()

    def __call__(self) -> bool:
        return not self.held


def test_answer_audio_waits_until_its_started_event_is_out() -> None:
    channel = EventsOut()
    playback = MediaPlayback(channel.publish, lambda: True)
    playback.audio(OutputAudio("resp_1", "item_1", 0, 0, tone(60), "audio/pcm"))
    frame = playback.pull(channel)
    assert not frame.any() and [type(e) for e in channel.held] == [se.OutputAudioBufferStarted]
    for _ in range(5):  # the channel is backed up: the answer waits, nothing of it played
        assert not playback.pull(channel).any()
    assert playback.playout.played_ms("item_1") == 0
    channel.transmit()
    frames = [playback.pull(channel) for _ in range(3)]
    assert all(f.all() for f in frames) and playback.playout.played_ms("item_1") == 60
    assert channel.held == []  # started once, not again


def test_without_an_events_channel_the_start_is_not_delayed() -> None:
    published: list[se.ServerEvent] = []
    playback = MediaPlayback(published.append, lambda: True)
    playback.audio(OutputAudio("resp_1", "item_1", 0, 0, tone(20), "audio/pcm"))
    assert playback.pull().all()
    assert [type(e) for e in published] == [se.OutputAudioBufferStarted]


def test_a_held_start_can_be_cleared() -> None:
    channel = EventsOut()
    playback = MediaPlayback(channel.publish, lambda: True)
    playback.audio(OutputAudio("resp_1", "item_1", 0, 0, tone(60), "audio/pcm"))
    playback.pull(channel)
    cleared = playback.clear("turn_detected")
    assert cleared is not None and cleared.played_ms == 0
    channel.transmit()
    assert not playback.pull(channel).any()
    assert [type(e) for e in channel.sent] == [se.OutputAudioBufferStarted, se.OutputAudioBufferCleared]


def test_idle_only_while_pulling_would_give_silence_and_change_nothing() -> None:
    """A media track may stop pulling while the playback is idle: it is told when audio is
    queued or a hold begins, and not idle until the answer has stopped."""
    channel = EventsOut()
    playback = MediaPlayback(channel.publish, lambda: True)
    woken: list[int] = []
    playback.on_queued = lambda: woken.append(1)
    assert playback.idle and not playback.pull(channel).any()
    playback.audio(OutputAudio("resp_1", "item_1", 0, 0, tone(40), "audio/pcm"))
    assert woken == [1] and not playback.idle
    playback.pull(channel)  # started, waiting for its event to leave
    channel.transmit()
    assert not playback.idle
    assert all(playback.pull(channel).any() for _ in range(2))
    assert not playback.idle  # played out, but the response has not finished
    playback.finish("resp_1")
    playback.pull(channel)
    assert playback.idle and [type(e) for e in channel.held] == [se.OutputAudioBufferStopped]
    playback.hold()
    assert woken == [1, 1] and not playback.idle
    playback.release()
    assert playback.idle


def ramp(ms: int) -> np.ndarray:
    return np.arange(1, RATE * ms // 1000 + 1, dtype=np.int16)


def test_a_hold_pauses_the_answer_and_a_release_plays_on_from_there() -> None:
    published: list[se.ServerEvent] = []
    playback = MediaPlayback(published.append, lambda: True)
    released: list[np.ndarray] = []
    playback.on_release = released.append
    audio = ramp(100)
    playback.audio(OutputAudio("resp_1", "item_1", 0, 0, audio, "audio/pcm"))
    first = playback.pull()
    playback.hold()
    held = [playback.pull() for _ in range(20)]
    assert not any(f.any() for f in held) and playback.playout.played_ms("item_1") == 20
    playback.release()
    assert len(released) == 1 and np.array_equal(released[0], audio[FRAME:])  # what plays on
    rest = [playback.pull() for _ in range(4)]
    assert np.array_equal(np.concatenate([first, *rest]), audio)  # nothing lost, nothing twice
    assert [type(e) for e in published] == [se.OutputAudioBufferStarted]  # one answer, paused


def test_an_answer_that_arrives_during_a_hold_starts_after_it() -> None:
    published: list[se.ServerEvent] = []
    playback = MediaPlayback(published.append, lambda: True)
    playback.hold()
    playback.audio(OutputAudio("resp_1", "item_1", 0, 0, tone(40), "audio/pcm"))
    assert not playback.pull().any() and published == []
    playback.release()
    assert playback.pull().all() and [type(e) for e in published] == [se.OutputAudioBufferStarted]


def test_a_hold_is_cleared_like_any_barge_in() -> None:
    published: list[se.ServerEvent] = []
    playback = MediaPlayback(published.append, lambda: True)
    playback.audio(OutputAudio("resp_1", "item_1", 0, 0, tone(100), "audio/pcm"))
    playback.pull()
    playback.hold()
    playback.pull()
    cleared = playback.clear("turn_detected")
    assert cleared is not None and cleared.played_ms == 20  # the held frames were not heard
    playback.release()
    assert not playback.pull().any()


def test_a_hold_without_a_verdict_plays_on_by_itself() -> None:
    playback = MediaPlayback(lambda event: None, lambda: True)
    released: list[np.ndarray] = []
    playback.on_release = released.append
    playback.audio(OutputAudio("resp_1", "item_1", 0, 0, tone(100), "audio/pcm"))
    playback.hold()
    frames = [playback.pull() for _ in range(MAX_HOLD_FRAMES + 1)]
    assert not any(f.any() for f in frames[:MAX_HOLD_FRAMES]) and frames[-1].all()
    assert len(released) == 1 and not playback.holding
    playback.release()  # the verdict, late: nothing more happens
    assert len(released) == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=2000), min_size=1, max_size=12))
def test_every_pushed_sample_plays_once_in_order(chunks: list[int]) -> None:
    playout = Playout()
    pushed = []
    counter = 1
    for size in chunks:
        pcm = (np.arange(counter, counter + size) % 30000 + 1).astype(np.int16)
        counter += size
        pushed.append(pcm)
        playout.push("resp_1", "item_1", pcm)
    playout.finish("resp_1")
    expected = np.concatenate(pushed)
    frames, events = pull_all(playout, len(expected) // FRAME + 2)
    played = np.concatenate(frames)
    assert np.array_equal(played[: len(expected)], expected)
    assert not played[len(expected) :].any()
    assert events == [PlaybackStarted("resp_1"), PlaybackStopped("resp_1")]
    assert playout.played_ms("item_1") == len(expected) * 1000 // RATE


def test_pacer_keeps_real_time_against_the_clock() -> None:
    clock = FakeClock()
    pacer = FramePacer(clock)
    assert pacer.next_delay() == 0.0  # first frame at once
    assert pacer.next_delay() == pytest.approx(0.020)
    clock.now += 0.005  # the sender woke up early
    assert pacer.next_delay() == pytest.approx(0.035)
    clock.now += 0.035 + 0.030  # woke up 30 ms late: frame 3 (due 10 ms ago) goes at once
    assert pacer.next_delay() == 0.0
    clock.now += 0.005  # and frame 4 is due in 5 ms, back on the original grid
    assert pacer.next_delay() == pytest.approx(0.005)
    assert pacer.frames == 5


def test_pacer_resynchronises_after_a_stall_instead_of_bursting() -> None:
    clock = FakeClock()
    pacer = FramePacer(clock, max_lag_ms=200)
    pacer.next_delay()
    clock.now += 1.0  # the event loop was blocked for a second
    assert pacer.next_delay() == 0.0
    assert pacer.next_delay() == pytest.approx(0.020)  # not 49 frames at once


def test_rate_converter_gives_exact_frames_with_the_signal() -> None:
    converter = RateConverter(RATE, 48000)
    t = np.arange(RATE) / RATE
    signal = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    out = np.concatenate([converter.convert(signal[i : i + FRAME]) for i in range(0, RATE, FRAME)])
    assert len(out) == 48000
    spectrum = np.abs(np.fft.rfft(out[4800:].astype(np.float64)))
    assert abs(np.argmax(spectrum) * 48000 / len(out[4800:]) - 440) < 2


def test_inbound_stereo_48k_becomes_session_pcm() -> None:
    inbound = InboundAudio()
    t = np.arange(960 * 50) / 48000
    mono = (6000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)
    stereo = np.stack([mono, mono], axis=1).reshape(-1)
    pcm = np.concatenate(
        [inbound.convert(stereo[i : i + 1920], 48000, 2) for i in range(0, len(stereo), 1920)]
    )
    assert pcm.dtype == np.int16
    assert abs(len(pcm) - 24000) < 48  # 48 <-> 24 kHz holds back almost nothing
    level = np.sqrt(np.mean(pcm[2400:].astype(np.float64) ** 2))
    assert level == pytest.approx(6000 / np.sqrt(2), rel=0.05)


def test_inbound_telephone_audio_becomes_session_pcm() -> None:
    """8 kHz RTP audio reaches the session as 24 kHz PCM whatever the session's input format
    (wire formats exist only at the WebSocket edge), continuous and at its level."""
    inbound = InboundAudio()
    pcm8k = (4000 * np.sin(2 * np.pi * 200 * np.arange(8000) / 8000)).astype(np.int16)
    pcm = np.concatenate([inbound.convert(pcm8k[i : i + 160], 8000, 1) for i in range(0, 8000, 160)])
    assert 24000 - 2400 <= len(pcm) <= 24000  # the resampler holds back a little, at most 100 ms
    steady = pcm[2400:].astype(np.float64)
    assert np.sqrt(np.mean(steady**2)) == pytest.approx(4000 / np.sqrt(2), rel=0.05)
    spectrum = np.abs(np.fft.rfft(steady))
    assert abs(np.argmax(spectrum) * 24000 / len(steady) - 200) < 2


# ------------------------------------------------------------------ rate conversion at the edge


class FullPathConverter(RateConverter):
    """The converter without its silence fast path: every frame goes through the resampler."""

    SETTLE_FRAMES = 10**9


def bursts_and_silences(seed: int, rate: int, frames: int) -> list[np.ndarray]:
    """20 ms frames: loud noise bursts and silences of random lengths, some very short."""
    rng = np.random.default_rng(seed)
    size = rate // 50
    out: list[np.ndarray] = []
    while len(out) < frames:
        for _ in range(int(rng.integers(1, 30))):
            out.append((rng.standard_normal(size) * 4000).astype(np.int16))
        for _ in range(int(rng.choice([1, 3, 9, 10, 11, 25, 60]))):
            out.append(np.zeros(size, dtype=np.int16))
    return out[:frames]


@pytest.mark.parametrize("out_rate", [8000, 16000, 48000])
def test_silence_fast_path_gives_the_sound_of_resampling_everything(out_rate: int) -> None:
    frames = bursts_and_silences(out_rate, RATE, 1500)
    fast, full = RateConverter(RATE, out_rate), FullPathConverter(RATE, out_rate)
    fast_out = [fast.convert(frame) for frame in frames]
    full_out = [full.convert(frame) for frame in frames]
    assert all(len(a) == out_rate // 50 for a in fast_out)
    # the same samples at the same times; skipping whole frames shifts soxr's block phase,
    # which moves float rounding by ~1e-5 and so a few samples by one step (-96 dB)
    difference = np.abs(np.concatenate(fast_out).astype(np.int32) - np.concatenate(full_out))
    assert difference.max() <= 1 and np.count_nonzero(difference) < difference.size / 200
    assert sum(a is fast.silence for a in fast_out) > 100  # the fast path was really taken
    assert not any(a is full.silence for a in full_out)


@pytest.mark.parametrize("out_rate", [8000, 16000, 48000])
def test_rate_converter_never_opens_a_gap_in_a_sound(out_rate: int) -> None:
    """The FIFO starts with all the lead the resampler's bursts need, so a sound that starts
    at once plays without a run of inserted zeros (a click) anywhere in it."""
    converter = RateConverter(RATE, out_rate)
    t = np.arange(RATE * 5) / RATE
    signal = (3000 * np.sin(2 * np.pi * 440 * t) + 8000).astype(np.int16)  # never near zero
    out = np.concatenate([converter.convert(signal[i : i + FRAME]) for i in range(0, len(signal), FRAME)])
    onset = np.flatnonzero(out)[0] + out_rate // 100  # past the resampler's ringing at the onset
    assert out[onset:].min() > 4000


def test_silent_frames_are_one_shared_read_only_frame() -> None:
    converter = RateConverter(RATE, 8000)
    outs = [converter.convert(np.zeros(FRAME, dtype=np.int16)) for _ in range(20)]
    assert outs[-1] is converter.silence and not converter.silence.any()
    with pytest.raises(ValueError):
        converter.silence[0] = 1


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (48000, 2), (16000, 1)])
def test_inbound_packets_equal_resampling_the_whole_call(rate: int, channels: int) -> None:
    """Packet by packet, caller audio is the whole call resampled at once, sample for sample
    (up to what the resampler still holds back)."""
    rng = np.random.default_rng(rate)
    packet = rate // 50 * channels
    samples = (rng.standard_normal(packet * 100) * 3000).astype(np.int16)
    inbound = InboundAudio()
    pieces = [
        inbound.convert(samples[i : i + packet], rate, channels) for i in range(0, len(samples), packet)
    ]
    assert all(piece.dtype == np.int16 for piece in pieces)
    streamed = np.concatenate(pieces)
    whole = float32_to_int16(
        resample(downmix_to_float32(samples, channels), rate, RATE, "LQ" if rate == 48000 else "HQ")
    )
    assert len(streamed) >= len(whole) - RATE // 10
    assert np.array_equal(streamed, whole[: len(streamed)])


def test_downmix_is_the_mean_of_the_channels() -> None:
    rng = np.random.default_rng(3)
    for channels in (1, 2, 3):
        frames = rng.integers(-32768, 32768, size=(500, channels)).astype(np.int16)
        mono = downmix_to_float32(frames.reshape(-1), channels)
        assert mono.dtype == np.float32
        expected = frames.astype(np.float64).mean(axis=1) / 32768
        assert np.allclose(mono, expected, atol=1e-7)
    assert np.array_equal(downmix_to_float32(frames[:, 0].copy(), 1), int16_to_float32(frames[:, 0]))


async def test_media_clock_ticks_every_sender_on_one_timer() -> None:
    clock = MediaClock()
    ticks: dict[str, int] = {"a": 0, "b": 0}

    def sender(name: str) -> Callable[[], None]:
        def send() -> None:
            ticks[name] += 1

        return send

    def failing() -> None:
        raise RuntimeError("broken sender")

    remove_a = clock.add(sender("a"))
    clock.add(sender("b"))
    clock.add(failing)  # logged and dropped; the others go on
    await asyncio.sleep(0.1)
    remove_a()
    a = ticks["a"]
    await asyncio.sleep(0.1)
    assert 3 <= a <= 7 and ticks["a"] == a  # ~5 ticks of 20 ms, then none after removal
    assert ticks["b"] >= a + 3
    assert len([t for t in asyncio.all_tasks() if t.get_name() == "media-clock"]) == 1
    assert MediaClock.shared() is MediaClock.shared()


class EveryPacketInbound(InboundAudio):
    SETTLE_FRAMES = 10**9  # never settled: every packet is resampled


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (48000, 2)])
def test_inbound_silence_fast_path_gives_the_sound_of_resampling_everything(rate: int, channels: int) -> None:
    frames = bursts_and_silences(rate, rate, 1500)
    if channels == 2:
        frames = [np.repeat(frame, 2) for frame in frames]
    fast, full = InboundAudio(), EveryPacketInbound()
    fast_out = [fast.convert(frame, rate, channels) for frame in frames]
    full_out = np.concatenate([full.convert(frame, rate, channels) for frame in frames])
    streamed = np.concatenate(fast_out)
    # the same stream; released in other pieces (what soxr held comes out when sound returns)
    assert abs(len(streamed) - len(full_out)) < RATE // 10
    n = min(len(streamed), len(full_out))
    difference = np.abs(streamed[:n].astype(np.int32) - full_out[:n])
    assert difference.max() <= 1 and np.count_nonzero(difference) < n / 200
    skipped = sum(
        1 for frame, out in zip(frames, fast_out, strict=True) if not frame.any() and out is fast._zeros
    )
    assert skipped > 100  # the fast path was really taken
