"""Admits, queues and prioritises CPU work on the engines across all sessions.

Each engine gets a small pool of worker threads fed from a priority queue. Three classes of
work, in order: a voice turn (a caller is listening: its transcript, LLM and speech), a
text-only session's response, and background work (partial transcripts, which only make a
later step faster). The class of a response's work comes from the task that runs it
(``serving``), so engines and responders need not pass it along. Work queued for a response
that was cancelled in the meantime is dropped before it starts.

Admission (``Admission``) refuses a new text response while too many text responses are
already in progress, instead of letting the LLM queue grow without bound; voice turns are never
refused (one at a time per voice session, and they go first). ``BackgroundBudget`` keeps
partial transcription to a bounded share of the ASR worker's time and stops it while a voice
turn's work waits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import itertools
import os
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..engines.base import VAD, CancelToken, FloatAudio, VADStream
from ..protocol import server_events as se
from .spare_cpu import SpareCores

T = TypeVar("T")

PRIORITY_TURN = 0
"""Work a caller is waiting for right now (a voice turn)."""
PRIORITY_TEXT = 5
"""A text-only session's response: served after every waiting voice turn."""
PRIORITY_BACKGROUND = 10
"""Work that only makes a later step faster (e.g. partial transcripts)."""
PRIORITY_SPECULATIVE = 20
"""A guessed answer to a turn not yet committed (runtime/speculation.py): below every
committed turn of every session, and given up as soon as such a turn or a transcription pass
needs an engine (a guess that ran on beside the passes of a caller who paused mid-turn and went
on delayed that turn's final transcript to 7.4 s at load ~8)."""
PRIORITY_PREFILL = 30
"""Evaluating a session's prompt prefix ahead of its first turn: the lowest of all."""

_serving: contextvars.ContextVar[int] = contextvars.ContextVar("openrealtime_priority", default=PRIORITY_TURN)


@contextlib.contextmanager
def serving(priority: int) -> Iterator[None]:
    """Tasks created inside this block queue their engine work at ``priority`` by default."""
    reset = _serving.set(priority)
    try:
        yield
    finally:
        _serving.reset(reset)


def current_priority() -> int:
    """The priority engine work of the running task gets unless it names one."""
    return _serving.get()


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
    """Set when work of a committed turn is queued while this job waits or runs."""


class YieldingWork:
    """Speculative work in flight, shared by the engine queues whose turns it must not slow:
    work of a committed turn queued on any of them cancels all of it (on 2 cores a guess on
    one engine takes CPU from a turn on another)."""

    def __init__(self) -> None:
        self.tokens: set[CancelToken] = set()
        self.lock = threading.Lock()


