"""SIP transactions (RFC 3261 §17): retransmissions and timers, sans I/O.

Each transaction gets a ``send(bytes)`` and a ``call_later(delay, fn)`` (the event loop's,
or a fake clock in tests). Over UDP responses and requests are retransmitted on the
RFC 3261 timers (T1 doubling up to T2); over TCP nothing is retransmitted and the "wait"
timers are zero.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .message import SipRequest, SipResponse, branch_of

T1 = 0.5
T2 = 4.0
T4 = 5.0


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


CallLater = Callable[[float, Callable[[], None]], TimerHandle]
Send = Callable[[bytes], None]


def transaction_key(request: SipRequest) -> tuple[str, str, str]:
    """Matches requests to server transactions (§17.2.3): top Via branch + sent-by + method
    (an ACK belongs to its INVITE's transaction)."""
    via = request.get_all("Via")[0] if request.get_all("Via") else ""
    sent_by = via.split(";", 1)[0].split()[-1].lower() if via.split() else ""
    method = "INVITE" if request.method == "ACK" else request.method
    return branch_of(via), sent_by, method


class _Timers:
    def __init__(self, call_later: CallLater) -> None:
        self._call_later = call_later
        self._handles: dict[str, TimerHandle] = {}

    def start(self, name: str, delay: float, fn: Callable[[], None]) -> None:
        self.stop(name)
        self._handles[name] = self._call_later(delay, fn)

    def stop(self, name: str) -> None:
        handle = self._handles.pop(name, None)
        if handle is not None:
            handle.cancel()

    def stop_all(self) -> None:
        for name in list(self._handles):
            self.stop(name)


class InviteServerTransaction:
    """§17.2.1: provisional responses, then one final; a non-2xx final is retransmitted (timer G)
    until the ACK (→ confirmed, timer I) or timer H (no ACK: ``on_timeout``). A 2xx ends the
    transaction at once: the dialog retransmits it (``AckWaiter``)."""

    def __init__(
        self,
        request: SipRequest,
        send: Send,
        call_later: CallLater,
        *,
        reliable: bool,
        on_terminated: Callable[[InviteServerTransaction], None] = lambda _t: None,
        on_timeout: Callable[[], None] = lambda: None,
    ) -> None:
        self.request = request
        self.key = transaction_key(request)
        self.send = send
        self.reliable = reliable
        self.on_terminated = on_terminated
        self.on_timeout = on_timeout
        self.state = "proceeding"
        self.last_response: SipResponse | None = None
        self._timers = _Timers(call_later)
        self._interval = T1

    def respond(self, response: SipResponse) -> None:
        if self.state != "proceeding":
            return
        self.last_response = response
        self.send(response.serialize())
        if response.status < 200:
            return
        if response.status < 300:
            self._terminate()
            return
        self.state = "completed"
        if not self.reliable:
            self._timers.start("G", self._interval, self._timer_g)
        self._timers.start("H", 64 * T1, self._timer_h)

    def on_request(self, request: SipRequest) -> None:
        """A retransmitted INVITE (resend our last response) or the ACK of a non-2xx."""
        if request.method == "ACK":
            if self.state == "completed":
                self.state = "confirmed"
                self._timers.stop("G")
                self._timers.stop("H")
                self._timers.start("I", 0 if self.reliable else T4, self._terminate)
            return
        if self.state in ("proceeding", "completed") and self.last_response is not None:
            self.send(self.last_response.serialize())

    def _timer_g(self) -> None:
        if self.state != "completed" or self.last_response is None:
            return
        self.send(self.last_response.serialize())
        self._interval = min(2 * self._interval, T2)
        self._timers.start("G", self._interval, self._timer_g)

    def _timer_h(self) -> None:
        if self.state == "completed":
            self._terminate()
            self.on_timeout()

    def _terminate(self) -> None:
        if self.state == "terminated":
            return
        self.state = "terminated"
        self._timers.stop_all()
        self.on_terminated(self)


class NonInviteServerTransaction:
    """§17.2.2: a retransmitted request gets our last response again; after the final response
    the transaction lingers for timer J (64*T1 on UDP) to absorb retransmissions."""

    def __init__(
        self,
        request: SipRequest,
        send: Send,
        call_later: CallLater,
        *,
        reliable: bool,
        on_terminated: Callable[[NonInviteServerTransaction], None] = lambda _t: None,
    ) -> None:
        self.request = request
        self.key = transaction_key(request)
        self.send = send
        self.reliable = reliable
        self.on_terminated = on_terminated
        self.state = "trying"
        self.last_response: SipResponse | None = None
        self._timers = _Timers(call_later)

    def respond(self, response: SipResponse) -> None:
        if self.state in ("completed", "terminated"):
            return
        self.last_response = response
        self.send(response.serialize())
        if response.status < 200:
            self.state = "proceeding"
            return
        self.state = "completed"
        self._timers.start("J", 0 if self.reliable else 64 * T1, self._terminate)

    def on_request(self, request: SipRequest) -> None:
        if self.last_response is not None and self.state in ("proceeding", "completed"):
            self.send(self.last_response.serialize())

    def _terminate(self) -> None:
        if self.state != "terminated":
            self.state = "terminated"
            self._timers.stop_all()
            self.on_terminated(self)


class NonInviteClientTransaction:
    """§17.1.2: our BYE/REFER/NOTIFY answer path. Retransmits (timer E) until a response,
    gives up after timer F (64*T1); ``on_final`` gets the final response, or None on timeout."""

    def __init__(
        self,
        request: SipRequest,
        send: Send,
        call_later: CallLater,
        *,
        reliable: bool,
        on_final: Callable[[SipResponse | None], None],
        on_terminated: Callable[[NonInviteClientTransaction], None] = lambda _t: None,
    ) -> None:
        self.request = request
        self.branch = branch_of(request.get_all("Via")[0])
        self.send = send
        self.reliable = reliable
        self.on_final = on_final
        self.on_terminated = on_terminated
        self.state = "trying"
        self._timers = _Timers(call_later)
        self._interval = T1
        self._data = request.serialize()

    def start(self) -> None:
        self.send(self._data)
        if not self.reliable:
            self._timers.start("E", self._interval, self._timer_e)
        self._timers.start("F", 64 * T1, self._timer_f)

    def on_response(self, response: SipResponse) -> None:
        if self.state in ("completed", "terminated"):
            return
        if response.status < 200:
            self.state = "proceeding"
            return
        self.state = "completed"
        self._timers.stop("E")
        self._timers.stop("F")
        self.on_final(response)
        self._timers.start("K", 0 if self.reliable else T4, self._terminate)

    def _timer_e(self) -> None:
        if self.state not in ("trying", "proceeding"):
            return
        self.send(self._data)
        self._interval = T2 if self.state == "proceeding" else min(2 * self._interval, T2)
        self._timers.start("E", self._interval, self._timer_e)

    def _timer_f(self) -> None:
        if self.state in ("trying", "proceeding"):
            self._terminate()
            self.on_final(None)

    def _terminate(self) -> None:
        if self.state != "terminated":
            self.state = "terminated"
            self._timers.stop_all()
            self.on_terminated(self)


class AckWaiter:
    """§13.3.1.4: the UAS retransmits its 2xx to an INVITE until the ACK arrives; with no ACK
    after 64*T1 the dialog is ended (``on_timeout``). Over TCP nothing is retransmitted."""

    def __init__(
        self,
        response: SipResponse,
        send: Send,
        call_later: CallLater,
        *,
        reliable: bool,
        on_timeout: Callable[[], None],
    ) -> None:
        self._data = response.serialize()
        self.send = send
        self.reliable = reliable
        self.on_timeout = on_timeout
        self.acked = False
        self._timers = _Timers(call_later)
        self._interval = T1

    def start(self, *, already_sent: bool = False) -> None:
        if not already_sent:
            self.send(self._data)
        if not self.reliable:
            self._timers.start("retransmit", self._interval, self._retransmit)
        self._timers.start("give_up", 64 * T1, self._give_up)

    def resend(self) -> None:
        """The INVITE was retransmitted: our 2xx got lost, send it again."""
        if not self.acked:
            self.send(self._data)

    def ack(self) -> None:
        self.acked = True
        self._timers.stop_all()

    def cancel(self) -> None:
        self._timers.stop_all()

    def _retransmit(self) -> None:
        if self.acked:
            return
        self.send(self._data)
        self._interval = min(2 * self._interval, T2)
        self._timers.start("retransmit", self._interval, self._retransmit)

    def _give_up(self) -> None:
        if not self.acked:
            self._timers.stop_all()
            self.on_timeout()
