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
