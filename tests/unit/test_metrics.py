"""The metrics observer: glitch accounting on a fake clock, counters and histograms."""

from __future__ import annotations

import numpy as np
import pytest

from openrealtime.core.events import OutputAudio
from openrealtime.core.usage import Usage
from openrealtime.protocol import server_events as se
from openrealtime.runtime.observer import SessionInfo
from openrealtime.telemetry.metrics import MetricsObserver, Playback, schedule_chunk

INFO = SessionInfo(session_id="sess_1", key_id="key_1", transport="websocket", model="gpt-realtime")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- schedule_chunk


def test_first_chunk_starts_playback_and_is_never_late() -> None:
    playback, lateness = schedule_chunk(None, 10.0, 0.2)
    assert playback == Playback(10.2) and lateness == 0.0


def test_chunks_sent_ahead_of_playback_are_in_time() -> None:
    playback, _ = schedule_chunk(None, 10.0, 0.2)
    for now in (10.0, 10.1, 10.35):  # positions 0.2, 0.4, 0.6 s: all still in the future
        playback, lateness = schedule_chunk(playback, now, 0.2)
        assert lateness == 0.0
    assert playback.ends_at == pytest.approx(10.8)


def test_a_chunk_due_in_the_past_is_late_by_the_gap() -> None:
    playback, _ = schedule_chunk(None, 10.0, 0.2)
    playback, lateness = schedule_chunk(playback, 10.5, 0.2)  # due at 10.2
    assert lateness == pytest.approx(0.3)
    assert playback.ends_at == pytest.approx(10.7)  # playback resumes from the late chunk


def test_one_stall_counts_once_and_the_schedule_restarts_after_it() -> None:
    playback, _ = schedule_chunk(None, 0.0, 0.2)
    playback, late = schedule_chunk(playback, 1.0, 0.2)  # due at 0.2: late by 0.8
    assert late == pytest.approx(0.8)
    playback, late = schedule_chunk(playback, 1.1, 0.2)  # due at 1.2 on the new schedule
    assert late == 0.0
    playback, late = schedule_chunk(playback, 1.4, 0.2)  # due at 1.4: exactly in time
    assert late == 0.0
    _, late = schedule_chunk(playback, 1.7, 0.2)  # due at 1.6
    assert late == pytest.approx(0.1)


# --------------------------------------------------------------------------- the observer


def speech(response_id: str, ms: int, fmt: str = "audio/pcm") -> OutputAudio:
    """``ms`` of a response's speech as the runtime sends it (24 kHz PCM)."""
    return OutputAudio(response_id, "item_1", 0, 0, np.zeros(24 * ms, dtype=np.int16), fmt)


def value(observer: MetricsObserver, name: str, **labels: str) -> float:
    sample = observer.registry.get_sample_value(name, labels)
    return 0.0 if sample is None else sample


def test_late_audio_chunks_are_counted_per_response() -> None:
    clock = FakeClock()
    observer = MetricsObserver(clock=clock)
    observer.session_started(INFO)
    observer.output_audio(INFO, speech("resp_1", 200))
    clock.now += 0.1
    observer.output_audio(INFO, speech("resp_1", 200))  # due at +0.2: in time
    clock.now += 0.45
    observer.output_audio(INFO, speech("resp_1", 200))  # due at +0.4: 0.15 s late
    assert value(observer, "openrealtime_audio_late_chunks_total") == 1
    assert value(observer, "openrealtime_audio_chunk_lateness_seconds_sum") == pytest.approx(0.15)
    observer.output_audio(INFO, speech("resp_2", 200))  # a new response starts its own clock
    assert value(observer, "openrealtime_audio_late_chunks_total") == 1


def test_g711_output_durations_are_the_speech_not_its_wire_size() -> None:
    clock = FakeClock()
    observer = MetricsObserver(clock=clock)
    observer.session_started(INFO)
    observer.output_audio(INFO, speech("resp_1", 200, "audio/pcmu"))  # 200 ms, sent as G.711
    clock.now += 0.19
    observer.output_audio(INFO, speech("resp_1", 200, "audio/pcmu"))  # due at +0.2
    assert value(observer, "openrealtime_audio_late_chunks_total") == 0
    clock.now += 0.3
    observer.output_audio(INFO, speech("resp_1", 200, "audio/pcmu"))  # due at +0.4: late
    assert value(observer, "openrealtime_audio_late_chunks_total") == 1


