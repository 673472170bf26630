"""Prometheus metrics of live sessions, kept by a session observer in its own registry.

The observer only counts what the runtime reports (events, usage, turn timings, engine queue
waits); it never changes what a client sees. Label values come from the server's own
vocabulary (event types, error codes, stages, engines), never from client-chosen strings, so
the number of series stays bounded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..audio import formats
from ..core.events import OutputAudio
from ..protocol.server_events import ServerEvent
from ..runtime.observer import SessionInfo
from .ledger import response_record
from .prices import PriceTable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format served by ``GET /metrics``."""

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0)
QUEUE_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LATENESS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

STAGES = {
    "transcript_ready_ms": "transcript",
    "llm_first_token_ms": "llm_first_token",
    "tts_first_chunk_ms": "tts_first_chunk",
    "first_audio_sent_ms": "first_audio",
    "upstream_first_output_ms": "upstream_first_output",
}
"""Turn-timing fields (ms after the end of the user's speech) → the ``stage`` label."""

TOKEN_FIELDS = (
    ("input_token_details", "text_tokens", "input_text"),
    ("input_token_details", "audio_tokens", "input_audio"),
    ("input_token_details", "image_tokens", "input_image"),
    ("input_token_details", "cached_tokens", "input_cached"),
    ("output_token_details", "text_tokens", "output_text"),
    ("output_token_details", "audio_tokens", "output_audio"),
)
"""Where each ``type`` of the token counter sits in a ``response.done`` usage object."""

CostFunction = Callable[[SessionInfo, Mapping[str, Any]], float | None]
"""``(session, usage) -> USD`` for one response, or ``None`` when it has no price."""


# --------------------------------------------------------------------------- audio glitches


@dataclass(frozen=True)
class Playback:
    """Where a client's playback of one response stands: when the audio sent so far ends."""

    ends_at: float


def schedule_chunk(playback: Playback | None, now: float, duration_s: float) -> tuple[Playback, float]:
    """Account one audio chunk sent at ``now``; returns the new playback state and its lateness.

    The first chunk starts playing when it is sent (t0); each later chunk is due when the
    audio before it has finished playing, i.e. at t0 plus the duration of the earlier chunks.
    A chunk sent after that moment is late (the client's buffer ran dry: an underrun) by
    ``now - due``. After an underrun the client resumes playing from the late chunk, so the
    schedule restarts from its arrival and one stall counts once, not for every chunk after it.
    Lateness is 0.0 for a chunk in time.
    """
    if playback is None:
        return Playback(now + duration_s), 0.0
    if now > playback.ends_at:
        return Playback(now + duration_s), now - playback.ends_at
    return Playback(playback.ends_at + duration_s), 0.0


# --------------------------------------------------------------------------- cost


def list_price_cost(table: PriceTable | None = None) -> CostFunction:
    """Cost of a ``response.done`` usage object at the price table's prices (as the ledger bills)."""
    prices = table if table is not None else PriceTable()

    def cost(info: SessionInfo, usage: Mapping[str, Any]) -> float:
        return prices.cost(response_record(info, "", "completed", dict(usage), 0.0))

    return cost


# --------------------------------------------------------------------------- the observer


