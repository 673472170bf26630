"""Per-turn traces built from the turn timings, on a fake clock and an in-memory exporter."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from openrealtime.protocol import server_events as se
from openrealtime.runtime.observer import SessionInfo
from openrealtime.telemetry.tracing import TurnTracer, traces_endpoint

INFO = SessionInfo(session_id="sess_1", key_id="key_1", transport="websocket", model="gpt-realtime")
MS = 1_000_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000_000 * MS

    def __call__(self) -> int:
        return self.now


def test_endpoint_resolution() -> None:
    assert traces_endpoint(None, {}) is None
    assert traces_endpoint("http://c:4318", {}) == "http://c:4318/v1/traces"
    assert traces_endpoint("http://c:4318/v1/traces", {}) == "http://c:4318/v1/traces"
    assert (
        traces_endpoint(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}) == "http://c:4318/v1/traces"
    )
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t/x", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}
    assert traces_endpoint(None, env) == "http://t/x"
    assert traces_endpoint("http://c:4318", {"OTEL_SDK_DISABLED": "true"}) is None


def test_a_voice_turn_becomes_one_trace_with_stage_spans() -> None:
    clock, exporter = FakeClock(), InMemorySpanExporter()
    tracer = TurnTracer(exporter, clock=clock)
    tracer.session_started(INFO)
    t0 = clock.now
    tracer.server_event(INFO, se.InputAudioBufferSpeechStarted(audio_start_ms=0, item_id="item_1"))
    clock.now = t0 + 1500 * MS  # speech ends at t0 + 1500 ms; response created 200 ms later
    clock.now += 200 * MS
    tracer.server_event(INFO, se.ResponseCreated(response={"id": "resp_1"}))
    clock.now += 3000 * MS
    tracer.server_event(INFO, se.ResponseDone(response={"id": "resp_1", "status": "completed"}))
    record = {
        "response_id": "resp_1",
        "from": "speech_stopped",
        "transcript_ready_ms": 150.0,
        "response_created_ms": 200.0,
        "llm_first_token_ms": 500.0,
        "first_piece_ms": 650.0,
        "tts_first_chunk_ms": 800.0,
        "first_audio_sent_ms": 810.0,
        "asr_queue_wait_ms": 0.0,
        "llm_queue_wait_ms": 1.5,
    }
    tracer.turn_timings(INFO, record)
    tracer.provider.force_flush()
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {
        "realtime.turn",
        "listen",
        "transcribe",
        "llm.first_token",
        "tts.first_chunk",
        "audio.first_sent",
    }
    root = spans["realtime.turn"]
    assert root.parent is None
    assert {span.context.trace_id for span in spans.values()} == {root.context.trace_id}
    assert all(span.parent is not None and span.parent.span_id == root.context.span_id
               for name, span in spans.items() if name != "realtime.turn")  # fmt: skip
    end_of_speech = t0 + 1500 * MS
    assert (spans["listen"].start_time, spans["listen"].end_time) == (t0, end_of_speech)
    assert spans["transcribe"].end_time == end_of_speech + 150 * MS
    assert spans["llm.first_token"].start_time == end_of_speech + 200 * MS
    assert spans["llm.first_token"].end_time == end_of_speech + 500 * MS
    assert spans["tts.first_chunk"].start_time == end_of_speech + 650 * MS
    assert spans["audio.first_sent"].end_time == end_of_speech + 810 * MS
    assert root.start_time == t0 and root.end_time == clock.now
    attributes = dict(root.attributes or {})
    assert attributes["session.id"] == "sess_1" and attributes["response.id"] == "resp_1"
    assert attributes["transport"] == "websocket" and attributes["model"] == "gpt-realtime"
    assert attributes["response.status"] == "completed"
    assert attributes["turn.first_audio_sent_ms"] == pytest.approx(810.0)
    assert "key_1" not in str(attributes)
    tracer.shutdown()


def test_a_text_turn_has_no_listen_or_transcribe_span() -> None:
    clock, exporter = FakeClock(), InMemorySpanExporter()
    tracer = TurnTracer(exporter, clock=clock)
    tracer.session_started(INFO)
    tracer.server_event(INFO, se.InputAudioBufferSpeechStarted(audio_start_ms=0, item_id="item_0"))
    clock.now += 5000 * MS
    created = clock.now
    tracer.server_event(INFO, se.ResponseCreated(response={"id": "resp_2"}))
    clock.now += 900 * MS
    record = {"response_id": "resp_2", "from": "response_created", "response_created_ms": 0.0,
              "llm_first_token_ms": 300.0, "first_piece_ms": None, "tts_first_chunk_ms": None,
              "first_audio_sent_ms": None, "transcript_ready_ms": None}  # fmt: skip
    tracer.turn_timings(INFO, record)
    tracer.provider.force_flush()
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {"realtime.turn", "llm.first_token"}
    assert spans["realtime.turn"].start_time == created
    assert spans["llm.first_token"].end_time == created + 300 * MS
    tracer.shutdown()