class EngineQueue:
    """A named priority queue with ``workers`` threads in front of one engine."""

    def __init__(
        self, name: str, workers: int = 1, yielding: YieldingWork | None = None, *, turn_only: int = 0
    ) -> None:
        self.name = name
        self.turn_only = min(max(0, turn_only), max(1, workers) - 1)
        """Workers only voice turns may take: with several workers (a batching LLM), text and
        background jobs never hold all of them, so a caller's turn starts at once."""
        self._others_running = 0
        self._others_lock = threading.Condition()
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
        self.on_done: Callable[[int, float, float], None] | None = None
        """Told ``(priority, started, seconds run)`` on the worker thread as each job ends."""
        self._waiting: Counter[int] = Counter()
        self._count_lock = threading.Lock()
        self.mean_run_s: dict[int, float] = {}
        """Running mean of how long a job of each priority keeps a worker (for wait estimates)."""
        shared = yielding or YieldingWork()
        self._yielding = shared.tokens
        self._yield_lock = shared.lock
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            other = job.priority > PRIORITY_TURN and self.turn_only > 0
            if other:
                with self._others_lock:
                    if self._others_running >= len(self._threads) - self.turn_only:
                        # every worker it may take is busy: back in the queue (same place)
                        self._queue.put(job)
                        self._queue.task_done()
                        self._others_lock.wait(0.05)
                        continue
                    self._others_running += 1
            with self._count_lock:
                self._waiting[job.priority] -= 1
            if job.cancel is not None and job.cancel.cancelled:
                job.run = _noop
            started = time.monotonic()
            self.last_wait_s = started - job.enqueued
            if self.on_wait is not None:
                with contextlib.suppress(Exception):
                    self.on_wait(self.name, self.last_wait_s)
            self.running += 1
            try:
                job.run()
            finally:
                if other:
                    with self._others_lock:
                        self._others_running -= 1
                        self._others_lock.notify_all()
                self.running -= 1
                ran = time.monotonic() - started
                mean = self.mean_run_s.get(job.priority)
                self.mean_run_s[job.priority] = ran if mean is None else 0.8 * mean + 0.2 * ran
                if self.on_done is not None:
                    with contextlib.suppress(Exception):
                        self.on_done(job.priority, started, ran)
                if job.yields is not None:
                    with self._yield_lock:
                        self._yielding.discard(job.yields)
                self._queue.task_done()

    def keep(self, token: CancelToken) -> None:
        """Work queued as ``yielding`` under ``token`` is a turn's now: no longer given up."""
        with self._yield_lock:
            self._yielding.discard(token)

    def waiting(self, priority: int | None = None, *, at_most: int | None = None) -> int:
        """Jobs queued and not started: of one priority, or of ``at_most`` and more urgent."""
        with self._count_lock:
            if priority is not None:
                return self._waiting[priority]
            return sum(n for p, n in self._waiting.items() if at_most is None or p <= at_most)

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
            elif priority <= PRIORITY_BACKGROUND and self._yielding:
                # a committed turn needs an engine, or a transcription pass of a caller who
                # spoke again (what the next guess and the final transcript wait for):
                # speculative work gives the CPU up at once
                for token in self._yielding:
                    token.cancel()
                self._yielding.clear()
        with self._count_lock:
            self._waiting[priority] += 1
        self._queue.put(_Job(priority, next(self._seq), run, cancel, time.monotonic(), yields))
        if self.turn_only and priority <= PRIORITY_TURN:
            with self._others_lock:  # a worker holding back other work takes this one now
                self._others_lock.notify_all()

    async def call(
        self,
        fn: Callable[[], T],
        *,
        priority: int | None = None,
        cancel: CancelToken | None = None,
        yielding: bool = False,
    ) -> T:
        """Run ``fn`` on this engine's workers and await its result (at the task's priority
        unless ``priority`` is given)."""
        priority = current_priority() if priority is None else priority
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
        priority: int | None = None,
        cancel: CancelToken | None = None,
        stall_timeout: float | None = None,
        yielding: bool = False,
    ) -> AsyncIterator[T]:
        """Drain the iterator ``make()`` on a worker; items arrive here as they are produced
        (at the task's priority unless ``priority`` is given).

        With ``stall_timeout``, waiting longer than that for the next item (queueing included)
        raises ``EngineStalled`` and the worker stops at its next item. ``yielding`` work
        (speculative, with a ``cancel`` token) is cancelled when a committed turn queues work."""
        priority = current_priority() if priority is None else priority
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


class BackgroundBudget:
    """How much of the ASR worker's time partial transcription may take: at most ``share`` of
    every ``window_s`` seconds, and none while a voice turn's work waits on any engine."""

    def __init__(
        self, queues: tuple[EngineQueue, ...], *, share: float = 0.5, window_s: float = 10.0
    ) -> None:
        self.queues = queues
        self.share = share
        self.window_s = window_s
        self._spent: deque[tuple[float, float]] = deque()  # (ended, seconds)
        self._lock = threading.Lock()

    def record(self, priority: int, started: float, seconds: float) -> None:
        if priority >= PRIORITY_BACKGROUND:
            with self._lock:
                self._spent.append((started + seconds, seconds))

    def used(self, now: float | None = None) -> float:
        """Share of the last window spent on background work."""
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._spent and self._spent[0][0] < now - self.window_s:
                self._spent.popleft()
            return sum(seconds for _, seconds in self._spent) / self.window_s

    def allows(self) -> bool:
        """May another partial pass start now?"""
        if any(q.waiting(at_most=PRIORITY_TURN) for q in self.queues):
            return False
        return self.used() < self.share


@dataclass(frozen=True)
class Refusal:
    """Why new work was not admitted: the queue it would join and when to try again."""

    limit: int
    in_progress: int
    retry_after_s: float


def refusal_rate_limits(refusal: Refusal) -> se.RateLimitsUpdated:
    """The ``rate_limits.updated`` sent just before a refusal: no request slot left, and when
    one is expected to free up."""
    return se.RateLimitsUpdated(
        rate_limits=[
            se.RateLimit(
                name="requests", limit=refusal.limit, remaining=0, reset_seconds=refusal.retry_after_s
            )
        ]
    )


