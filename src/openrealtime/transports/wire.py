"""The JSON edge of a connection: client frames in, server frames out.

Every transport that carries Realtime JSON (the WebSocket, WebRTC's data channel, sideband
sockets of WebRTC and SIP calls) turns frames into the core's typed inputs here and the
session's outputs back into frames. Base64 and the session's wire audio formats exist only
here: appended and created audio is decoded to 24 kHz PCM on the way in, and speech and
retrieved audio are encoded into the format asked for on the way out. The connection's
``shape`` (``protocol.shape``) sits outermost: GA passes unchanged, the beta shape translates
frames in and events out, so the core and the runtime always speak GA.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

import numpy as np

from ..audio import formats
from ..core.events import AppendAudio, ClientInput, CreateItem, OutputAudio, PcmAudio, RetrievedItem
from ..protocol import client_events as ce
from ..protocol import server_events as se
from ..protocol.errors import RealtimeError
from ..protocol.shape import GA_SHAPE, EventShape
from ..runtime.port import ClientOutput, SessionPort

Frame = str | bytes
GaEvent = se.ServerEvent | se.InputAudioBufferDtmfEventReceived


def _b64decode(data: str, param: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RealtimeError("invalid_value", "Invalid 'audio': not valid base64.", param=param) from None


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode()


class EventWire:
    """Frames ⇄ typed events for one connection in its ``shape``; ``input_format`` gives the
    session's current ``audio.input.format`` (what appended audio is in)."""

    def __init__(
        self, input_format: Callable[[], str] = lambda: "audio/pcm", *, shape: EventShape = GA_SHAPE
    ) -> None:
        self.input_format = input_format
        self.shape = shape
        self._decoder: formats.ExactDecoder | None = None
        self._encoders: dict[str, formats.StreamEncoder] = {}

    # ------------------------------------------------------------------ in

    def decode(self, frame: Frame) -> ClientInput:
        """Parse one GA client frame; raises ``RealtimeError`` (with the event's ``event_id``)."""
        event = ce.parse_client_event(frame)
        try:
            match event:
                case ce.InputAudioBufferAppend():
                    return AppendAudio(self._appended(event.audio), event.event_id)
                case ce.ConversationItemCreate():
                    return CreateItem(event, self._item_audio(event.item))
                case ce.ResponseCreate():
                    for entry in (event.response.input or []) if event.response else []:
                        for part in entry.get("content") or ():
                            part.pop("audio", None)  # the model reads transcripts, never inline audio
                    return event
                case _:
                    return event
        except RealtimeError as err:
            err.event_id = event.event_id
            raise

    def _appended(self, audio: str) -> PcmAudio:
        if len(audio) > ce.MAX_APPEND_BASE64_CHARS:
            raise RealtimeError(
                "input_audio_buffer_append_too_large",
                "Audio in one input_audio_buffer.append must be at most 15 MiB.",
                param="audio",
            )
        data = _b64decode(audio, "audio")
        fmt = self.input_format()
        if fmt == "audio/pcm" and len(data) % 2:
            raise RealtimeError(
                "invalid_value",
                "Invalid 'audio': audio/pcm must be 16-bit samples (an even number of bytes).",
                param="audio",
            )
        if self._decoder is not None and self._decoder.format == fmt:
            return self._decoder.decode(data)
        tail = self._decoder.flush() if self._decoder is not None else None
        self._decoder = formats.ExactDecoder(fmt)
        pcm = self._decoder.decode(data)
        return pcm if tail is None or not len(tail) else np.concatenate([tail, pcm])

    def inputs(self, frame: Frame) -> list[ClientInput]:
        """Like :meth:`decode`, with the G.711 decoder's held-back audio appended before a
        commit or clear, so the buffer then holds all the client sent."""
        event = self.decode(frame)
        if (
            isinstance(event, ce.InputAudioBufferCommit | ce.InputAudioBufferClear)
            and self._decoder is not None
        ):
            tail = self._decoder.flush()
            if len(tail):
                return [AppendAudio(tail), event]
        return [event]

    def _item_audio(self, item: dict[str, Any]) -> dict[int, PcmAudio]:
        """Decode the ``input_audio`` parts of a created user message (taking their base64 out)."""
        if item.get("type") != "message" or item.get("role") != "user":
            return {}
        audio: dict[int, PcmAudio] = {}
        fmt = self.input_format()
        for index, part in enumerate(item.get("content") or ()):
            if part.get("type") != "input_audio":
                continue
            raw = part.pop("audio", None)
            if not raw:
                continue
            param = f"item.content[{index}].audio"
            try:
                audio[index] = formats.decode(fmt, _b64decode(raw, param))
            except formats.AudioFormatError as exc:
                raise RealtimeError(exc.code, exc.message, param=param) from None
        return audio

    def deliver(self, frame: Frame, port: SessionPort) -> None:
        """Translate ``frame`` from the connection's shape, decode it and hand it to the
        session (a refusal as an ``error``)."""

        def deliver_ga(ga_frame: Frame) -> None:
            try:
                events = self.inputs(ga_frame)
            except RealtimeError as err:
                port.client_error(err)
            else:
                for event in events:
                    port.client_event(event)

        self.shape.receive(frame, deliver_ga, port.client_error)

    # ------------------------------------------------------------------ out

    def encode(self, output: ClientOutput) -> list[str]:
        """The frames for one output, in order, in the connection's shape (speech may be held
        back by a G.711 encoder and comes out at the end of its part)."""
        return [frame for event in self.events(output) for frame in self.shape.send(event)]

    def events(self, output: ClientOutput) -> list[GaEvent]:
        """The GA events one output becomes (audio as base64 in its format)."""
        match output:
            case OutputAudio():
                encoder = self._encoders.get(output.response_id)
                if encoder is None:
                    encoder = self._encoders[output.response_id] = formats.StreamEncoder(output.format)
                return self._delta(output, encoder.encode(output.pcm))
            case RetrievedItem():
                event = output.event
                for index, clip in output.clips.items():
                    pcm = np.frombuffer(clip.pcm, dtype="<i2").astype(np.int16)
                    event.item["content"][index]["audio"] = _b64encode(formats.encode(clip.format, pcm))
                return [event]
            case se.ResponseOutputAudioDone():
                encoder = self._encoders.get(output.response_id)
                tail = encoder.flush() if encoder is not None else b""
                return [*self._delta(output, tail), output]
            case se.ResponseDone():
                self._encoders.pop(str(output.response.get("id") or ""), None)
                return [output]
            case _:
                return [output]

    @staticmethod
    def _delta(part: OutputAudio | se.ResponseOutputAudioDone, data: bytes) -> list[GaEvent]:
        if not data:
            return []
        delta = se.ResponseOutputAudioDelta(
            response_id=part.response_id,
            item_id=part.item_id,
            output_index=part.output_index,
            content_index=part.content_index,
            delta=_b64encode(data),
        )
        return [delta]
