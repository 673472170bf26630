"""The recorder joins live sessions as an observer (``runtime/observer.py``).

One ``RecordingObserver`` per server: at ``session_started`` it asks the ``RecordingService``
for a ``SessionRecorder`` (none when the key's mode is ``off``) and from then on hands it what
the session does: every client event as received (typed, turned back into its wire JSON, with
whether it was accepted), the caller's audio of media calls, every server event, the speech as
sent (WebSocket) or as actually played (WebRTC, SIP: frame by frame, so a barge-in's cut is
exact), turn timings and notes such as the disclosure. A SIP caller's opt-out key stops and
deletes the recording of the call.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from ..core.events import AppendAudio, ClientInput, CreateItem, OutputAudio, PcmAudio
from ..protocol.server_events import ServerEvent
from ..runtime.observer import SessionInfo
from .journal import pcm_bytes
from .service import RecordingService, SessionRecorder

__all__ = ["RecordingObserver"]

log = logging.getLogger("openrealtime.recording")


def client_event_wire(event: ClientInput | None) -> dict[str, Any]:
    """A typed client event as its wire JSON (decoded audio is passed along separately)."""
    if event is None:
        return {"type": "invalid"}
    if isinstance(event, AppendAudio):
        wire: dict[str, Any] = {"type": "input_audio_buffer.append"}
        if event.event_id is not None:
            wire["event_id"] = event.event_id
        return wire
    if isinstance(event, CreateItem):
        created: dict[str, Any] = event.event.model_dump(mode="json", exclude_none=True)
        content = created.get("item", {}).get("content")
        for index, pcm in event.audio.items():  # decoded on arrival: kept as 24 kHz pcm16
            if isinstance(content, list) and index < len(content) and isinstance(content[index], dict):
                content[index]["audio"] = base64.b64encode(pcm_bytes(pcm)).decode()
        return created
    dumped: dict[str, Any] = event.model_dump(mode="json", exclude_none=True)
    return dumped


class RecordingObserver:
    """Feeds the recording service from every live session (a ``SessionObserver``)."""

    def __init__(self, service: RecordingService, *, opt_out_key: str | None = None) -> None:
        self.service = service
        self.opt_out_key = opt_out_key
        self.recorders: dict[str, SessionRecorder] = {}

    def _recorder(self, info: SessionInfo) -> SessionRecorder | None:
        return self.recorders.get(info.session_id)

    def session_started(self, info: SessionInfo) -> None:
        recorder = self.service.start_session(
            session_id=info.session_id, key_id=info.key_id, transport=info.transport, model=info.model
        )
        if recorder is not None:
            self.recorders[info.session_id] = recorder

    def session_ended(self, info: SessionInfo) -> None:
        recorder = self.recorders.pop(info.session_id, None)
        if recorder is not None:
            recorder.close()

    def client_event(self, info: SessionInfo, event_type: str) -> None:
        """(the typed event comes with ``client_input``)"""

    def client_input(self, info: SessionInfo, event: ClientInput | None, accepted: bool, at: float) -> None:
        recorder = self._recorder(info)
        if recorder is None:
            return
        pcm = event.pcm if isinstance(event, AppendAudio) else None
        recorder.client_event(client_event_wire(event), at=at, pcm=pcm, accepted=accepted)

    def server_event(self, info: SessionInfo, event: ServerEvent) -> None:
        recorder = self._recorder(info)
        if recorder is not None:
            recorder.server_event(event.model_dump(mode="json"))

    def output_audio(self, info: SessionInfo, audio: OutputAudio) -> None:
        """The speech sent to a WebSocket client, as the delta event it becomes on the wire
        (media calls record what was played instead, ``played_audio``)."""
        recorder = self._recorder(info)
        if recorder is None or info.transport != "websocket":
            return
        delta = {
            "type": "response.output_audio.delta",
            "response_id": audio.response_id,
            "item_id": audio.item_id,
            "output_index": audio.output_index,
            "content_index": audio.content_index,
        }
        recorder.server_event(delta, pcm=audio.pcm)

    def caller_audio(self, info: SessionInfo, pcm: PcmAudio, at: float) -> None:
        recorder = self._recorder(info)
        if recorder is not None:
            recorder.caller_audio(pcm, at=at)

    def played_audio(self, info: SessionInfo, response_id: str, item_id: str, pcm: PcmAudio) -> None:
        recorder = self._recorder(info)
        if recorder is not None:
            recorder.assistant_audio(response_id, item_id, pcm)

    def turn_timings(self, info: SessionInfo, record: dict[str, Any]) -> None:
        recorder = self._recorder(info)
        if recorder is not None:
            recorder.turn_timings(record)

    def note(self, info: SessionInfo, kind: str, data: dict[str, Any]) -> None:
        recorder = self._recorder(info)
        if recorder is not None:
            recorder.note(kind, data)

    def dtmf(self, info: SessionInfo, digit: str) -> None:
        if self.opt_out_key is None or digit != self.opt_out_key:
            return
        recorder = self.recorders.pop(info.session_id, None)
        if recorder is not None:
            log.info("recording %s: the caller opted out; deleted", recorder.recording_id)
            recorder.opt_out()
