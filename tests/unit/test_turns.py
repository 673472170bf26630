"""The pure server_vad / semantic_vad segmenter, driven by synthetic probability sequences."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openrealtime.core.turns import (
    EdgeRefinement,
    EndOfTurnRequested,
    SegmenterEvent,
    SegmenterState,
    SemanticVadConfig,
    ServerVadConfig,
    SpeechSegmenter,
    SpeechStarted,
    SpeechStopped,
)

FRAME = 32.0
RAW = {"refinement": None}


def feed(
    seg: SpeechSegmenter,
    probs: Sequence[float],
    *,
    start_frame: int = 0,
    levels: Sequence[float | None] | None = None,
) -> list[tuple[int, SegmenterEvent]]:
    """Feed 32 ms frames; return (frame index, event) pairs."""
    out = []
    for i, p in enumerate(probs):
        k = start_frame + i
        level = levels[i] if levels is not None else None
        out.extend((k, ev) for ev in seg.process(p, k * FRAME, (k + 1) * FRAME, level))
    return out


def events(pairs: list[tuple[int, SegmenterEvent]]) -> list[SegmenterEvent]:
    return [ev for _, ev in pairs]


# --------------------------------------------------------------------------- server_vad


def test_silence_alone_emits_nothing() -> None:
    seg = SpeechSegmenter(ServerVadConfig(**RAW))
    assert feed(seg, [0.0, 0.1, 0.3, 0.49] * 50) == []
    assert seg.state is SegmenterState.IDLE


def test_one_utterance_edges_and_timing() -> None:
    seg = SpeechSegmenter(ServerVadConfig(prefix_padding_ms=300, silence_duration_ms=500, **RAW))
    got = feed(seg, [0.0] * 20 + [0.9] * 30 + [0.0] * 30)
    # Onset at frame 20 (640 ms), confirmed once 80 ms are covered: end of frame 22.
    assert got[0] == (22, SpeechStarted(audio_start_ms=340, speech_start_ms=640.0))
    # Speech ends at the end of frame 49 (1600 ms); 500 ms of silence ends at 2100 ms,
    # reached at the end of frame 65 (2112 ms).
    assert got[1] == (65, SpeechStopped(audio_end_ms=1600, detected_at_ms=2112, reason="silence"))
    assert len(got) == 2
    assert seg.state is SegmenterState.IDLE
    assert seg.buffer_start_ms == 2112


def test_prefix_padding_is_clamped_to_the_buffer_start() -> None:
    seg = SpeechSegmenter(ServerVadConfig(prefix_padding_ms=300, silence_duration_ms=200, **RAW))
    first = events(feed(seg, [0.0] * 3 + [1.0] * 5 + [0.0] * 10))
    assert first[0] == SpeechStarted(audio_start_ms=0, speech_start_ms=96.0)
    assert first[1] == SpeechStopped(audio_end_ms=256, detected_at_ms=480, reason="silence")
    # The next onset (640 ms) is 160 ms after the commit point: its prefix stops there.
    second = events(feed(seg, [0.0] * 2 + [1.0] * 5, start_frame=18))
    assert second[0] == SpeechStarted(audio_start_ms=480, speech_start_ms=640.0)


def test_clicks_shorter_than_min_speech_never_start_a_turn() -> None:
    seg = SpeechSegmenter(ServerVadConfig(min_speech_duration_ms=80, **RAW))
    assert feed(seg, ([0.0] * 10 + [1.0, 1.0]) * 10 + [0.0] * 10) == []
    got = events(feed(seg, [1.0] * 3, start_frame=200))
    assert got == [SpeechStarted(audio_start_ms=200 * 32 - 300, speech_start_ms=200 * 32)]


def test_candidate_survives_hysteresis_band_but_not_silence() -> None:
    seg = SpeechSegmenter(ServerVadConfig(threshold=0.5, **RAW))  # neg threshold 0.35
    assert feed(seg, [0.6, 0.4, 0.0]) == []  # dropped on the third frame
    got = events(feed(seg, [0.6, 0.4, 0.4], start_frame=10))
    assert got == [SpeechStarted(audio_start_ms=20, speech_start_ms=320.0)]


def test_hysteresis_keeps_speech_until_below_negative_threshold() -> None:
    seg = SpeechSegmenter(ServerVadConfig(silence_duration_ms=100, **RAW))
    got = feed(seg, [1.0] * 5 + [0.4] * 20 + [0.3] * 5)
    stop = got[-1][1]
    assert isinstance(stop, SpeechStopped)
    assert stop.audio_end_ms == 25 * 32  # the 0.4 frames still count as speech
    assert got[-1][0] == 25 + 3  # 100 ms of silence: 4 frames


def test_short_pauses_do_not_end_the_turn() -> None:
    seg = SpeechSegmenter(ServerVadConfig(silence_duration_ms=500, **RAW))
    got = events(feed(seg, [1.0] * 10 + [0.0] * 14 + [1.0] * 10 + [0.0] * 20))
    assert [type(e) for e in got] == [SpeechStarted, SpeechStopped]
    assert isinstance(got[1], SpeechStopped) and got[1].audio_end_ms == 34 * 32


def test_a_click_during_trailing_silence_does_not_restart_the_wait() -> None:
    cfg = ServerVadConfig(silence_duration_ms=320, **RAW)
    plain = feed(SpeechSegmenter(cfg), [1.0] * 5 + [0.0] * 20)
    clicked = feed(SpeechSegmenter(cfg), [1.0] * 5 + [0.0] * 4 + [1.0] + [0.0] * 15)
    assert plain == clicked


def test_resumed_speech_must_also_last_min_speech() -> None:
    seg = SpeechSegmenter(ServerVadConfig(silence_duration_ms=320, **RAW))
    got = feed(seg, [1.0] * 5 + [0.0] * 5 + [1.0] * 3 + [0.0] * 12)
    stop = got[-1][1]
    assert isinstance(stop, SpeechStopped) and stop.audio_end_ms == 13 * 32
    assert got[-1][0] == 13 + 9


def test_reset_and_buffer_start_control() -> None:
    seg = SpeechSegmenter(ServerVadConfig(**RAW))
    feed(seg, [1.0] * 5)
    assert seg.in_speech
    seg.reset(buffer_start_ms=1000.0)
    assert not seg.in_speech and seg.state is SegmenterState.IDLE
    got = events(feed(seg, [1.0] * 3, start_frame=33))
    assert got == [SpeechStarted(audio_start_ms=1000, speech_start_ms=33 * 32)]
    seg.set_buffer_start(5000.0)
    assert seg.buffer_start_ms == 5000.0


def test_rejects_time_going_backwards_and_nan() -> None:
    seg = SpeechSegmenter()
    seg.process(0.0, 0.0, 32.0)
    with pytest.raises(ValueError):
        seg.process(0.0, 0.0, 32.0)
    with pytest.raises(ValueError):
        seg.process(float("nan"), 32.0, 64.0)
    with pytest.raises(ValueError):
        seg.process(0.0, 64.0, 64.0)


def test_gaps_in_frames_count_as_silence() -> None:
    seg = SpeechSegmenter(ServerVadConfig(silence_duration_ms=500, **RAW))
    feed(seg, [1.0] * 5)
    got = seg.process(0.0, 1000.0, 1032.0)
    assert got == [SpeechStopped(audio_end_ms=160, detected_at_ms=1032, reason="silence")]


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        ServerVadConfig(threshold=1.5)
    with pytest.raises(ValueError):
        ServerVadConfig(threshold=0.5, negative_threshold=0.6)
    with pytest.raises(ValueError):
        SemanticVadConfig(eagerness="eager")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SemanticVadConfig(min_silence_ms=500, max_silence_ms=200)
    assert ServerVadConfig(threshold=0.1).neg_threshold == 0.01
    assert ServerVadConfig(threshold=0.5).neg_threshold == pytest.approx(0.35)


# --------------------------------------------------------------------------- edge refinement


def test_end_is_reported_before_the_vad_release_lag() -> None:
    seg = SpeechSegmenter(ServerVadConfig(silence_duration_ms=200))
    got = events(feed(seg, [0.0] * 5 + [1.0] * 20 + [0.0] * 10))
    stop = got[-1]
    assert isinstance(stop, SpeechStopped)
    assert stop.audio_end_ms == 25 * 32 - 96
    # silence counts from the refined end (704 ms): the first frame end at or past 904 ms
    assert stop.detected_at_ms == 25 * 32 + 128


def test_end_compensation_never_crosses_the_onset() -> None:
    seg = SpeechSegmenter(ServerVadConfig(refinement=EdgeRefinement(end_compensation_ms=1000.0)))
    got = events(feed(seg, [0.0] * 5 + [1.0] * 5 + [0.0] * 30))
    assert isinstance(got[-1], SpeechStopped) and got[-1].audio_end_ms == 5 * 32


def test_onset_moves_back_over_loud_frames_the_vad_missed() -> None:
    # A weak fricative: loud (-40 dB) but the VAD says 0.1 for three frames before voicing.
    probs = [0.0] * 20 + [0.1] * 3 + [1.0] * 10
    levels: list[float | None] = [-70.0] * 20 + [-40.0] * 3 + [-20.0] * 10
    seg = SpeechSegmenter(ServerVadConfig(prefix_padding_ms=300))
    got = events(feed(seg, probs, levels=levels))
    assert got[0] == SpeechStarted(audio_start_ms=20 * 32 - 300, speech_start_ms=20 * 32)
    assert seg.noise_floor_db == -70.0


def test_onset_lookback_is_bounded_and_needs_a_margin_over_the_floor() -> None:
    probs = [0.0] * 20 + [0.1] * 10 + [1.0] * 5
    seg = SpeechSegmenter(ServerVadConfig())
    got = events(feed(seg, probs, levels=[-70.0] * 20 + [-40.0] * 10 + [-20.0] * 5))
    assert isinstance(got[0], SpeechStarted) and got[0].speech_start_ms == 30 * 32 - 160
    seg = SpeechSegmenter(ServerVadConfig())
    got = events(feed(seg, probs, levels=[-70.0] * 20 + [-60.0] * 10 + [-20.0] * 5))
    assert isinstance(got[0], SpeechStarted) and got[0].speech_start_ms == 30 * 32


def test_without_levels_the_vad_onset_stands() -> None:
    seg = SpeechSegmenter(ServerVadConfig())
    got = events(feed(seg, [0.0] * 20 + [0.1] * 3 + [1.0] * 10))
    assert isinstance(got[0], SpeechStarted) and got[0].speech_start_ms == 23 * 32
    assert seg.noise_floor_db is None


# --------------------------------------------------------------------------- semantic_vad


def semantic(**kwargs: object) -> SpeechSegmenter:
    """The flat rules (smart-turn's threshold, the eagerness timeout); combined=True below."""
    kwargs.setdefault("combined", False)
    return SpeechSegmenter(SemanticVadConfig(refinement=None, **kwargs))  # type: ignore[arg-type]


def test_semantic_asks_the_turn_detector_after_min_silence() -> None:
    seg = semantic(min_silence_ms=250)
    got = feed(seg, [1.0] * 10 + [0.0] * 8)
    assert got[-1] == (
        17,
        EndOfTurnRequested(request_id=1, audio_start_ms=0, audio_end_ms=18 * 32, speech_end_ms=320),
    )
    assert seg.pending_request == 1
    # Only one request at a time.
    assert feed(seg, [0.0] * 5, start_frame=18) == []
    stop = seg.end_of_turn_result(1, 0.9)
    assert stop == [
        SpeechStopped(
            audio_end_ms=320, detected_at_ms=23 * 32, reason="end_of_turn", end_of_turn_probability=0.9
        )
    ]
    assert seg.state is SegmenterState.IDLE


def test_semantic_low_probability_waits_then_asks_again_then_times_out() -> None:
    seg = semantic(eagerness="medium", retry_interval_ms=1000)
    got = feed(seg, [1.0] * 10 + [0.0] * 8)
    assert isinstance(got[-1][1], EndOfTurnRequested)
    assert seg.end_of_turn_result(1, 0.2) == []
    # Silence is 256 ms at the answer; the next question comes once it reaches 1256 ms,
    # i.e. at 1576 ms on the clock: the end of frame 49.
    got = feed(seg, [0.0] * 40, start_frame=18)
    asks = [(k, ev) for k, ev in got if isinstance(ev, EndOfTurnRequested)]
    assert asks == [
        (49, EndOfTurnRequested(request_id=2, audio_start_ms=0, audio_end_ms=50 * 32, speech_end_ms=320))
    ]
    assert seg.end_of_turn_result(2, 0.1) == []
    got = feed(seg, [0.0] * 100, start_frame=58)
    stops = [(k, ev) for k, ev in got if isinstance(ev, SpeechStopped)]
    # 4 s of silence from 320 ms: reached at the end of frame 134 (4320 ms).
    assert stops == [
        (
            134,
            SpeechStopped(
                audio_end_ms=320, detected_at_ms=4320, reason="max_silence", end_of_turn_probability=0.1
            ),
        )
    ]


@pytest.mark.parametrize(
    ("eagerness", "max_ms"), [("low", 8000), ("medium", 4000), ("auto", 4000), ("high", 2000)]
)
def test_eagerness_sets_the_max_wait(eagerness: str, max_ms: int) -> None:
    seg = semantic(eagerness=eagerness)
    got = feed(seg, [1.0] * 10 + [0.0] * 300)  # never answer the detector
    stops = [ev for _, ev in got if isinstance(ev, SpeechStopped)]
    assert len(stops) == 1
    assert stops[0].reason == "max_silence"
    assert stops[0].detected_at_ms - stops[0].audio_end_ms in range(max_ms, max_ms + 32)


def test_eagerness_sets_the_probability_threshold() -> None:
    for eagerness, p, stops in [
        ("high", 0.35, True),
        ("medium", 0.35, False),
        ("low", 0.6, False),
        ("low", 0.75, True),
    ]:
        seg = semantic(eagerness=eagerness)
        feed(seg, [1.0] * 10 + [0.0] * 8)
        assert bool(seg.end_of_turn_result(1, p)) is stops


def test_stale_answers_are_ignored_after_the_user_resumes() -> None:
    seg = semantic()
    feed(seg, [1.0] * 10 + [0.0] * 8)
    assert seg.pending_request == 1
    feed(seg, [1.0] * 3, start_frame=18)  # user speaks again
    assert seg.pending_request is None
    assert seg.end_of_turn_result(1, 0.99) == []
    assert seg.in_speech
    got = feed(seg, [0.0] * 8, start_frame=21)
    assert events(got) == [
        EndOfTurnRequested(request_id=2, audio_start_ms=0, audio_end_ms=29 * 32, speech_end_ms=672)
    ]
    assert seg.end_of_turn_result(2, 0.99)[0] == SpeechStopped(
        audio_end_ms=21 * 32, detected_at_ms=29 * 32, reason="end_of_turn", end_of_turn_probability=0.99
    )


def test_positive_answer_during_a_resume_candidate_waits_for_it_to_fail() -> None:
    seg = semantic()
    feed(seg, [1.0] * 10 + [0.0] * 8)
    feed(seg, [1.0], start_frame=18)  # one loud frame: a resume candidate, not yet speech
    assert seg.end_of_turn_result(1, 0.95) == []
    got = feed(seg, [0.0], start_frame=19)
    assert events(got) == [
        SpeechStopped(
            audio_end_ms=320, detected_at_ms=640, reason="end_of_turn", end_of_turn_probability=0.95
        )
    ]


def test_answers_for_unknown_ids_and_in_server_mode_are_ignored() -> None:
    seg = SpeechSegmenter(ServerVadConfig(**RAW))
    assert seg.end_of_turn_result(1, 1.0) == []
    seg = semantic()
    feed(seg, [1.0] * 10 + [0.0] * 8)
    assert seg.end_of_turn_result(7, 1.0) == []
    seg.update_config(ServerVadConfig(silence_duration_ms=500, **RAW))
    assert seg.end_of_turn_result(1, 1.0) == []
    got = events(feed(seg, [0.0] * 10, start_frame=18))
    assert got == [SpeechStopped(audio_end_ms=320, detected_at_ms=26 * 32, reason="silence")]


# --------------------------------------------------------------------------- properties


frames_strategy = st.lists(
    st.tuples(st.floats(0.0, 1.0), st.one_of(st.none(), st.floats(-120.0, 0.0))), min_size=1, max_size=300
)
config_strategy = st.one_of(
    st.builds(
        ServerVadConfig,
        threshold=st.floats(0.05, 0.95),
        prefix_padding_ms=st.integers(0, 1000),
        silence_duration_ms=st.integers(0, 1500),
        min_speech_duration_ms=st.integers(0, 200),
        refinement=st.one_of(st.none(), st.just(EdgeRefinement())),
    ),
    st.builds(
        SemanticVadConfig,
        eagerness=st.sampled_from(["low", "medium", "high", "auto"]),
        min_silence_ms=st.integers(0, 500),
        retry_interval_ms=st.one_of(st.none(), st.integers(1, 2000)),
        refinement=st.one_of(st.none(), st.just(EdgeRefinement())),
    ),
)


def run(
    cfg: ServerVadConfig | SemanticVadConfig, frames: list[tuple[float, float | None]], answers: list[float]
) -> list[SegmenterEvent]:
    seg = SpeechSegmenter(cfg)
    out: list[SegmenterEvent] = []
    answer_iter = iter(answers)
    for k, (p, level) in enumerate(frames):
        new = seg.process(p, k * FRAME, (k + 1) * FRAME, level)
        out.extend(new)
        for ev in new:
            if isinstance(ev, EndOfTurnRequested):
                answer = next(answer_iter, None)
                if answer is not None:
                    out.extend(seg.end_of_turn_result(ev.request_id, answer))
    return out


@settings(max_examples=300, deadline=None)
@given(cfg=config_strategy, frames=frames_strategy, answers=st.lists(st.floats(0.0, 1.0), max_size=20))
def test_event_invariants(
    cfg: ServerVadConfig | SemanticVadConfig, frames: list[tuple[float, float | None]], answers: list[float]
) -> None:
    out = run(cfg, frames, answers)
    assert out == run(cfg, frames, answers), "deterministic"
    in_turn = False
    started: SpeechStarted | None = None
    last_commit = 0
    for ev in out:
        if isinstance(ev, SpeechStarted):
            assert not in_turn
            in_turn, started = True, ev
            assert last_commit <= ev.audio_start_ms <= ev.speech_start_ms
            assert ev.speech_start_ms - ev.audio_start_ms <= cfg.prefix_padding_ms + 1
        elif isinstance(ev, SpeechStopped):
            assert in_turn and started is not None
            in_turn = False
            assert started.speech_start_ms <= ev.audio_end_ms <= ev.detected_at_ms
            if isinstance(cfg, ServerVadConfig):
                assert ev.reason == "silence"
                assert ev.detected_at_ms - ev.audio_end_ms >= cfg.silence_duration_ms
            else:
                assert ev.reason in ("end_of_turn", "max_silence")
                assert ev.detected_at_ms - ev.audio_end_ms >= cfg.min_silence_ms
            last_commit = ev.detected_at_ms
        else:
            assert in_turn and isinstance(cfg, SemanticVadConfig)
            assert started is not None and ev.audio_start_ms == started.audio_start_ms


@settings(max_examples=100, deadline=None)
@given(cfg=config_strategy, frames=frames_strategy)
def test_every_turn_ends_after_enough_silence(
    cfg: ServerVadConfig | SemanticVadConfig, frames: list[tuple[float, float | None]]
) -> None:
    seg = SpeechSegmenter(cfg)
    for k, (p, level) in enumerate(frames):
        seg.process(p, k * FRAME, (k + 1) * FRAME, level)
    n = len(frames)
    for k in range(n, n + 400):  # 12.8 s of silence, beyond every max wait
        seg.process(0.0, k * FRAME, (k + 1) * FRAME, -90.0)
    assert not seg.in_speech


# --------------------------------------------------------------------------- semantic_vad, combined


def combined(eagerness: str = "auto") -> SpeechSegmenter:
    return SpeechSegmenter(SemanticVadConfig(refinement=None, eagerness=eagerness))  # type: ignore[arg-type]


def test_combined_waits_for_the_pause_transcript_then_ends_on_a_complete_sentence() -> None:
    seg = combined()
    got = feed(seg, [1.0] * 10 + [0.0] * 8)  # speech ends at 320 ms; asked at 576 ms
    (request,) = [ev for ev in events(got) if isinstance(ev, EndOfTurnRequested)]
    assert request.speech_end_ms == 320
    # smart-turn is sure, but the transcript is still being made: wait for it
    assert seg.end_of_turn_result(request.request_id, 0.95, text_pending=True) == []
    assert feed(seg, [0.0] * 5, start_frame=18) == []
    # the text says "finished": the turn ends at auto's floor (one second of silence), not
    # inside it, where a mid-sentence pause that reads as finished would be cut
    assert seg.end_of_turn_result(request.request_id, None, text=0.9, text_pending=False) == []
    later = feed(seg, [0.0] * 30, start_frame=23)
    (stopped,) = [ev for ev in events(later) if isinstance(ev, SpeechStopped)]
    assert stopped.reason == "end_of_turn" and stopped.end_of_turn_probability is not None
    assert 320 + 1000 <= stopped.detected_at_ms <= 320 + 1000 + 32


def test_combined_unfinished_text_waits_longer_than_a_finished_one() -> None:
    def end_at(text: float) -> int:
        seg = combined()
        got = feed(seg, [1.0] * 10 + [0.0] * 8)
        (request,) = [ev for ev in events(got) if isinstance(ev, EndOfTurnRequested)]
        seg.end_of_turn_result(request.request_id, 0.5, text=text, text_pending=False)
        later = feed(seg, [0.0] * 200, start_frame=18)
        stops = [ev for ev in events(later) if isinstance(ev, SpeechStopped)]
        return stops[0].detected_at_ms - 320

    finished, unsure, unfinished = end_at(0.9), end_at(0.5), end_at(0.1)
    assert finished < unsure < unfinished
    assert unfinished >= 900  # a mid-sentence pause of 0.9 s does not end the turn
    assert unfinished <= 2600 + 32  # auto's budget ends it regardless


def test_combined_eagerness_keeps_its_meaning() -> None:
    def end_at(eagerness: str) -> int:
        seg = combined(eagerness)
        got = feed(seg, [1.0] * 10 + [0.0] * 8)
        (request,) = [ev for ev in events(got) if isinstance(ev, EndOfTurnRequested)]
        seg.end_of_turn_result(request.request_id, 0.4, text=0.4, text_pending=False)
        later = feed(seg, [0.0] * 300, start_frame=18)
        return next(ev for ev in events(later) if isinstance(ev, SpeechStopped)).detected_at_ms

    assert end_at("high") < end_at("auto") < end_at("low")


def test_combined_ignores_evidence_of_an_earlier_pause() -> None:
    seg = combined()
    got = feed(seg, [1.0] * 10 + [0.0] * 8)
    (request,) = [ev for ev in events(got) if isinstance(ev, EndOfTurnRequested)]
    feed(seg, [1.0] * 5, start_frame=18)  # the caller goes on
    feed(seg, [0.0] * 3, start_frame=23)
    assert seg.end_of_turn_result(request.request_id, 0.99, text=0.99, text_pending=False) == []
    assert seg.in_speech
