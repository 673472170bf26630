"""Scheduling policy across sessions: voice turns before text, admission of text responses,
the partial-transcription budget, and VAD frames of many sessions scored in one batch."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from openrealtime.runtime.scheduler import (
    PRIORITY_BACKGROUND,
    PRIORITY_TEXT,
    PRIORITY_TURN,
    Admission,
    BackgroundBudget,
    EngineQueue,
    Scheduler,
    VadBatcher,
    refusal_rate_limits,
    serving,
)


async def _blocked(queue: EngineQueue) -> tuple[threading.Event, asyncio.Future[None]]:
    """Occupy the queue's only worker until the event is set."""
    release, started = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(10)

    running = asyncio.ensure_future(queue.call(hold))
    while not started.is_set():
        await asyncio.sleep(0.001)
    return release, running


async def test_a_voice_turn_runs_before_text_work_queued_earlier() -> None:
    queue = EngineQueue("llm", 1)
    release, blocker = await _blocked(queue)
    order: list[str] = []

    async def work(name: str) -> None:
        await queue.call(lambda: order.append(name))

    tasks = []
    with serving(PRIORITY_TEXT):  # the way the runtime starts a text session's response
        tasks += [asyncio.ensure_future(work("text-1")), asyncio.ensure_future(work("text-2"))]
    with serving(PRIORITY_BACKGROUND):
        tasks.append(asyncio.ensure_future(work("partial")))
    tasks.append(asyncio.ensure_future(work("voice")))  # default: a turn
    while queue.waiting() < 4:
        await asyncio.sleep(0.001)
    assert queue.waiting(PRIORITY_TEXT) == 2 and queue.waiting(at_most=PRIORITY_TURN) == 1
    release.set()
    await asyncio.gather(blocker, *tasks)
    assert order == ["voice", "text-1", "text-2", "partial"]
    assert queue.waiting() == 0


def test_text_responses_beyond_the_limit_are_refused_then_admitted_again() -> None:
    queue = EngineQueue("llm", 1)
    admission = Admission(queue, max_text=2)
    assert admission.text_response() is None
    admission.text_started()
    assert admission.text_response() is None
    admission.text_started()
    refusal = admission.text_response()
    assert refusal is not None and refusal.limit == 2 and refusal.in_progress == 2
    assert refusal.retry_after_s > 0
    limits = refusal_rate_limits(refusal).rate_limits[0]
    assert (limits.name, limits.limit, limits.remaining) == ("requests", 2, 0)
    assert limits.reset_seconds == refusal.retry_after_s
    admission.text_finished()
    assert admission.text_response() is None
    assert Admission(queue, max_text=0).text_response() is None


async def test_partials_stay_within_their_share_and_yield_to_waiting_turns() -> None:
    asr, llm = EngineQueue("asr", 1), EngineQueue("llm", 1)
    budget = BackgroundBudget((asr, llm), share=0.5, window_s=10.0)
    now = time.monotonic()
    assert budget.allows()
    budget.record(PRIORITY_TURN, now - 2, 1.0)  # finals do not count
    budget.record(PRIORITY_BACKGROUND, now - 4, 3.0)
    assert budget.used() == 0.3 and budget.allows()
    budget.record(PRIORITY_BACKGROUND, now - 1, 2.5)
    assert not budget.allows()
    assert budget.used(now + 20) == 0.0  # old passes leave the window
    fresh = BackgroundBudget((asr, llm))
    release, blocker = await _blocked(llm)
    with serving(PRIORITY_TEXT):
        text = asyncio.ensure_future(llm.call(lambda: None))
    await asyncio.sleep(0.01)
    assert fresh.allows()  # text work waiting: partials of a voice turn still run
    voice = asyncio.ensure_future(llm.call(lambda: None))
    await asyncio.sleep(0.01)
    assert not fresh.allows()  # a voice turn's work waits: partials back off
    release.set()
    await asyncio.gather(blocker, text, voice)
    assert fresh.allows()


