"""OpenTelemetry traces: one trace per response (a turn), one child span per stage.

Enabled only when an OTLP endpoint is configured (``otlp_endpoint`` or the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``). Spans are built
after the turn from its stage timings, with explicit start and end times, so tracing adds no
work on the audio path. Attributes are ids and timings only: never keys, text or audio.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from ..protocol.server_events import ServerEvent
from ..runtime.observer import SessionInfo

TRACES_PATH = "/v1/traces"
TIMING_ATTRIBUTES = (
    "transcript_ready_ms",
    "response_created_ms",
    "llm_first_token_ms",
    "first_piece_ms",
    "tts_first_chunk_ms",
    "first_audio_sent_ms",
    "upstream_first_output_ms",
    "asr_queue_wait_ms",
    "llm_queue_wait_ms",
)


def traces_endpoint(setting: str | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The OTLP/HTTP traces URL, or ``None`` when tracing is off.

    ``setting`` and ``OTEL_EXPORTER_OTLP_ENDPOINT`` are base URLs (``/v1/traces`` is appended,
    as the OpenTelemetry spec says); ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is used as is.
    """
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    if setting:
        base = setting.rstrip("/")
        return base if base.endswith(TRACES_PATH) else base + TRACES_PATH
    if environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + TRACES_PATH
    return None


@dataclass
class _SessionMarks:
    speech_started_ns: int | None = None
    created_ns: dict[str, int] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)


class TurnTracer:
    """A ``SessionObserver`` that exports one trace per finished response."""

    def __init__(self, exporter: SpanExporter, *, clock: Callable[[], int] = time.time_ns) -> None:
        self.provider = TracerProvider(resource=Resource.create({"service.name": "openrealtime"}))
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("openrealtime")
        self._clock = clock
        self._sessions: dict[str, _SessionMarks] = {}

    @classmethod
    def from_settings(cls, otlp_endpoint: str | None) -> TurnTracer | None:
        endpoint = traces_endpoint(otlp_endpoint)
        if endpoint is None:
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return cls(OTLPSpanExporter(endpoint=endpoint))

    def shutdown(self) -> None:
        """Export what is still buffered and stop the exporter."""
        self.provider.shutdown()

    # ------------------------------------------------------------------ SessionObserver

    def session_started(self, info: SessionInfo) -> None:
        self._sessions[info.session_id] = _SessionMarks()

    def session_ended(self, info: SessionInfo) -> None:
        self._sessions.pop(info.session_id, None)

    def client_event(self, info: SessionInfo, event_type: str) -> None:
        return None

    def server_event(self, info: SessionInfo, event: ServerEvent) -> None:
        kind = event.type
        if kind == "input_audio_buffer.speech_started":
            self._marks(info).speech_started_ns = self._clock()
        elif kind == "response.created":
            response: Mapping[str, Any] = getattr(event, "response", {})
            self._marks(info).created_ns[str(response.get("id"))] = self._clock()
        elif kind == "response.done":
            response = getattr(event, "response", {})
            self._marks(info).status[str(response.get("id"))] = str(response.get("status"))

    def turn_timings(self, info: SessionInfo, record: dict[str, Any]) -> None:
        now = self._clock()
        marks = self._marks(info)
        response_id = str(record.get("response_id"))
        created_ns = marks.created_ns.pop(response_id, now)
        status = marks.status.pop(response_id, "unknown")

        # the record counts ms from the end of the user's speech (voice turns) or from the
        # response's creation; the wall time of response.created anchors it
        base = created_ns - int(float(record.get("response_created_ms") or 0.0) * 1e6)

        def at(key: str) -> int | None:
            value = record.get(key)
            return base + int(value * 1e6) if isinstance(value, int | float) else None

        spoken = record.get("from") == "speech_stopped"
        listen_start = marks.speech_started_ns
        if not spoken or listen_start is None or listen_start >= base:
            listen_start = None
        attributes: dict[str, Any] = {
            "session.id": info.session_id,
            "response.id": response_id,
            "response.status": status,
            "transport": info.transport,
            "model": info.model,
            "turn.origin": str(record.get("from")),
        }
        attributes.update(
            {f"turn.{key}": float(record[key]) for key in TIMING_ATTRIBUTES if record.get(key) is not None}
        )
        root = self.tracer.start_span("realtime.turn", start_time=listen_start or base, attributes=attributes)
        context = trace.set_span_in_context(root)
        ids = {"session.id": info.session_id, "response.id": response_id}

        def stage(name: str, start: int | None, end: int | None) -> None:
            if start is None or end is None:
                return
            span = self.tracer.start_span(name, context=context, start_time=start, attributes=ids)
            span.end(end_time=max(start, end))

        stage("listen", listen_start, base)
        if spoken:
            stage("transcribe", base, at("transcript_ready_ms"))
        llm_first_token = at("llm_first_token_ms")
        tts_first_chunk = at("tts_first_chunk_ms")
        stage("llm.first_token", created_ns, llm_first_token)
        stage("tts.first_chunk", at("first_piece_ms") or llm_first_token, tts_first_chunk)
        stage("audio.first_sent", tts_first_chunk, at("first_audio_sent_ms"))
        stage("upstream.first_output", created_ns, at("upstream_first_output_ms"))
        root.end(end_time=max(now, base))

    def _marks(self, info: SessionInfo) -> _SessionMarks:
        return self._sessions.setdefault(info.session_id, _SessionMarks())