def test_events_errors_sessions_and_usage() -> None:
    observer = MetricsObserver()
    observer.session_started(INFO)
    assert value(observer, "openrealtime_active_sessions", transport="websocket") == 1
    observer.client_event(INFO, "session.update")
    observer.client_event(INFO, "invalid")
    observer.server_event(INFO, se.ErrorEvent(error={"code": "invalid_json", "message": "x"}))
    usage = Usage(
        input_text_tokens=120,
        cached_text_tokens=64,
        input_audio_ms=2500,
        output_text_tokens=30,
        output_audio_ms=4000,
    ).wire()
    observer.server_event(
        INFO, se.ResponseDone(response={"id": "resp_1", "status": "completed", "usage": usage})
    )
    assert value(observer, "openrealtime_client_events_total", type="session.update") == 1
    assert value(observer, "openrealtime_client_events_total", type="invalid") == 1
    assert value(observer, "openrealtime_server_events_total", type="error") == 1
    assert value(observer, "openrealtime_errors_total", code="invalid_json") == 1
    assert value(observer, "openrealtime_responses_total", status="completed") == 1
    assert value(observer, "openrealtime_tokens_total", type="input_text") == 120
    assert value(observer, "openrealtime_tokens_total", type="input_cached") == 64
    assert value(observer, "openrealtime_tokens_total", type="input_audio") == 25
    assert value(observer, "openrealtime_tokens_total", type="output_text") == 30
    assert value(observer, "openrealtime_tokens_total", type="output_audio") == 80
    # list prices (USD per 1M): 56 text + 64 cached text + 25 audio in; 30 text + 80 audio out
    expected = (56 * 4.0 + 64 * 0.4 + 25 * 32.0 + 30 * 16.0 + 80 * 64.0) / 1e6
    assert value(observer, "openrealtime_cost_usd_total") == pytest.approx(expected)
    observer.session_ended(INFO)
    assert value(observer, "openrealtime_active_sessions", transport="websocket") == 0
    observer.session_ended(INFO)  # told twice, or about a session that never started: no change
    assert value(observer, "openrealtime_active_sessions", transport="websocket") == 0


def test_turn_timings_fill_the_stage_histograms() -> None:
    observer = MetricsObserver()
    record = {
        "response_id": "resp_1",
        "from": "speech_stopped",
        "transcript_ready_ms": 180.0,
        "response_created_ms": 2.0,
        "llm_first_token_ms": 420.0,
        "first_piece_ms": 600.0,
        "tts_first_chunk_ms": 750.0,
        "first_audio_sent_ms": 760.0,
        "asr_queue_wait_ms": 0.1,
        "llm_queue_wait_ms": 0.2,
    }
    observer.turn_timings(INFO, record)
    observer.turn_timings(INFO, {**record, "from": "response_created", "transcript_ready_ms": None})
    labels = {"origin": "speech_stopped"}
    count = "openrealtime_turn_latency_seconds_count"
    assert value(observer, count, stage="first_audio", **labels) == 1
    assert value(observer, "openrealtime_turn_latency_seconds_sum", stage="first_audio", **labels) == (
        pytest.approx(0.76)
    )
    assert value(observer, count, stage="transcript", **labels) == 1
    assert value(observer, count, stage="transcript", origin="response_created") == 0
    assert value(observer, count, stage="llm_first_token", origin="response_created") == 1
    # 0.76 s lands in the 0.75 < le <= 1.0 bucket
    bucket = "openrealtime_turn_latency_seconds_bucket"
    assert value(observer, bucket, stage="first_audio", le="0.75", **labels) == 0
    assert value(observer, bucket, stage="first_audio", le="1.0", **labels) == 1


def test_queue_waits_and_exposition() -> None:
    observer = MetricsObserver()
    observer.observe_queue_wait("llm", 0.003)
    observer.observe_queue_wait("llm", 0.2)
    assert value(observer, "openrealtime_engine_queue_wait_seconds_count", engine="llm") == 2
    text = observer.exposition().decode()
    assert "# TYPE openrealtime_engine_queue_wait_seconds histogram" in text
    assert 'openrealtime_engine_queue_wait_seconds_bucket{engine="llm",le="0.005"} 1.0' in text


def test_registries_are_separate_per_observer() -> None:
    first, second = MetricsObserver(), MetricsObserver()
    first.client_event(INFO, "session.update")
    assert value(second, "openrealtime_client_events_total", type="session.update") == 0
