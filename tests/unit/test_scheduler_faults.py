"""Engine faults at the scheduler: an engine that raises, and one that stalls."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from openrealtime.engines.base import CancelToken
from openrealtime.runtime.scheduler import EngineQueue, EngineStalled


async def test_an_engine_exception_reaches_the_caller_and_the_queue_goes_on() -> None:
    queue = EngineQueue("tts", 1)

    def broken() -> Iterator[int]:
        yield 1
        raise RuntimeError("synthesis failed")

    got: list[int] = []
    with pytest.raises(RuntimeError, match="synthesis failed"):
        async for item in queue.stream(broken):
            got.append(item)
    assert got == [1]
    assert [item async for item in queue.stream(lambda: iter([7, 8]))] == [7, 8]


async def test_a_stalled_engine_times_out_and_its_worker_stops() -> None:
    queue = EngineQueue("llm", 1)
    release = threading.Event()
    produced: list[int] = []

    def stuck() -> Iterator[int]:
        for n in range(1000):
            if n == 1:
                release.wait(10)  # the engine hangs after its first token
            produced.append(n)
            yield n

    got: list[int] = []
    with pytest.raises(EngineStalled, match=r"llm engine produced nothing for 0\.2 s"):
        async for item in queue.stream(stuck, stall_timeout=0.2, cancel=CancelToken()):
            got.append(item)
    assert got == [0]
    release.set()  # the engine wakes up: the worker must give up after its next item
    assert [item async for item in queue.stream(lambda: iter([5]))] == [5]
    assert len(produced) <= 3
