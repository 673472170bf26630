"""The echo canceller (libspeexdsp through ctypes): lag estimate, cancellation, talker check.

Signals here are synthetic (modulated noise, so every lag is unambiguous); real speech
through a simulated room is in tests/integration/test_echo_real_speech.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from openrealtime.audio.echo import (
    PROVEN_CANCELLATION_DB,
    EchoCanceller,
    EchoDelayEstimator,
    EchoSettings,
    level_db,
)
from openrealtime.benchmark.echo_path import echo_of, room_impulse_response

RATE = 16_000


def babble(seconds: float, seed: int, level: float = 0.1) -> np.ndarray:
    """Noise with a syllable-rate envelope: speech-like in level, white in spectrum."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    envelope = np.repeat(rng.uniform(0.1, 1.0, n // 1600 + 1), 1600)[:n]
    smooth = np.convolve(envelope, np.ones(400) / 400, mode="same")
    return (rng.standard_normal(n) * smooth * level).astype(np.float32)


def run(canceller: EchoCanceller, mic: np.ndarray, frame: int = 512) -> np.ndarray:
    usable = mic[: mic.size // frame * frame]
    return np.concatenate(
        [canceller.process(usable[i : i + frame], i * 1000 / RATE) for i in range(0, usable.size, frame)]
    )


def test_level_db() -> None:
    assert level_db(np.zeros(10)) == -100.0
    assert level_db(np.full(100, 0.1)) == pytest.approx(-20.0, abs=0.01)


def test_noise_reduction_modes_and_validation() -> None:
    near, far, off = (EchoSettings.for_noise_reduction(m) for m in ("near_field", "far_field", None))
    assert far.echo_suppress_db < near.echo_suppress_db
    assert far.noise_suppress_db < near.noise_suppress_db < 0
    assert off.noise_suppress_db > near.noise_suppress_db
    with pytest.raises(ValueError):
        EchoSettings.for_noise_reduction("loud")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        EchoSettings(talker_fraction=0.0)
    with pytest.raises(ValueError):
        EchoSettings(echo_suppress_db=10)


def test_delay_estimator_finds_the_lag() -> None:
    far = babble(2.0, 1)
    lag = int(0.137 * RATE)
    near = np.concatenate((np.zeros(lag, np.float32), far))[: far.size] * 0.5
    estimator = EchoDelayEstimator(RATE, max_lag=int(0.4 * RATE), window=RATE)
    end = far.size
    found = estimator.estimate(near[end - RATE : end], far[end - RATE - estimator.max_lag : end])
    assert found is not None
    estimated, confidence = found
    assert abs(estimated - lag) <= 1
    assert confidence > 8
    assert estimator.estimate(np.zeros(RATE, np.float32), np.zeros(RATE + 6400, np.float32)) is None


def test_cancels_echo_and_keeps_a_talker() -> None:
    far = babble(6.0, 2)
    ir = room_impulse_response(RATE, rt60_s=0.2, seed=3)
    echo = echo_of(far, RATE, delay_ms=120, level_db=-6.0, ir=ir)
    noise = (np.random.default_rng(4).standard_normal(far.size) * 3e-4).astype(np.float32)
    canceller = EchoCanceller(RATE, EchoSettings.for_noise_reduction("near_field"))
    canceller.play(far, RATE, at_ms=0.0)
    out = run(canceller, echo + noise)
    assert canceller.delay_ms == pytest.approx(120, abs=1.0)
    tail = slice(4 * RATE, out.size)
    assert level_db(out[tail]) < level_db(echo[tail]) - 15
    assert not canceller.different_talker(4500, 5500)

    talker = np.zeros_like(far)
    burst = babble(0.6, 9, level=1.0)
    start = int(5.0 * RATE)
    talker[start : start + burst.size] = burst * (10 ** ((level_db(echo) - level_db(burst)) / 20))
    canceller = EchoCanceller(RATE, EchoSettings.for_noise_reduction("near_field"))
    canceller.play(far, RATE, at_ms=0.0)
    run(canceller, echo + noise + talker)
    assert canceller.different_talker(5000, 5300)
    assert not canceller.different_talker(4000, 4900)


def test_gate_passes_speech_without_playback_and_blocks_echo() -> None:
    far = babble(5.0, 5)
    canceller = EchoCanceller(RATE)
    mic = babble(1.0, 6)
    assert np.array_equal(run(canceller, mic), mic[: mic.size // 512 * 512])  # nothing played: untouched
    assert canceller.gate(0.9, 900.0) == 0.9

    canceller = EchoCanceller(RATE)
    canceller.play(far, RATE, at_ms=0.0)
    echo = echo_of(far, RATE, delay_ms=80, level_db=-6.0, ir=room_impulse_response(RATE, 0.2, 7))
    run(canceller, echo)
    assert canceller.gate(0.9, 4500.0) == 0.0


def test_a_caller_who_keeps_talking_opens_the_gate_before_the_filter_converges() -> None:
    """Fail-open: a caller 5 dB over the echo, 1.5 s into the answer (the filter has not
    adapted yet, so the different-talker check wants 8 dB), is let through by the sustained
    excess over the predicted echo; the echo alone before them is not."""
    far = babble(4.0, 11)
    echo = echo_of(far, RATE, delay_ms=150, level_db=-6.0, ir=room_impulse_response(RATE, 0.25, 12))
    caller = np.zeros_like(far)
    burst = babble(1.5, 13, level=1.0)
    start = int(1.5 * RATE)
    caller[start : start + burst.size] = burst * (10 ** ((level_db(echo) + 5 - level_db(burst)) / 20))
    canceller = EchoCanceller(RATE)
    canceller.play(far, RATE, at_ms=0.0)
    usable = (echo + caller)[: far.size // 512 * 512]
    opened = []
    for i in range(0, usable.size, 512):
        canceller.process(usable[i : i + 512], i * 1000 / RATE)
        end_ms = (i + 512) * 1000 / RATE
        if canceller.gate(0.9, end_ms) > 0:
            opened.append(end_ms)
    assert [t for t in opened if 1000 <= t < 1500] == []  # echo alone, lag already found
    first = next(t for t in opened if t >= 1500)
    assert first - 1500 <= 400


def test_the_echo_heard_before_the_path_is_found_sets_its_level_at_once() -> None:
    """The first answer's echo heard while the lag was still sought is measured when it is
    found: the return loss is the echo's (here -12 dB), not the 0 dB assumed without
    evidence, so a caller at the echo's level is not held to a playback-loud one."""
    far = babble(3.0, 21)
    echo = echo_of(far, RATE, delay_ms=110, level_db=-12.0, ir=room_impulse_response(RATE, 0.3, 22))
    noise = (np.random.default_rng(23).standard_normal(RATE + far.size) * 3e-4).astype(np.float32)
    mic = np.concatenate((np.zeros(RATE, np.float32), echo)) + noise
    canceller = EchoCanceller(RATE, EchoSettings.for_noise_reduction("near_field"))
    canceller.play(far, RATE, at_ms=1000.0)
    end = 0
    while canceller.delay_ms is None and end + 512 <= mic.size:
        canceller.process(mic[end : end + 512], end * 1000 / RATE)
        end += 512
    assert canceller.delay_ms == pytest.approx(110, abs=1.0)
    assert end <= 2 * RATE  # within the first second of the answer
    assert canceller.echo_return_loss_db < -8.0
    run_from = end
    opened = []
    while run_from + 512 <= mic.size:
        canceller.process(mic[run_from : run_from + 512], run_from * 1000 / RATE)
        run_from += 512
        if canceller.gate(0.9, run_from * 1000 / RATE) > 0:
            opened.append(run_from)
    assert opened == []  # the echo alone still never passes for a caller


def test_no_echo_path_leaves_the_gate_open() -> None:
    """A client with its own echo cancellation sends no echo of the answer: the caller's voice
    must not be held against an echo that never comes."""
    far = babble(4.0, 14)
    caller = babble(4.0, 15, level=0.02)
    canceller = EchoCanceller(RATE)
    canceller.play(far, RATE, at_ms=0.0)
    run(canceller, caller)
    assert canceller.delay_ms is None
    assert canceller.no_echo_path
    assert canceller.gate(0.9, 4000.0) == 0.9


def test_a_caller_without_echo_is_returned_untouched_while_playback_runs() -> None:
    """Playback that never reaches the input (a client with its own echo cancellation) gives
    the filter nothing to learn: the caller's audio must come back as it was, not with the
    residual suppressor taking syllables off it; an echo it has learnt is still removed."""
    far = babble(4.0, 16)
    caller = babble(4.0, 17, level=0.05)
    canceller = EchoCanceller(RATE, EchoSettings.for_noise_reduction("near_field"))
    canceller.play(far, RATE, at_ms=0.0)
    out = run(canceller, caller)
    assert canceller.cancellation_db < PROVEN_CANCELLATION_DB
    assert np.array_equal(out, caller[: out.size])

    echo = echo_of(far, RATE, delay_ms=100, level_db=-6.0, ir=room_impulse_response(RATE, 0.2, 18))
    canceller = EchoCanceller(RATE, EchoSettings.for_noise_reduction("near_field"))
    canceller.play(far, RATE, at_ms=0.0)
    out = run(canceller, echo)
    assert canceller.cancellation_db >= PROVEN_CANCELLATION_DB
    tail = slice(3 * RATE, out.size)
    assert level_db(out[tail]) < level_db(echo[tail]) - 15


def gate_openings(canceller: EchoCanceller, mic: np.ndarray, frame: int = 512) -> list[float]:
    """Feed ``mic`` in VAD frames; the end (ms) of every frame whose speech probability 0.9
    passes the gate."""
    opened = []
    usable = mic[: mic.size // frame * frame]
    for i in range(0, usable.size, frame):
        canceller.process(usable[i : i + frame], i * 1000 / RATE)
        end_ms = (i + frame) * 1000 / RATE
        if canceller.gate(0.9, end_ms) > 0:
            opened.append(end_ms)
    return opened


@pytest.mark.parametrize(("caller_ms", "noise"), [(1000, 0.0), (1000, 3e-4), (1600, 3e-4)])
def test_a_client_that_plays_nothing_back_is_heard_at_once(caller_ms: int, noise: float) -> None:
    """A client without an echo path sends silence (or its room) while the answer plays: every
    lag is ruled out within the longest lag plus a few frames of loud playback, and a caller
    6 dB below the playback, who starts a second into the answer, passes the gate at once."""
    settings = EchoSettings(max_delay_ms=800)
    far = babble(4.0, 31)
    mic = (np.random.default_rng(32).standard_normal(far.size) * noise).astype(np.float32)
    burst = babble(1.5, 33, level=1.0)
    start = caller_ms * RATE // 1000
    mic[start : start + burst.size] += burst * (10 ** ((level_db(far) - 6 - level_db(burst)) / 20))
    canceller = EchoCanceller(RATE, settings)
    canceller.play(far, RATE, at_ms=0.0)
    opened = gate_openings(canceller, mic)
    assert canceller.no_echo_path
    assert canceller.delay_ms is None
    assert opened and opened[0] <= caller_ms + 64, opened[:3]


@pytest.mark.parametrize("delay_ms", [50, 120, 250, 600])
def test_an_echo_is_never_taken_for_a_missing_path(delay_ms: int) -> None:
    """The answer fed back at -6 dB through a room, from its first word: its lag is never ruled
    out, so the gate stays shut on the echo before and after the lag is estimated."""
    settings = EchoSettings(max_delay_ms=800)
    far = babble(4.0, 41)
    ir = room_impulse_response(RATE, rt60_s=0.25, seed=42)
    noise = (np.random.default_rng(43).standard_normal(far.size) * 3e-4).astype(np.float32)
    mic = echo_of(far, RATE, delay_ms=delay_ms, level_db=-6.0, ir=ir) + noise
    canceller = EchoCanceller(RATE, settings)
    canceller.play(far, RATE, at_ms=0.0)
    opened = gate_openings(canceller, mic)
    assert not canceller.no_echo_path
    assert canceller.delay_ms == pytest.approx(delay_ms, abs=2.0)
    assert opened == []


def test_a_caller_before_the_path_is_known_is_weighed_only_against_lags_still_possible() -> None:
    """Silence for 400 ms of answer rules out the lags up to about that: a caller who starts
    then is held only by the answer's first moments at the lags not yet heard, not by the
    whole last 800 ms of playback, and the longer the quiet, the fewer such lags."""
    settings = EchoSettings(max_delay_ms=800)
    far = babble(3.0, 51)
    canceller = EchoCanceller(RATE, settings)
    canceller.play(far, RATE, at_ms=0.0)
    run(canceller, np.zeros(int(0.4 * RATE), np.float32))
    ruled = canceller._ruled_out
    frame_ms = settings.frame_ms
    assert ruled[: 300 // frame_ms].all() and not ruled[500 // frame_ms :].any()
    assert not canceller.no_echo_path


def test_playback_at_another_rate_is_placed_on_time() -> None:
    from openrealtime.audio.resample import resample

    far16 = babble(3.0, 8)
    far24 = resample(far16, RATE, 24_000)
    canceller = EchoCanceller(RATE)
    for i in range(0, far24.size, 480):  # 20 ms chunks at 24 kHz, stamped
        canceller.play(far24[i : i + 480], 24_000, 250.0 + i / 24)
    echo = np.concatenate((np.zeros(int(0.25 * RATE) + 960, np.float32), far16))[: far16.size] * 0.5
    run(canceller, echo)
    assert canceller.delay_ms == pytest.approx(60, abs=1.0)


def test_rejects_partial_frames() -> None:
    canceller = EchoCanceller(RATE)
    with pytest.raises(ValueError):
        canceller.process(np.zeros(300, np.float32), 0.0)
    with pytest.raises(ValueError):
        canceller.play(np.zeros((2, 10), np.float32), RATE)


@pytest.mark.parametrize("off_ms", [-60, 0, 45])
def test_a_run_heard_off_its_placement_is_moved_there_once_and_held(off_ms: int) -> None:
    """An answer's second piece, placed after a gap where the server's view of the input clock
    stood, is heard ``off_ms`` later by the client: its offset is measured from its echo, the
    run moved there and held, and the filter's reduction over it matches the first run's."""
    first, second = babble(2.5, 21), babble(3.0, 22)
    placed_ms, heard_ms = 5000, 5000 + off_ms
    played = np.zeros(int(9.0 * RATE), np.float32)
    played[RATE // 2 : RATE // 2 + first.size] = first
    at = heard_ms * RATE // 1000
    played[at : at + second.size] = second
    ir = room_impulse_response(RATE, rt60_s=0.25, seed=23)
    noise = (np.random.default_rng(24).standard_normal(played.size) * 3e-4).astype(np.float32)
    mic = echo_of(played, RATE, delay_ms=100, level_db=-6.0, ir=ir) + noise
    canceller = EchoCanceller(RATE)
    canceller.play(first, RATE, at_ms=500.0)
    split = placed_ms * RATE // 1000 // 512 * 512  # the second piece arrives at its placement
    run(canceller, mic[:split])
    canceller.play(second, RATE, at_ms=float(placed_ms))
    for i in range(split, mic.size // 512 * 512, 512):
        canceller.process(mic[i : i + 512], i * 1000 / RATE)
    canceller.close()
    assert canceller.delay_ms == pytest.approx(100, abs=1.0)  # the path: kept, never re-learnt
    assert canceller.resets == 0
    assert canceller._run_shift * 1000 / RATE == pytest.approx(off_ms, abs=2.0)
    first_db, second_db = canceller.run_reductions_db
    assert second_db > 10.0 and second_db > first_db - 3.0, canceller.run_reductions_db
