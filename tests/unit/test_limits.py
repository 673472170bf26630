from __future__ import annotations

from openrealtime.server.limits import SessionLimits, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_at_its_rate_up_to_the_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=3, clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.25  # 2.5 tokens
    assert bucket.take() and bucket.take() and not bucket.take()
    clock.now += 60
    assert sum(bucket.take() for _ in range(10)) == 3


def test_sessions_are_admitted_up_to_the_global_and_per_key_limits() -> None:
    limits = SessionLimits(max_sessions=3, max_sessions_per_key=2)
    assert limits.admit("key_a") is None and limits.admit("key_a") is None
    refused = limits.admit("key_a")
    assert refused is not None and refused.code == "session_limit_reached" and refused.fatal
    assert "API key" in refused.message
    assert limits.admit("key_b") is None
    full = limits.admit("key_c")
    assert full is not None and "server" in full.message and full.type == "server_error"
    limits.release("key_a")
    assert limits.admit("key_c") is None
    assert limits.total == 3
    for key in ("key_a", "key_b", "key_c"):
        limits.release(key)
    assert limits.total == 0 and limits.active == {}


def test_event_rate_is_per_key_and_shared_by_its_sessions() -> None:
    clock = Clock()
    limits = SessionLimits(events_per_second=2, event_burst=2, clock=clock)
    limits.admit("key_a")
    limits.admit("key_a")
    assert limits.allow_event("key_a") and limits.allow_event("key_a")
    assert not limits.allow_event("key_a")
    assert limits.allow_event("key_b")  # another key has its own budget
    clock.now += 0.5
    assert limits.allow_event("key_a") and not limits.allow_event("key_a")


def test_zero_rate_means_unlimited() -> None:
    limits = SessionLimits(events_per_second=0)
    assert all(limits.allow_event("key_a") for _ in range(10_000))
