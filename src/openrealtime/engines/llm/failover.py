"""A ``LanguageModel`` that falls back to another when the first cannot answer.

Production setups point the server at a remote endpoint (vLLM, llama.cpp server, ...); when
that endpoint is down or refuses, a caller should still get an answer from the embedded model
rather than silence. Failover happens only before the primary has produced anything (a
stream that breaks half way cannot be resumed by another model without repeating words), and
after a failure the primary is skipped for ``cooldown_s`` so that every turn does not first
wait for a dead endpoint's timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from openrealtime.engines.base import CancelToken, ChatRequest, LanguageModel, LLMEvent

log = logging.getLogger("openrealtime.llm.failover")


class FailoverLanguageModel:
    """``primary`` first; ``fallback`` when the primary fails before its first event."""

    def __init__(
        self,
        primary: LanguageModel,
        fallback: LanguageModel,
        *,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.name = primary.name
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._skip_until = 0.0
        self._lock = threading.Lock()
        self.failovers = 0

    @property
    def supports_tools(self) -> bool:
        return bool(getattr(self.primary, "supports_tools", True))

    def count_tokens(self, text: str) -> int:
        return self.primary.count_tokens(text)

    def _primary_cooling_down(self) -> bool:
        with self._lock:
            return self.clock() < self._skip_until

    def _mark_failed(self) -> None:
        with self._lock:
            self._skip_until = self.clock() + self.cooldown_s
            self.failovers += 1

    def generate(self, request: ChatRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        if not self._primary_cooling_down():
            stream = self.primary.generate(request, cancel)
            try:
                first = next(stream)
            except StopIteration:
                return
            except Exception as exc:
                log.warning(
                    "LLM %s failed (%s); answering with %s", self.primary.name, exc, self.fallback.name
                )
                self._mark_failed()
            else:
                yield first
                yield from stream
                return
        if cancel.cancelled:
            return
        yield from self.fallback.generate(request, cancel)
