"""The second thread for long background work: only on a free core, and given back."""

from __future__ import annotations

import time

from openrealtime.runtime import spare_cpu
from openrealtime.runtime.spare_cpu import SpareCores, WorkerThreads


class FixedSpare(SpareCores):
    def __init__(self, spare: float) -> None:
        super().__init__(2)
        self.value = spare

    def __call__(self) -> float:
        return self.value


def test_the_second_thread_only_on_a_free_core_and_while_no_other_engine_works() -> None:
    spare = FixedSpare(1.0)
    threads = WorkerThreads(spare)
    assert threads(allowed=False) == 1  # another engine of the server is busy
    assert threads() == 2
    spare.value = 0.3
    fresh = WorkerThreads(spare)
    assert fresh() == 1  # the other core is someone else's


def test_the_second_thread_is_given_back_when_the_job_stops_getting_both_cores() -> None:
    threads = WorkerThreads(FixedSpare(1.0))
    assert threads() == 2
    time.sleep(0.05)  # this process used almost no CPU meanwhile: the cores went to others
    assert threads() == 1


def test_spare_cores_reads_the_machines_idle_time() -> None:
    reading = spare_cpu._idle_and_total()
    if reading is None:  # not Linux
        return
    spare = SpareCores(2)
    time.sleep(spare_cpu._MIN_INTERVAL_S + 0.05)
    assert 0.0 <= spare() <= 2.0