class MetricsObserver:
    """A ``SessionObserver`` that keeps the server's Prometheus metrics."""

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        cost: CostFunction | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.cost = cost if cost is not None else list_price_cost()
        """Prices each response's usage for ``openrealtime_cost_usd_total``."""
        self._clock = clock
        self._audio: dict[str, dict[str, Playback]] = {}
        """Session id → response id → where the client's playback of it stands."""
        self._open: set[str] = set()
        self._server_event_counters: dict[str, Counter] = {}
        self._client_event_counters: dict[str, Counter] = {}
        r = self.registry
        self.active_sessions = Gauge(
            "openrealtime_active_sessions", "Sessions open now.", ["transport"], registry=r
        )
        self.sessions = Counter("openrealtime_sessions", "Sessions started.", ["transport"], registry=r)
        self.client_events = Counter(
            "openrealtime_client_events",
            "Client events received, by type ('invalid' when unparseable).",
            ["type"],
            registry=r,
        )
        self.server_events = Counter(
            "openrealtime_server_events", "Server events sent, by type.", ["type"], registry=r
        )
        self.errors = Counter(
            "openrealtime_errors", "Error events sent, by error code.", ["code"], registry=r
        )
        self.responses = Counter(
            "openrealtime_responses", "Finished responses, by final status.", ["status"], registry=r
        )
        self.tokens = Counter(
            "openrealtime_tokens", "Tokens billed in response.done usage, by type.", ["type"], registry=r
        )
        self.cost_usd = Counter(
            "openrealtime_cost_usd", "List-price cost of the responses' usage, in US dollars.", registry=r
        )
        self.turn_latency = Histogram(
            "openrealtime_turn_latency_seconds",
            "Time from the end of the user's speech (origin=speech_stopped) or from response "
            "creation (origin=response_created) until a stage of the turn; stage=first_audio "
            "is voice-to-voice.",
            ["stage", "origin"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.late_chunks = Counter(
            "openrealtime_audio_late_chunks",
            "Output audio chunks sent after the client should have started playing them (underruns).",
            registry=r,
        )
        self.chunk_lateness = Histogram(
            "openrealtime_audio_chunk_lateness_seconds",
            "How late each late output audio chunk was.",
            buckets=LATENESS_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "openrealtime_engine_queue_wait_seconds",
            "Time a job waited in an engine's queue before a worker started it.",
            ["engine"],
            buckets=QUEUE_WAIT_BUCKETS,
            registry=r,
        )

        self.speculations = Counter(
            "openrealtime_speculation",
            "Answers started on a partial transcript before the turn was committed (started), "
            "and how each ended: hit (released as the turn's answer), miss (the final transcript differed), abandoned "
            "(the caller went on speaking, or a committed turn needed the engine); skipped: turns not guessed because "
            "their silence window is shorter than a transcription pass and a useful head start.",
            ["outcome"],
            registry=r,
        )
        self.speculation_wasted_tokens = Counter(
            "openrealtime_speculation_wasted_tokens",
            "LLM tokens evaluated or written by discarded speculative answers.",
            registry=r,
        )
        self.speculation_wasted_seconds = Counter(
            "openrealtime_speculation_wasted_seconds",
            "Wall-clock seconds discarded speculative answers ran.",
            registry=r,
        )

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)

    # ------------------------------------------------------------------ SessionObserver

    def session_started(self, info: SessionInfo) -> None:
        self._open.add(info.session_id)
        self.active_sessions.labels(info.transport).inc()
        self.sessions.labels(info.transport).inc()
        self._audio[info.session_id] = {}

    def session_ended(self, info: SessionInfo) -> None:
        self._audio.pop(info.session_id, None)
        if info.session_id in self._open:  # a session that failed before it started never counted
            self._open.discard(info.session_id)
            self.active_sessions.labels(info.transport).dec()

    def client_event(self, info: SessionInfo, event_type: str) -> None:
        counter = self._client_event_counters.get(event_type)
        if counter is None:
            counter = self._client_event_counters[event_type] = self.client_events.labels(event_type)
        counter.inc()

    def _count_server_event(self, kind: str) -> None:
        counter = self._server_event_counters.get(kind)
        if counter is None:  # ``labels()`` takes a lock and builds a key: once per type is enough
            counter = self._server_event_counters[kind] = self.server_events.labels(kind)
        counter.inc()

    def server_event(self, info: SessionInfo, event: ServerEvent) -> None:
        kind = event.type
        self._count_server_event(kind)
        if kind == "response.done":
            self._response_done(info, getattr(event, "response", {}))
        elif kind == "error":
            self.errors.labels(str(getattr(event, "error", {}).get("code") or "unknown")).inc()

    def turn_timings(self, info: SessionInfo, record: dict[str, Any]) -> None:
        origin = str(record.get("from") or "response_created")
        for key, stage in STAGES.items():
            value = record.get(key)
            if isinstance(value, int | float):
                self.turn_latency.labels(stage, origin).observe(max(0.0, value / 1000))

    def speculation(self, info: SessionInfo, outcome: str, wasted_tokens: int, wasted_seconds: float) -> None:
        self.speculations.labels(outcome).inc()
        if outcome in ("miss", "abandoned"):
            self.speculation_wasted_tokens.inc(wasted_tokens)
            self.speculation_wasted_seconds.inc(wasted_seconds)

    def observe_queue_wait(self, engine: str, seconds: float) -> None:
        """Called by the scheduler's engine queues (on worker threads) for every job started."""
        self.queue_wait.labels(engine).observe(seconds)

    # ------------------------------------------------------------------ details

    def output_audio(self, info: SessionInfo, audio: OutputAudio) -> None:
        """A chunk of speech is sent (a ``response.output_audio.delta`` on WebSocket, played
        out on WebRTC and SIP): late when the client should already be playing it."""
        self._count_server_event("response.output_audio.delta")
        playback = self._audio.setdefault(info.session_id, {})
        duration_s = len(audio.pcm) / formats.INTERNAL_RATE
        schedule, lateness = schedule_chunk(playback.get(audio.response_id), self._clock(), duration_s)
        playback[audio.response_id] = schedule
        if lateness > 0:
            self.late_chunks.inc()
            self.chunk_lateness.observe(lateness)

    def _response_done(self, info: SessionInfo, response: Mapping[str, Any]) -> None:
        playback = self._audio.get(info.session_id)
        if playback is not None:
            playback.pop(str(response.get("id")), None)
        self.responses.labels(str(response.get("status") or "unknown")).inc()
        usage = response.get("usage")
        if not isinstance(usage, Mapping):
            return
        for group, name, label in TOKEN_FIELDS:
            count = (usage.get(group) or {}).get(name) or 0
            if count > 0:
                self.tokens.labels(label).inc(count)
        cost = self.cost(info, usage)
        if cost:
            self.cost_usd.inc(cost)


# --------------------------------------------------------------------------- content safety

MAX_RULE_LABELS = 64
"""Distinct ``rule`` label values kept; more (an endpoint inventing categories) count as ``other``."""


class ModerationMetrics:
    """Content-safety counters, registered on the server's registry (a ``ModerationCounter``
    for ``safety.Moderation``). Labels are the direction and the rule id or endpoint category,
    never the text."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.blocks = Counter(
            "openrealtime_moderation_blocks",
            "Texts blocked by content safety: caller turns refused (input) or answers cut before "
            "the offending clause (output), by rule id or endpoint category.",
            ["direction", "rule"],
            registry=registry,
        )
        self.redactions = Counter(
            "openrealtime_moderation_redactions",
            "Texts spoken or passed on with a redaction, by rule id.",
            ["direction", "rule"],
            registry=registry,
        )
        self.checks = Counter(
            "openrealtime_moderation_checks",
            "Texts checked by content safety (caller transcripts, output clauses).",
            ["direction"],
            registry=registry,
        )
        self.failures = Counter(
            "openrealtime_moderation_errors",
            "Checks the moderation endpoint could not answer (then blocked or passed as configured).",
            ["direction"],
            registry=registry,
        )
        self._rules: set[str] = set()

    def _rule(self, rule: str) -> str:
        if rule in self._rules:
            return rule
        if len(self._rules) >= MAX_RULE_LABELS:
            return "other"
        self._rules.add(rule)
        return rule

    def count(self, direction: str, action: str, rules: tuple[str, ...], error: bool) -> None:
        self.checks.labels(direction).inc()
        if error:
            self.failures.labels(direction).inc()
        counter = self.blocks if action == "block" else self.redactions if action == "redact" else None
        if counter is not None:
            for rule in rules or ("unknown",):
                counter.labels(direction, self._rule(rule)).inc()
