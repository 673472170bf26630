"""One phone call: ringing until the app accepts or rejects it, then a Realtime session
whose audio is the call's RTP.

The session side is the WebRTC call's (transports/calls.py): the runtime plays the answer
out, and the call's RTP sends it as paced 20 ms G.711 packets pulled from the session, so
``output_audio_buffer.*`` events and barge-in truncation follow what the caller really heard.
DTMF key presses become ``input_audio_buffer.dtmf_event_received``. Events go to every
attached sideband socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from ...runtime.port import SessionClient
from ...runtime.session_runtime import SessionRuntime
from ..calls import CallSession, EventSink
from ..media import PcmAudio
from ..wire import EventWire, Frame
from .dialog import Dialog
from .message import SipRequest, SipResponse
from .rtp import MEDIA_TIMEOUT_S, RtpSession
from .sdp import Negotiated, build_answer

log = logging.getLogger("openrealtime.sip.call")

SIP_RATE = 8000


class Signaling(Protocol):
    """What a call needs from the SIP server."""

    media_host: str

    def final_response(self, call: SipCall, status: int, *, body: bytes = b"") -> None: ...

    async def request(
        self, call: SipCall, method: str, headers: list[tuple[str, str]] | None = None
    ) -> SipResponse | None: ...

    def call_ended(self, call: SipCall) -> None: ...


RuntimeFactory = Callable[[SessionClient], SessionRuntime]


class CallStateError(Exception):
    """The call is not in a state that allows this (e.g. accepting a call that was answered)."""


class SipCall:
    """A call from INVITE to BYE. States: ``ringing`` → ``active`` → ``ended``."""

    def __init__(
        self,
        call_id: str,
        invite: SipRequest,
        offer_sdp: str,
        negotiated: Negotiated,
        dialog: Dialog,
        signaling: Signaling,
    ) -> None:
        self.call_id = call_id
        self.invite = invite
        self.offer_sdp = offer_sdp
        self.negotiated = negotiated
        self.dialog = dialog
        self.signaling = signaling
        self.state = "ringing"
        self.key_id = ""
        self.runtime: SessionRuntime | None = None
        self.session = CallSession(self.close)
        self.rtp: RtpSession | None = None
        self.answer_sdp = ""
        self.ended = asyncio.Event()
        self.ring_timer: asyncio.TimerHandle | None = None
        self.end_reason = ""

    @property
    def closed(self) -> bool:
        return self.state == "ended"

    # ---- call control (the app's accept / reject / refer / hangup)

    async def accept(self, make_runtime: RuntimeFactory, key_id: str) -> None:
        """Answer 200 OK with our SDP and start the session on the call's audio."""
        if self.state != "ringing":
            raise CallStateError(f"The call is {self.state}, it cannot be accepted.")
        self._stop_ringing()
        self.state = "active"
        self.key_id = key_id
        chosen = self.negotiated
        receiving = chosen.direction in ("sendrecv", "recvonly")  # the caller sends us audio
        try:
            rtp = self.rtp = RtpSession(
                self.signaling.media_host,
                on_audio=self._on_caller_audio,
                on_dtmf=self.on_dtmf,
                pull=self.session.pull,
                on_media_timeout=lambda: self._spawn(self.close(), "sip-media-timeout"),
                media_timeout_s=MEDIA_TIMEOUT_S if receiving else float("inf"),
                in_real_time=lambda: self.session.input_in_real_time,
            )
            rtp.configure(
                (chosen.remote_address, chosen.remote_port),
                chosen.codec,
                chosen.payload_type,
                chosen.dtmf_payload_type,
            )
            rtp.sending = chosen.direction in ("sendrecv", "sendonly")
            rtp.use_srtp(chosen.srtp)  # SDES keys from the offer/answer, or None for plain RTP
            await rtp.start()
            self.runtime = make_runtime(self.session)
            self.session.port = self.runtime
        except BaseException:
            self.signaling.final_response(self, 500)
            await self._end(send_bye=False, status=0)
            raise
        self.answer_sdp = build_answer(self.offer_sdp, chosen, self.signaling.media_host, rtp.local_port)
        self.session.start()  # session.created
        self.signaling.final_response(self, 200, body=self.answer_sdp.encode())

    def reject(self, status: int = 603) -> None:
        if self.state != "ringing":
            raise CallStateError(f"The call is {self.state}, it cannot be rejected.")
        self._spawn(self._end(send_bye=False, status=status), "sip-reject")

    async def refer(self, target_uri: str) -> SipResponse | None:
        """Transfer the caller (REFER, RFC 3515); the peer's final response, or None."""
        if self.state != "active":
            raise CallStateError(f"The call is {self.state}, it cannot be transferred.")
        referred_by = self.dialog.local_uri
        return await self.signaling.request(
            self, "REFER", [("Refer-To", f"<{target_uri}>"), ("Referred-By", referred_by)]
        )

    async def close(self) -> None:
        """Hang up: BYE for an answered call, 603 for one still ringing. Idempotent."""
        await self._end(send_bye=self.state == "active", status=603)

    # ---- signalling events from the server

    def ring_timeout(self) -> None:
        if self.state == "ringing":
            log.info("call %s: not answered in time", self.call_id)
            self._spawn(self._end(send_bye=False, status=480), "sip-ring-timeout")

    def cancelled(self) -> None:
        """CANCEL before answer: 487 to the INVITE."""
        if self.state == "ringing":
            self._spawn(self._end(send_bye=False, status=487), "sip-cancel")

    def remote_hangup(self) -> None:
        """BYE from the caller (already answered 200)."""
        self._spawn(self._end(send_bye=False, status=0), "sip-bye")

    def transfer_finished(self) -> None:
        """The transfer target answered (NOTIFY with a 2xx sipfrag): our leg ends."""
        self._spawn(self.close(), "sip-transferred")

    def no_ack(self) -> None:
        log.info("call %s: no ACK for our 200 OK", self.call_id)
        self._spawn(self._end(send_bye=True, status=0), "sip-no-ack")

    # ---- sidebands and media in

    @property
    def input_format(self) -> str:
        return self.session.input_format

    async def attach(self, sink: EventSink) -> None:
        await self.session.attach(sink)

    def detach(self, sink: EventSink) -> None:
        self.session.detach(sink)

    def receive_frame(self, frame: Frame, wire: EventWire) -> None:
        """A client event from a sideband socket."""
        if self.state == "active":
            self.session.receive_frame(frame, wire)

    def _on_caller_audio(self, pcm8k: PcmAudio) -> None:
        if self.state == "active":
            self.session.caller_audio(pcm8k, SIP_RATE)

    def on_dtmf(self, digit: str) -> None:
        if self.state == "active" and self.runtime is not None:
            self.runtime.dtmf(digit)

    # ---- teardown

    def _stop_ringing(self) -> None:
        if self.ring_timer is not None:
            self.ring_timer.cancel()
            self.ring_timer = None

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self.session.spawn(coro, name)

    async def _end(self, *, send_bye: bool, status: int) -> None:
        """Finish the call once: the final SIP message, media, session, sidebands."""
        if self.state == "ended":
            return
        was_ringing = self.state == "ringing"
        self.state = "ended"
        self._stop_ringing()
        if was_ringing and status:
            self.signaling.final_response(self, status)
        self.signaling.call_ended(self)
        try:
            if send_bye:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.signaling.request(self, "BYE"), 5.0)
            with contextlib.suppress(Exception):
                await self.session.end_session()
        finally:
            if self.rtp is not None:
                await self.rtp.close()
            await self.session.close_sinks()
            self.ended.set()