async def test_the_asr_queue_charges_background_passes_to_the_budget() -> None:
    scheduler = Scheduler()
    await scheduler.asr.call(lambda: time.sleep(0.05), priority=PRIORITY_BACKGROUND)
    await scheduler.asr.call(lambda: time.sleep(0.05), priority=PRIORITY_TURN)
    await asyncio.sleep(0.01)
    assert 0.004 <= scheduler.partials.used() < 0.009


class _RecordingVAD:
    """A VAD whose ``score`` records each batch; the probability is the frame's first sample."""

    sample_rate = 16000
    frame_samples = 4

    def __init__(self) -> None:
        self.batches: list[int] = []

    def new_stream(self) -> _Stream:
        return _Stream()

    def score(self, requests: list[tuple[_Stream, list[np.ndarray]]]) -> list[list[float]]:
        self.batches.append(len(requests))
        return [[float(frame[0]) + stream.offset for frame in frames] for stream, frames in requests]


class _Stream:
    offset = 0.0

    def speech_probability(self, frame: np.ndarray) -> float:
        return float(frame[0])

    def reset(self) -> None:
        return None


async def test_vad_frames_of_many_sessions_go_to_the_model_together() -> None:
    vad = _RecordingVAD()
    queue = EngineQueue("vad", 1)
    batcher = VadBatcher(vad, queue)
    release, blocker = await _blocked(queue)
    streams = [_Stream() for _ in range(6)]
    for index, stream in enumerate(streams):
        stream.offset = index * 100
    frames = [[np.full(4, n, dtype=np.float32) for n in range(index + 1)] for index in range(6)]
    calls = [asyncio.ensure_future(batcher.score(s, f)) for s, f in zip(streams, frames, strict=True)]
    await asyncio.sleep(0.01)
    release.set()
    results = await asyncio.gather(*calls)
    await blocker
    assert results == [[index * 100 + n for n in range(index + 1)] for index in range(6)]
    # the first request started a batch alone; the other five gathered while it waited
    assert vad.batches == [1, 5]
    assert (batcher.batches, batcher.requests) == (2, 6)


async def test_a_failing_batch_fails_its_requests_and_the_next_batch_runs() -> None:
    class Broken(_RecordingVAD):
        def score(self, requests: list[tuple[_Stream, list[np.ndarray]]]) -> list[list[float]]:
            if not self.batches:
                self.batches.append(len(requests))
                raise RuntimeError("model failed")
            return super().score(requests)

    batcher = VadBatcher(Broken(), EngineQueue("vad", 1))
    frame = [np.ones(4, dtype=np.float32)]
    first = asyncio.ensure_future(batcher.score(_Stream(), frame))
    second = asyncio.ensure_future(batcher.score(_Stream(), frame))
    done = await asyncio.gather(first, second, return_exceptions=True)
    assert isinstance(done[0], RuntimeError)
    assert done[1] == [1.0]


async def test_text_work_never_holds_the_worker_kept_for_voice_turns() -> None:
    """With several workers (a batching LLM), text responses take all but ``turn_only`` of
    them: a voice turn queued behind them starts at once instead of after one of them."""
    queue = EngineQueue("llm", workers=3, turn_only=1)
    release = threading.Event()
    running: list[str] = []
    lock = threading.Lock()

    def hold(name: str) -> None:
        with lock:
            running.append(name)
        release.wait(10)

    texts = [
        asyncio.ensure_future(queue.call(lambda i=i: hold(f"text{i}"), priority=PRIORITY_TEXT))
        for i in range(3)
    ]
    deadline = time.monotonic() + 5
    while len(running) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.1)  # the third text job would have started by now if it could
    assert sorted(running) == ["text0", "text1"]
    turn_started = threading.Event()
    turn = asyncio.ensure_future(queue.call(turn_started.set, priority=PRIORITY_TURN))
    await asyncio.wait_for(turn, 2)
    assert turn_started.is_set() and "text2" not in running
    release.set()
    await asyncio.wait_for(asyncio.gather(*texts), 5)
    assert sorted(running) == ["text0", "text1", "text2"]