class Admission:
    """Refuses a text-only session's new response while ``max_text`` text responses are
    already in progress (waiting for the language model or generating; 0 admits everything).

    Counted from the moment a response is admitted, not when its work reaches a queue, so
    requests arriving together cannot all slip in before the first is queued."""

    def __init__(self, llm: EngineQueue, *, max_text: int) -> None:
        self.llm = llm
        self.max_text = max_text
        self.text_in_progress = 0

    def text_response(self) -> Refusal | None:
        """``None`` when a new text response may start, else why not."""
        busy = self.text_in_progress
        if self.max_text <= 0 or busy < self.max_text:
            return None
        per_job = self.llm.mean_run_s.get(PRIORITY_TEXT, 1.0)
        workers = max(1, len(self.llm._threads))
        ahead = busy - self.max_text + 1
        return Refusal(self.max_text, busy, round(max(0.1, per_job * ahead / workers), 2))

    def text_started(self) -> None:
        self.text_in_progress += 1

    def text_finished(self) -> None:
        self.text_in_progress = max(0, self.text_in_progress - 1)


class Scheduler:
    """One ``EngineQueue`` per engine kind, shared by every session of the process."""

    def __init__(
        self,
        *,
        llm_workers: int = 1,
        asr_workers: int = 1,
        tts_workers: int = 1,
        vad_workers: int = 1,
        max_text_responses: int = 8,
        partial_share: float = 0.5,
    ) -> None:
        speculative = YieldingWork()
        # a batching LLM keeps one worker for voice turns (see EngineQueue.turn_only)
        self.llm = EngineQueue("llm", llm_workers, speculative, turn_only=1)
        self.asr = EngineQueue("asr", asr_workers, speculative)
        self.tts = EngineQueue("tts", tts_workers, speculative)
        self.vad = EngineQueue("vad", vad_workers)
        self.vision = EngineQueue("vision", 1)
        self.admission = Admission(self.llm, max_text=max_text_responses)
        self.partials = BackgroundBudget((self.asr, self.llm, self.tts, self.vad), share=partial_share)
        self.asr.on_done = self.partials.record
        self._vad_batches: dict[int, VadBatcher] = {}
        self.spare_cores = SpareCores(os.cpu_count() or 1)
        """The machine's idle cores (background work takes a second thread only on a free core)."""

    def keep(self, token: CancelToken) -> None:
        """Speculative work under ``token`` became a committed turn's (on every engine)."""
        for engine in (self.llm, self.vad, self.vision):  # asr and tts share the llm's
            engine.keep(token)

    def vad_batches(self, vad: VAD) -> VadBatcher:
        """The one ``VadBatcher`` of this VAD engine (frames of all sessions scored together)."""
        batcher = self._vad_batches.get(id(vad))
        if batcher is None:
            batcher = self._vad_batches[id(vad)] = VadBatcher(vad, self.vad)
        return batcher


class VadBatcher:
    """Scores the VAD frames of every session: while one batch runs on the VAD queue the next
    requests gather, and all of them go to the model as one batch (no timer, no added wait).

    A VAD with ``score([(stream, frames), ...])`` (Silero) gets them in one call; any other
    VAD scores each stream's frames in turn inside the same job."""

    def __init__(self, vad: VAD, queue: EngineQueue) -> None:
        self.vad = vad
        self.queue = queue
        self._pending: list[tuple[VADStream, list[FloatAudio], asyncio.Future[list[float]]]] = []
        self._running = False
        self.batches = 0
        self.requests = 0

    async def score(self, stream: VADStream, frames: list[FloatAudio]) -> list[float]:
        """Speech probabilities of ``frames``, in order, advancing ``stream``."""
        future: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
        self._pending.append((stream, frames, future))
        if not self._running:
            self._next()
        return await future

    def _next(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            self._running = False
            return
        self._running = True
        self.batches += 1
        self.requests += len(batch)
        requests = [(stream, frames) for stream, frames, _ in batch]
        job = asyncio.ensure_future(self.queue.call(lambda: self._score(requests), priority=PRIORITY_TURN))
        job.add_done_callback(lambda done: self._settle(batch, done))

    def _score(self, requests: list[tuple[VADStream, list[FloatAudio]]]) -> list[list[float]]:
        score = getattr(self.vad, "score", None)
        if callable(score):
            found: list[list[float]] = score(requests)
            return found
        return [[stream.speech_probability(frame) for frame in frames] for stream, frames in requests]

    def _settle(
        self,
        batch: list[tuple[VADStream, list[FloatAudio], asyncio.Future[list[float]]]],
        done: asyncio.Future[list[list[float]]],
    ) -> None:
        try:
            if done.cancelled():
                raise asyncio.CancelledError()
            results = done.result()
        except BaseException as exc:
            for _, _, future in batch:
                _set_exception(future, exc)
        else:
            for (_, _, future), found in zip(batch, results, strict=True):
                _set_result(future, found)
        self._next()
