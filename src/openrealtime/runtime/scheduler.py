"""Admits, queues and prioritises CPU work on the engines across all sessions.

Each engine gets a small pool of worker threads fed from a priority queue: a live turn's work
(final transcript, LLM, speech) runs before background work (partial transcripts), and work
queued for a response that was cancelled in the meantime is dropped before it starts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..engines.base import CancelToken

T = TypeVar("T")

PRIORITY_TURN = 0
"""Work a caller is waiting for right now."""
PRIORITY_BACKGROUND = 10
"""Work that only makes a later step faster (e.g. partial transcripts)."""
PRIORITY_SPECULATIVE = 20
"""A guessed answer to a turn not yet committed (runtime/speculation.py): below every
committed turn of every session, and given up as soon as such a turn needs the engine."""
PRIORITY_PREFILL = 30
"""Evaluating a session's prompt prefix ahead of its first turn: the lowest of all."""

_DONE = object()


class EngineStalled(TimeoutError):
    """An engine took longer than its stall timeout to produce its next result."""


@dataclass(order=True)
class _Job:
    priority: int
    seq: int
    run: Callable[[], None] = field(compare=False)
    cancel: CancelToken | None = field(compare=False, default=None)
    enqueued: float = field(compare=False, default=0.0)
    yields: CancelToken | None = field(compare=False, default=None)
    """Set when work of a turn (``PRIORITY_TURN``) is queued while this job waits or runs."""


class YieldingWork:
    """Speculative work in flight, shared by the engine queues whose turns it must not slow:
    work of a turn queued on any of them cancels all of it (on 2 cores a guess on one engine
    takes CPU from a turn on another)."""

    def __init__(self) -> None:
        self.tokens: set[CancelToken] = set()
        self.lock = threading.Lock()


