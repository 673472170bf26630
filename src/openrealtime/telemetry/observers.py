"""The server's telemetry observers, started once from the settings: Prometheus metrics,
per-turn traces (when an OTLP endpoint is configured) and the log context of each session.
"""

from __future__ import annotations

from ..config import Settings
from ..runtime.observer import SessionObserver
from ..runtime.scheduler import Scheduler
from .logs import LogContextObserver
from .metrics import MetricsObserver, list_price_cost
from .prices import load_prices
from .tracing import TurnTracer


class Telemetry:
    """Metrics, traces and log ids of every session, and the engine queues' waits."""

    def __init__(self, metrics: MetricsObserver, tracer: TurnTracer | None) -> None:
        self.metrics = metrics
        self.tracer = tracer

    @classmethod
    def start(cls, settings: Settings, scheduler: Scheduler) -> Telemetry:
        """Observe the engine queues of ``scheduler``; traces go to ``otlp_endpoint``."""
        metrics = MetricsObserver()
        metrics.cost = list_price_cost(load_prices(settings.prices))
        for queue in (scheduler.llm, scheduler.asr, scheduler.tts, scheduler.vad):
            queue.on_wait = metrics.observe_queue_wait
        return cls(metrics, TurnTracer.from_settings(settings.otlp_endpoint))

    @property
    def observers(self) -> list[SessionObserver]:
        """The session observers, in the order they are told."""
        found: list[SessionObserver] = [self.metrics, LogContextObserver()]
        if self.tracer is not None:
            found.append(self.tracer)
        return found

    def shutdown(self) -> None:
        """Export the traces still buffered."""
        if self.tracer is not None:
            self.tracer.shutdown()
            self.tracer = None
