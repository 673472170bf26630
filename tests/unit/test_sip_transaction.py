"""SIP transaction timers (RFC 3261 §17) on a fake clock: retransmissions over UDP, none
over TCP, and the give-up timers."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

from openrealtime.transports.sip.message import SipRequest, SipResponse, build_response, parse_message
from openrealtime.transports.sip.transaction import (
    T1,
    AckWaiter,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    transaction_key,
)


class FakeClock:
    """``call_later`` on virtual time; ``advance`` fires what is due, in order."""

    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, _Handle]] = []
        self._order = itertools.count()

    def call_later(self, delay: float, fn: Callable[[], None]) -> _Handle:
        handle = _Handle(fn)
        heapq.heappush(self._queue, (self.now + delay, next(self._order), handle))
        return handle

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while self._queue and self._queue[0][0] <= end:
            due, _, handle = heapq.heappop(self._queue)
            self.now = due
            if not handle.cancelled:
                handle.fn()
        self.now = end


class _Handle:
    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Wire:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, bytes]] = []

    def send(self, data: bytes) -> None:
        self.sent.append((self.clock.now, data))

    def times(self) -> list[float]:
        return [at for at, _ in self.sent]


def request(method: str, branch: str = "z9hG4bK1") -> SipRequest:
    message = parse_message(
        (
            f"{method} sip:test@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n"
            "From: <sip:a@b>;tag=1\r\nTo: <sip:test@127.0.0.1>\r\nCall-ID: c1\r\n"
            f"CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(message, SipRequest)
    return message


def test_non_2xx_final_is_retransmitted_with_doubling_until_ack() -> None:
    clock = FakeClock()
    wire = Wire(clock)
    txn = InviteServerTransaction(request("INVITE"), wire.send, clock.call_later, reliable=False)
    txn.respond(build_response(txn.request, 486, to_tag="t"))
    clock.advance(8.0)
    # 0, then T1, 2T1, 4T1, 8T1 (capped at T2 = 4 s): 0.5, 1.5, 3.5, 7.5
    assert wire.times() == [0.0, 0.5, 1.5, 3.5, 7.5]
    txn.on_request(request("ACK"))
    assert txn.state == "confirmed"
    clock.advance(30.0)
    assert len(wire.sent) == 5  # the ACK stopped the retransmissions
    assert txn.state == "terminated"


def test_no_ack_ends_the_transaction_after_timer_h() -> None:
    clock = FakeClock()
    wire = Wire(clock)
    timeouts: list[bool] = []
    txn = InviteServerTransaction(
        request("INVITE"),
        wire.send,
        clock.call_later,
        reliable=False,
        on_timeout=lambda: timeouts.append(True),
    )
    txn.respond(build_response(txn.request, 603, to_tag="t"))
    clock.advance(64 * T1 + 1)
    assert txn.state == "terminated" and timeouts == [True]
    assert all(later - earlier <= 4.0 for earlier, later in itertools.pairwise(wire.times()))


def test_tcp_never_retransmits_and_a_retransmitted_invite_gets_the_last_response() -> None:
    clock = FakeClock()
    wire = Wire(clock)
    txn = InviteServerTransaction(request("INVITE"), wire.send, clock.call_later, reliable=True)
    txn.respond(build_response(txn.request, 180, to_tag="t"))
    txn.on_request(request("INVITE"))
    assert [parse_message(data).status for _, data in wire.sent] == [180, 180]  # type: ignore[union-attr]
    txn.respond(build_response(txn.request, 486, to_tag="t"))
    clock.advance(40.0)
    assert len(wire.sent) == 3


def test_2xx_ends_the_invite_transaction_and_the_dialog_retransmits_it() -> None:
    clock = FakeClock()
    wire = Wire(clock)
    txn = InviteServerTransaction(request("INVITE"), wire.send, clock.call_later, reliable=False)
    ok = build_response(txn.request, 200, to_tag="t")
    txn.respond(ok)
    assert txn.state == "terminated"
    gave_up: list[bool] = []
    waiter = AckWaiter(
        ok, wire.send, clock.call_later, reliable=False, on_timeout=lambda: gave_up.append(True)
    )
    waiter.start(already_sent=True)
    clock.advance(2.0)
    assert wire.times() == [0.0, 0.5, 1.5]
    waiter.ack()
    clock.advance(60.0)
    assert len(wire.sent) == 3 and gave_up == []
    lost = AckWaiter(ok, wire.send, clock.call_later, reliable=False, on_timeout=lambda: gave_up.append(True))
    lost.start()
    clock.advance(64 * T1 + 1)
    assert gave_up == [True]


def test_non_invite_server_transaction_absorbs_retransmissions() -> None:
    clock = FakeClock()
    wire = Wire(clock)
    ended: list[bool] = []
    txn = NonInviteServerTransaction(
        request("BYE"),
        wire.send,
        clock.call_later,
        reliable=False,
        on_terminated=lambda _t: ended.append(True),
    )
    txn.respond(build_response(txn.request, 200))
    txn.on_request(request("BYE"))
    assert len(wire.sent) == 2 and wire.sent[0][1] == wire.sent[1][1]
    clock.advance(64 * T1 + 1)
    assert ended == [True]


def test_client_transaction_retransmits_until_a_response_or_gives_up() -> None:
    clock = FakeClock()
    wire = Wire(clock)
    finals: list[SipResponse | None] = []
    bye = request("BYE", "z9hG4bKclient")
    txn = NonInviteClientTransaction(bye, wire.send, clock.call_later, reliable=False, on_final=finals.append)
    txn.start()
    clock.advance(1.6)
    assert wire.times() == [0.0, 0.5, 1.5]
    ok = build_response(bye, 200)
    txn.on_response(ok)
    clock.advance(10)
    assert finals == [ok] and len(wire.sent) == 3
    lost: list[SipResponse | None] = []
    unanswered = NonInviteClientTransaction(
        bye, wire.send, clock.call_later, reliable=False, on_final=lost.append
    )
    unanswered.start()
    clock.advance(64 * T1 + 1)
    assert lost == [None] and unanswered.state == "terminated"


def test_ack_matches_its_invite_transaction() -> None:
    assert transaction_key(request("ACK")) == transaction_key(request("INVITE"))
    assert transaction_key(request("BYE")) != transaction_key(request("INVITE"))