class EngineQueue:
    """A named priority queue with ``workers`` threads in front of one engine."""

    def __init__(self, name: str, workers: int = 1, yielding: YieldingWork | None = None) -> None:
        self.name = name
        self._queue: queue.PriorityQueue[_Job] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(max(1, workers))
        ]
        self.last_wait_s = 0.0
        self.on_wait: Callable[[str, float], None] | None = None
        """Told ``(engine name, seconds waited)`` on the worker thread as each job starts."""
        self.running = 0
        shared = yielding or YieldingWork()
        self._yielding = shared.tokens
        self._yield_lock = shared.lock
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job.cancel is not None and job.cancel.cancelled:
                job.run = _noop
            self.last_wait_s = time.monotonic() - job.enqueued
            if self.on_wait is not None:
                with contextlib.suppress(Exception):
                    self.on_wait(self.name, self.last_wait_s)
            self.running += 1
            try:
                job.run()
            finally:
                self.running -= 1
                if job.yields is not None:
                    with self._yield_lock:
                        self._yielding.discard(job.yields)
                self._queue.task_done()

    def keep(self, token: CancelToken) -> None:
        """Work queued as ``yielding`` under ``token`` is a turn's now: no longer given up."""
        with self._yield_lock:
            self._yielding.discard(token)

    def executor(self, priority: int) -> QueueExecutor:
        return QueueExecutor(self, priority)

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing running."""
        return self.running == 0 and self._queue.qsize() == 0

    def _put(
        self,
        run: Callable[[], None],
        priority: int,
        cancel: CancelToken | None,
        yields: CancelToken | None = None,
    ) -> None:
        with self._yield_lock:
            if yields is not None:
                self._yielding.add(yields)
            elif priority <= PRIORITY_TURN and self._yielding:
                # a caller is waiting for this engine: speculative work gives it up at once
                for token in self._yielding:
                    token.cancel()
                self._yielding.clear()
        self._queue.put(_Job(priority, next(self._seq), run, cancel, time.monotonic(), yields))

    async def call(
        self,
        fn: Callable[[], T],
        *,
        priority: int = PRIORITY_TURN,
        cancel: CancelToken | None = None,
        yielding: bool = False,
    ) -> T:
        """Run ``fn`` on this engine's workers and await its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def run() -> None:
            try:
                result = fn()
            except BaseException as exc:
                loop.call_soon_threadsafe(_set_exception, future, exc)
            else:
                loop.call_soon_threadsafe(_set_result, future, result)

        def dropped() -> None:
            loop.call_soon_threadsafe(_set_exception, future, asyncio.CancelledError())

        guarded = run if cancel is None else _unless_cancelled(run, dropped, cancel)
        self._put(guarded, priority, None, cancel if yielding else None)
        return await future

    async def stream(
        self,
        make: Callable[[], Iterator[T]],
        *,
        priority: int = PRIORITY_TURN,
        cancel: CancelToken | None = None,
        stall_timeout: float | None = None,
        yielding: bool = False,
    ) -> AsyncIterator[T]:
        """Drain the iterator ``make()`` on a worker; items arrive here as they are produced.

        With ``stall_timeout``, waiting longer than that for the next item (queueing included)
        raises ``EngineStalled`` and the worker stops at its next item. ``yielding`` work
        (speculative, with a ``cancel`` token) is cancelled when work of a turn is queued."""
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[Any] = asyncio.Queue()
        abandoned = threading.Event()

        def run() -> None:
            iterator: Iterator[T] | None = None
            try:
                iterator = make()
                for item in iterator:
                    loop.call_soon_threadsafe(items.put_nowait, item)
                    if (cancel is not None and cancel.cancelled) or abandoned.is_set():
                        break
            except BaseException as exc:
                loop.call_soon_threadsafe(items.put_nowait, _Failure(exc))
            finally:
                # generators may hold engine locks until closed: close them here, on this thread
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()
                loop.call_soon_threadsafe(items.put_nowait, _DONE)

        def dropped() -> None:
            loop.call_soon_threadsafe(items.put_nowait, _DONE)

        guarded = run if cancel is None else _unless_cancelled(run, dropped, cancel)
        self._put(guarded, priority, None, cancel if yielding else None)
        try:
            while True:
                try:
                    item = await asyncio.wait_for(items.get(), stall_timeout)
                except TimeoutError:
                    raise EngineStalled(
                        f"the {self.name} engine produced nothing for {stall_timeout:g} s"
                    ) from None
                if item is _DONE:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                yield item
        finally:
            abandoned.set()


class QueueExecutor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` view of an engine queue at a fixed priority."""

    def __init__(self, queue: EngineQueue, priority: int) -> None:
        self.queue = queue
        self.priority = priority

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

        self.queue._put(run, self.priority, None)
        return future


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _noop() -> None:
    return None


def _unless_cancelled(
    run: Callable[[], None], dropped: Callable[[], None], cancel: CancelToken
) -> Callable[[], None]:
    def guarded() -> None:
        if cancel.cancelled:
            dropped()
        else:
            run()

    return guarded


def _set_result(future: asyncio.Future[T], value: T) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class Scheduler:
    """One ``EngineQueue`` per engine kind, shared by every session of the process."""

    def __init__(
        self, *, llm_workers: int = 1, asr_workers: int = 1, tts_workers: int = 1, vad_workers: int = 1
    ) -> None:
        speculative = YieldingWork()
        self.llm = EngineQueue("llm", llm_workers, speculative)
        self.asr = EngineQueue("asr", asr_workers, speculative)
        self.tts = EngineQueue("tts", tts_workers, speculative)
        self.vad = EngineQueue("vad", vad_workers)
        self.vision = EngineQueue("vision", 1)

    def keep(self, token: CancelToken) -> None:
        """Speculative work under ``token`` became a committed turn's (on every engine)."""
        for engine in (self.llm, self.vad, self.vision):  # asr and tts share the llm's
            engine.keep(token)
