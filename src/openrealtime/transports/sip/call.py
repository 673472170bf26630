"""One phone call: ringing until the app accepts or rejects it, then a Realtime session
whose audio is the call's RTP.

The session side mirrors the WebRTC call (the server owns playback): assistant audio waits
in a ``Playout`` and leaves as paced 20 ms G.711 packets, so ``output_audio_buffer.*``
events and barge-in truncation follow what the caller really heard. DTMF key presses become
``input_audio_buffer.dtmf_event_received``. Events go to every attached sideband socket.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, cast

from ...audio import formats
from ...protocol import client_events as ce
from ...protocol import server_events as se
from ...protocol.errors import RealtimeError
from ...runtime.session_runtime import SessionRuntime
from ..media import InboundAudio, PcmAudio, PlaybackCleared, PlaybackEvent, PlaybackStarted, Playout
from .dialog import Dialog
from .message import SipRequest, SipResponse
from .rtp import MEDIA_TIMEOUT_S, RtpSession
from .sdp import Negotiated, build_answer

log = logging.getLogger("openrealtime.sip.call")

SIP_RATE = 8000


class EventSink(Protocol):
    def send(self, event: se.ServerEvent) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class Signaling(Protocol):
    """What a call needs from the SIP server."""

    media_host: str

    def final_response(self, call: SipCall, status: int, *, body: bytes = b"") -> None: ...

    async def request(
        self, call: SipCall, method: str, headers: list[tuple[str, str]] | None = None
    ) -> SipResponse | None: ...

    def call_ended(self, call: SipCall) -> None: ...


RuntimeFactory = Callable[
    [Callable[[se.ServerEvent], None], Callable[[int, str], Awaitable[None]]], SessionRuntime
]


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
        self.rtp: RtpSession | None = None
        self.answer_sdp = ""
        self.playout = Playout()
        self.sinks: list[EventSink] = []
        self.ended = asyncio.Event()
        self.ring_timer: asyncio.TimerHandle | None = None
        self.end_reason = ""
        self._inbound = InboundAudio()
        self._decoders: dict[str, formats.StreamDecoder] = {}
        self._last_audio_item: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._buffer_full_reported = False

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
                on_playback=self._on_playback,
                playout=self.playout,
                on_media_timeout=lambda: self._spawn(self.close(), "sip-media-timeout"),
                media_timeout_s=MEDIA_TIMEOUT_S if receiving else float("inf"),
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
            self.runtime = make_runtime(self._on_session_event, self._on_session_close)
        except BaseException:
            self.signaling.final_response(self, 500)
            await self._end(send_bye=False, status=0)
            raise
        self.answer_sdp = build_answer(self.offer_sdp, chosen, self.signaling.media_host, rtp.local_port)
        self.runtime.start()  # session.created
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

    # ---- sidebands

    async def attach(self, sink: EventSink) -> None:
        self.sinks.append(sink)

    def detach(self, sink: EventSink) -> None:
        with contextlib.suppress(ValueError):
            self.sinks.remove(sink)

    def on_client_frame(self, frame: str | bytes) -> None:
        """A client event from a sideband socket."""
        runtime = self.runtime
        if runtime is None or self.state != "active":
            return
        if _is_output_clear(frame):
            runtime.observers.client_event(runtime.info, "output_audio_buffer.clear")
            self._clear_output(by_client=True)
            return
        runtime.on_frame(frame)

    # ---- media in

    def _on_caller_audio(self, pcm8k: PcmAudio) -> None:
        runtime = self.runtime
        if runtime is None or self.state != "active":
            return
        core = runtime.core
        data = self._inbound.convert(pcm8k, SIP_RATE, 1, core.input_format)
        if core.append_media_audio(data):
            self._buffer_full_reported = False
        elif not self._buffer_full_reported:
            self._buffer_full_reported = True
            core.error(
                RealtimeError(
                    "input_audio_buffer_full",
                    "The input audio buffer is full; commit or clear it to keep listening.",
                )
            )
        runtime.flush()

    def on_dtmf(self, digit: str) -> None:
        if self.state != "active":
            return
        event = se.InputAudioBufferDtmfEventReceived(event=digit, received_at=int(time.time()))
        self._publish(cast(se.ServerEvent, event))  # the one event without an event_id

    # ---- session events → playout and sidebands

    def _publish(self, event: se.ServerEvent) -> None:
        for sink in list(self.sinks):
            sink.send(event)

    def _publish_own(self, event: se.ServerEvent) -> None:
        if self.runtime is not None:
            self.runtime.observers.server_event(self.runtime.info, event)
        self._publish(event)

    def _on_session_event(self, event: se.ServerEvent) -> None:
        if isinstance(event, se.ResponseOutputAudioDelta):
            self._queue_audio(event)
            return
        self._publish(event)
        if isinstance(event, se.InputAudioBufferSpeechStarted) and self._interrupts():
            self._clear_output(by_client=False)
        elif isinstance(event, se.ResponseDone):
            rid = str(event.response.get("id") or "")
            decoder = self._decoders.pop(rid, None)
            if decoder is not None:
                item = self._last_audio_item.pop(rid, None)
                tail = decoder.flush()
                if item is not None and len(tail):
                    self.playout.push(rid, item, tail)
            self._on_playback(list(self.playout.finish(rid)))

    def _queue_audio(self, event: se.ResponseOutputAudioDelta) -> None:
        assert self.runtime is not None
        rid = event.response_id
        decoder = self._decoders.get(rid)
        if decoder is None:
            live = self.runtime.core.responses.get(rid)
            fmt = live.output_format if live is not None else self._output_format()
            decoder = self._decoders[rid] = formats.StreamDecoder(fmt)
        self._last_audio_item[rid] = event.item_id
        self.playout.push(rid, event.item_id, decoder.decode(base64.b64decode(event.delta)))

    def _output_format(self) -> str:
        assert self.runtime is not None
        audio = getattr(self.runtime.core.session.audio, "output", None)
        return str(audio.format.type) if audio is not None else "audio/pcm"

    def _interrupts(self) -> bool:
        assert self.runtime is not None
        detection = self.runtime.core.session.audio.input.turn_detection
        return detection is not None and bool(getattr(detection, "interrupt_response", False))

    def _on_playback(self, events: list[PlaybackEvent]) -> None:
        for event in events:
            if isinstance(event, PlaybackStarted):
                self._publish_own(se.OutputAudioBufferStarted(response_id=event.response_id))
            else:
                self._publish_own(se.OutputAudioBufferStopped(response_id=event.response_id))

    def _clear_output(self, *, by_client: bool) -> None:
        """Barge-in or ``output_audio_buffer.clear``: queued audio is dropped at once (the next
        RTP packet is silence) and the answer is truncated to what the caller heard."""
        cleared = self.playout.clear()
        if cleared is None:
            return
        self._decoders.pop(cleared.response_id, None)
        self._last_audio_item.pop(cleared.response_id, None)
        self._publish_own(se.OutputAudioBufferCleared(response_id=cleared.response_id))
        if by_client:
            self._truncate(cleared)
        else:
            asyncio.get_running_loop().call_soon(self._truncate, cleared)

    def _truncate(self, cleared: PlaybackCleared) -> None:
        runtime = self.runtime
        if runtime is None or self.state != "active":
            return
        core = runtime.core
        if cleared.response_id in core.responses:
            core.cancel_response(cleared.response_id, "client_cancelled")
            runtime.flush()
        track = core.conversation.audio.get((cleared.item_id, 0))
        if track is None or cleared.item_id not in core.conversation or track.duration_ms == 0:
            return
        core.handle_event(
            ce.ConversationItemTruncate(
                type="conversation.item.truncate",
                item_id=cleared.item_id,
                content_index=0,
                audio_end_ms=min(cleared.played_ms, track.duration_ms),
            )
        )
        runtime.flush()

    async def _on_session_close(self, code: int, reason: str) -> None:
        """The session ended itself (fatal error, expiry): hang up."""
        self._spawn(self.close(), "sip-session-closed")

    # ---- teardown

    def _stop_ringing(self) -> None:
        if self.ring_timer is not None:
            self.ring_timer.cancel()
            self.ring_timer = None

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
            if self.runtime is not None:
                with contextlib.suppress(Exception):
                    await self.runtime.aclose()
        finally:
            if self.rtp is not None:
                await self.rtp.close()
            for sink in list(self.sinks):
                with contextlib.suppress(Exception):
                    await sink.close(1000, "call ended")
            self.sinks.clear()
            self.ended.set()


def _is_output_clear(frame: str | bytes) -> bool:
    if b"output_audio_buffer.clear" not in (frame.encode() if isinstance(frame, str) else frame):
        return False
    try:
        return isinstance(ce.parse_client_event(frame), ce.OutputAudioBufferClear)
    except RealtimeError:
        return False
