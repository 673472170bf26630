"""The echo guard places the session's answers on the input clock as a client plays them."""

from __future__ import annotations

import numpy as np

from openrealtime.audio.resample import AudioFrame
from openrealtime.runtime.echo_guard import EchoGuard


def frames(start_ms: float, n: int) -> list[AudioFrame]:
    rng = np.random.default_rng(0)
    return [
        AudioFrame(
            (rng.standard_normal(512) * 0.01).astype(np.float32),
            start_ms + 32 * i,
            start_ms + 32 * (i + 1),
            -40.0,
        )
        for i in range(n)
    ]


def test_answers_play_in_order_from_the_present_position() -> None:
    guard = EchoGuard()
    guard.heard_until(1000.0)
    guard.played(np.zeros(24 * 500, dtype=np.int16))
    guard.played(np.zeros(24 * 500, dtype=np.int16))  # queued behind the first
    assert guard.play_end_ms == 2000.0
    guard.heard_until(3000.0)
    guard.played(np.zeros(24 * 100, dtype=np.int16))  # the client was idle: plays at once
    assert guard.play_end_ms == 3100.0


def test_audible_until_the_echo_path_has_passed_and_cut_by_a_barge_in() -> None:
    guard = EchoGuard()
    assert not guard.audible(0.0)
    guard.heard_until(1000.0)
    guard.played(np.zeros(24 * 2000, dtype=np.int16))
    assert guard.audible(2500.0) and guard.audible(3400.0) and not guard.audible(4000.0)
    guard.heard_until(1500.0)
    guard.stopped()
    assert guard.play_end_ms == 1500.0 and not guard.audible(2500.0)


def test_caller_audio_passes_untouched_until_an_answer_plays() -> None:
    guard = EchoGuard()
    before = frames(0.0, 4)
    assert guard.clean(before) is before
    assert guard.gate(0.9, 128.0) == 0.9
    guard.heard_until(128.0)
    guard.played((np.sin(np.arange(24 * 1000) / 7.0) * 8000).astype(np.int16))
    cleaned = guard.clean(frames(128.0, 4))
    assert [f.samples.size for f in cleaned] == [512] * 4
    assert [f.start_ms for f in cleaned] == [128.0, 160.0, 192.0, 224.0]


def test_a_pause_in_the_callers_stream_moves_the_guards_clock_on() -> None:
    """The client stopped sending for 3 s (muted while the answer played): the answer sent
    during the pause plays from where the pause had reached, and the audio after it lands
    after the pause, where nothing of the answer can be echoing any more."""
    guard = EchoGuard()
    guard.heard_until(1000.0, now_ms=10_000.0)
    guard.played(np.zeros(24 * 1500, dtype=np.int16), now_ms=11_500.0)  # 1.5 s into the pause
    assert guard.play_end_ms == 1000.0 + 1500.0 + 1500.0
    assert guard.audible(1000.0)  # on the input clock alone, it would be heard over what follows
    guard.heard_until(1040.0, now_ms=14_040.0)  # the stream goes on 4 s later
    assert guard.at(1000.0) == 1000.0 + 4000.0 and guard.at(999.0) == 999.0
    assert guard.at(1000.0, end=True) == 1000.0
    assert not guard.audible(1000.0)


def test_jitter_and_a_busy_moment_do_not_count_as_a_pause() -> None:
    guard = EchoGuard()
    guard.heard_until(1000.0, now_ms=10_000.0)
    guard.heard_until(1020.0, now_ms=10_900.0)  # 880 ms late
    guard.played(np.zeros(24 * 500, dtype=np.int16), now_ms=11_500.0)  # 600 ms after the last
    assert guard.at(1010.0) == 1010.0 and guard.play_end_ms == 1520.0


def test_frames_on_both_sides_of_a_pause_are_cleaned_as_two_runs() -> None:
    guard = EchoGuard()
    guard.heard_until(128.0, now_ms=0.0)
    guard.played((np.sin(np.arange(24 * 500) / 7.0) * 8000).astype(np.int16), now_ms=0.0)
    guard.heard_until(256.0, now_ms=5000.0)  # 5 s pause before input time 128 ms
    cleaned = guard.clean(frames(0.0, 8))
    assert [f.start_ms for f in cleaned] == [32.0 * i for i in range(8)]
    after = cleaned[4:]
    assert all(np.array_equal(a.samples, b.samples) for a, b in zip(after, frames(0.0, 8)[4:], strict=True))


def test_pauses_long_past_are_forgotten() -> None:
    guard = EchoGuard()
    now = 0.0
    for second in range(200):  # a push-to-talk caller: 1 s of audio, then 2 s of silence
        now += 1000.0
        guard.heard_until(second * 1000.0 + 1000.0, now_ms=now)
        now += 2000.0
    assert len(guard.offsets) <= 62
    assert guard.at(199_500.0) == 199_500.0 + 199 * 2000.0


def test_a_caller_who_barged_in_keeps_the_turn_through_the_echo_of_what_played() -> None:
    """The answer's echo still arrives for up to the longest lag after a barge-in cut it: the
    gate, which keeps echo from starting a turn, does not gate the caller's own turn to silence
    meanwhile (a soft caller over a loud answer whose path is not known yet), and gates onsets
    again once that turn is committed."""
    guard = EchoGuard()
    guard.heard_until(1000.0)
    guard.played((np.sin(np.arange(24 * 2000) / 7.0) * 16000).astype(np.int16))
    guard.clean(frames(1000.0, 16))  # a soft caller (-40 dBFS) over the answer
    assert guard.gate(0.9, 1512.0) == 0.0  # not yet told from the answer's echo
    guard.heard_until(1512.0)
    guard.barged_in()
    assert guard.play_end_ms == 1512.0 and guard.audible(1600.0)  # its echo may still come
    guard.clean(frames(1512.0, 4))
    assert guard.gate(0.9, 1640.0) == 0.9
    guard.turn_over()
    assert guard.gate(0.9, 1640.0) == 0.0
