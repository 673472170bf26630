"""The input audio buffer, its clock, and the turn the caller is speaking.

The buffer holds 24 kHz PCM (the edge decoded the client's format). The input clock counts
every millisecond ever appended; VAD frames, ``audio_start_ms`` and ``audio_end_ms`` are
positions on it. With turn detection on, the speech segmenter (turns.py) decides where a turn
starts and ends; the turn's phase (``LISTENING`` ⇄ ``SPEAKING``) is kept here and changed only
through ``state.transition``. The session is told when a turn starts (barge-in) and when turn
detection committed one (the automatic response) through two callbacks.
"""

from __future__ import annotations

from collections.abc import Callable

from ..protocol import server_events as se
from ..protocol.errors import RealtimeError
from ..protocol.items import item_to_wire
from . import backchannels, turns
from .commands import (
    HeldSpeechDropped,
    InputAppended,
    InputBufferCleared,
    InputCommitted,
    PredictEndOfTurn,
    SpeechStarted,
    TranscribeHeld,
    TranscribeItem,
)
from .conversation import PCM_BYTES_PER_MS, AudioTrack
from .events import EndOfTurnPredicted, HeldSpeechHeard, PcmAudio, SpeechProbabilities
from .items import pcm_bytes, user_audio_message
from .state import SessionState, TurnPhase, TurnTrigger, transition

MIN_COMMIT_MS = 100


class InputTurns:
    """``input_audio_buffer.*``, caller audio from media transports, VAD-driven turns and
    the idle timeout."""

    def __init__(
        self,
        state: SessionState,
        *,
        on_speech_started: Callable[[], None],
        on_turn_committed: Callable[[], None],
        answering: Callable[[], bool] = lambda: False,
    ) -> None:
        self.state = state
        self.on_speech_started = on_speech_started
        """Called right after ``speech_started`` is emitted (barge-in)."""
        self.on_turn_committed = on_turn_committed
        """Called after turn detection committed a turn."""
        self.answering = answering
        """Whether the default response is being generated (speech now may be a backchannel)."""
        self.buffer = bytearray()
        self.total_ms = 0.0
        self.last_frame_end_ms = 0.0
        """The input clock: milliseconds of audio appended since the session started."""
        self.phase = TurnPhase.LISTENING
        self.turn_item_id: str | None = None
        """The user item id announced by ``speech_started`` (or the idle timeout)."""
        self.segmenter: turns.SpeechSegmenter | None = None
        self.held: backchannels.HeldSpeech | None = None
        """Speech heard while the answer plays, not yet known to be a bid for the turn."""
        self._onset_held = False
        """The VAD's possible onset (not yet ``min_speech_duration_ms`` long) came while speech
        would be held (see :attr:`onset_held`)."""
        self.refusing_caller_audio = False
        """Caller audio is being dropped because the buffer is full (reported once)."""
        self.configure()

    # ------------------------------------------------------------------ configuration

    @property
    def buffer_ms(self) -> float:
        return len(self.buffer) / PCM_BYTES_PER_MS

    @property
    def buffer_start_ms(self) -> float:
        return self.total_ms - self.buffer_ms

    def _move(self, trigger: TurnTrigger) -> None:
        self.phase = transition(self.phase, trigger)
        if self.phase is TurnPhase.LISTENING:
            self.turn_item_id = None

    def configure(self) -> None:
        """Keep the segmenter in step with ``audio.input.turn_detection``."""
        detection = self.state.session.audio.input.turn_detection
        if detection is None:
            if self.segmenter is not None:
                self.segmenter = None
                self.held = None
                self._move(TurnTrigger.DETECTION_OFF)
            return
        config = turns.config_for(detection)
        if self.segmenter is None:
            self.segmenter = turns.SpeechSegmenter(config, buffer_start_ms=self.buffer_start_ms)
        else:
            self.segmenter.update_config(config)  # a turn in progress continues under it

    # ------------------------------------------------------------------ audio in

    def _fits(self, pcm: PcmAudio) -> bool:
        return (len(self.buffer) + 2 * len(pcm)) / PCM_BYTES_PER_MS <= self.state.limits.max_input_buffer_ms

    def _append(self, pcm: PcmAudio) -> None:
        start_ms = self.total_ms
        self.buffer.extend(pcm_bytes(pcm))
        self.total_ms += len(pcm) * 2 / PCM_BYTES_PER_MS
        segmenter = self.segmenter
        self.state.command(
            InputAppended(pcm=pcm, start_ms=start_ms, turn_detection=segmenter is not None)
            if segmenter is None
            else InputAppended(pcm=pcm, start_ms=start_ms, silence_below=segmenter.config.neg_threshold)
        )

    def append(self, pcm: PcmAudio) -> None:
        """``input_audio_buffer.append``."""
        if not self._fits(pcm):
            limit_s = self.state.limits.max_input_buffer_ms // 1000
            raise RealtimeError(
                "input_audio_buffer_full",
                f"The input audio buffer would exceed {limit_s} seconds; commit or clear it first.",
                param="audio",
            )
        if len(pcm):
            self._append(pcm)

    def caller_audio(self, pcm: PcmAudio) -> None:
        """Audio from RTP: a full buffer drops it, and says so once until audio fits again."""
        if not len(pcm):
            return
        if self._fits(pcm):
            self.refusing_caller_audio = False
            self._append(pcm)
        elif not self.refusing_caller_audio:
            self.refusing_caller_audio = True
            self.state.error(
                RealtimeError(
                    "input_audio_buffer_full",
                    "The input audio buffer is full; commit or clear it to keep listening.",
                )
            )

    # ------------------------------------------------------------------ commit and clear

    def commit(self) -> None:
        """``input_audio_buffer.commit``."""
        ms = self.buffer_ms
        if ms < MIN_COMMIT_MS:
            raise RealtimeError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
                f"but buffer only has {ms:.2f}ms of audio.",
            )
        self._commit(len(self.buffer), by_vad=False)
        self._move(TurnTrigger.COMMITTED)
        if self.segmenter is not None:
            self.segmenter.reset(self.total_ms)
        self.held = None

    def clear(self) -> None:
        """``input_audio_buffer.clear``."""
        self.buffer.clear()
        self._move(TurnTrigger.CLEARED)
        if self.segmenter is not None:
            self.segmenter.reset(self.total_ms)
        self.held = None
        self.state.command(InputBufferCleared())
        self.state.emit(se.InputAudioBufferCleared())

    def _commit(self, end_byte: int, *, by_vad: bool) -> str:
        """Turn the buffered audio up to ``end_byte`` into a user item; returns its id."""
        state = self.state
        end = max(0, min(end_byte, len(self.buffer)))
        end -= end % 2
        start_ms = self.buffer_start_ms
        audio = bytes(self.buffer[:end])
        del self.buffer[:end]
        item_id = self.turn_item_id or state.new_id("item_")
        state.command(
            InputCommitted(
                item_id=item_id, start_ms=start_ms, end_ms=start_ms + end / PCM_BYTES_PER_MS, by_vad=by_vad
            )
        )
        item = user_audio_message(item_id)
        previous = state.conversation.last_id()
        state.emit(se.InputAudioBufferCommitted(item_id=item_id, previous_item_id=previous))
        state.conversation.insert(item)
        fmt = state.session.audio.input.format.type
        state.conversation.audio[(item_id, 0)] = AudioTrack(format=fmt, data=bytearray(audio))
        wire = item_to_wire(item)
        state.emit(se.ConversationItemAdded(item=wire, previous_item_id=previous))
        state.emit(se.ConversationItemDone(item=wire, previous_item_id=previous))
        transcription = state.session.audio.input.transcription
        state.command(
            TranscribeItem(
                item_id=item_id,
                pcm=_samples(audio),
                model=transcription.model if transcription else None,
                language=transcription.language if transcription else None,
                prompt=transcription.prompt if transcription else None,
            )
        )
        return item_id

    # ------------------------------------------------------------------ turn detection

    def speech_probabilities(self, result: SpeechProbabilities) -> None:
        if self.segmenter is None or self.state.closed:
            return
        for frame in result.frames:
            candidate = self.segmenter.state is turns.SegmenterState.CANDIDATE
            for event in self.segmenter.process(
                frame.probability, frame.start_ms, frame.end_ms, frame.level_db
            ):
                self._segmented(event, audible=frame.assistant_audible or (candidate and self._onset_held))
            if not candidate and self.segmenter.state is turns.SegmenterState.CANDIDATE:
                self._onset_held = self._holds(frame.assistant_audible)
            self.last_frame_end_ms = frame.end_ms
            if self.held is not None:
                self._judge_held()

    def held_speech_heard(self, result: HeldSpeechHeard) -> None:
        if self.held is not None and self.held.item_id == result.item_id:
            self.held.heard(result.text, result.end_ms)
            self._judge_held()

    def _judge_held(self) -> None:
        """Ask for the held speech's transcript once it ended, and carry out its verdict once
        there is one (a turn end found meanwhile waits in ``held.stopped``)."""
        held, segmenter = self.held, self.segmenter
        if held is None or segmenter is None:
            return
        span = held.span_to_transcribe(segmenter)
        if span is not None:
            self.state.command(TranscribeHeld(held.item_id, *span))
        verdict = backchannels.decide(held, segmenter, self.last_frame_end_ms)
        if verdict is backchannels.Verdict.UNDECIDED:
            return
        self.held = None
        if verdict is backchannels.Verdict.INTERRUPTION:
            self._announce(held.item_id, held.started.audio_start_ms)
            if held.stopped is not None:
                self._stop(held.stopped)
            return
        if held.stopped is None:
            segmenter.reset()
        self.state.command(HeldSpeechDropped(held.item_id))

    @property
    def onset_held(self) -> bool:
        """Speech may be starting while an answer plays and would be held: a played answer
        pauses from the VAD's first frame of speech rather than from its confirmed onset
        (``min_speech_duration_ms`` later), and plays on if that frame was a blip."""
        segmenter = self.segmenter
        return (
            self.held is None
            and segmenter is not None
            and segmenter.state is turns.SegmenterState.CANDIDATE
            and self._onset_held
        )

    def _holds(self, audible: bool) -> bool:
        """Speech now is held: semantic_vad, barge-in on, and an answer is heard or generated."""
        detection = self.state.session.audio.input.turn_detection
        return (
            (audible or self.answering())
            and detection is not None
            and detection.type == "semantic_vad"
            and detection.interrupt_response
        )

    def end_of_turn(self, result: EndOfTurnPredicted) -> None:
        if self.segmenter is None or self.state.closed:
            return
        for event in self.segmenter.end_of_turn_result(
            result.request_id,
            result.probability,
            text=result.text,
            prosody=result.prosody,
            text_pending=result.text_pending,
        ):
            self._segmented(event)

    def _stop(self, event: turns.SpeechStopped) -> None:
        """``speech_stopped``: the turn is committed up to where its end was decided."""
        state = self.state
        item_id = self.turn_item_id or state.new_id("item_")
        self.turn_item_id = item_id
        state.emit(se.InputAudioBufferSpeechStopped(audio_end_ms=event.audio_end_ms, item_id=item_id))
        end_byte = int((event.detected_at_ms - self.buffer_start_ms) * PCM_BYTES_PER_MS)
        self._commit(end_byte, by_vad=True)
        self._move(TurnTrigger.SPEECH_STOPPED)
        self.on_turn_committed()

    def _announce(self, item_id: str, audio_start_ms: int) -> None:
        """``speech_started`` (and barge-in) for a turn whose transcription already runs."""
        self._move(TurnTrigger.SPEECH_STARTED)
        self.turn_item_id = item_id
        self.state.emit(se.InputAudioBufferSpeechStarted(audio_start_ms=audio_start_ms, item_id=item_id))
        self.on_speech_started()

    def _segmented(self, event: turns.SegmenterEvent, *, audible: bool = False) -> None:
        state = self.state
        if isinstance(event, turns.SpeechStarted):
            if self.held is not None:  # new speech after a turn end that awaits its verdict
                state.command(HeldSpeechDropped(self.held.item_id))
                self.held = None
            item_id = state.new_id("item_")
            held = self._holds(audible)
            transcription = state.session.audio.input.transcription
            state.command(
                SpeechStarted(
                    item_id=item_id,
                    audio_start_ms=event.audio_start_ms,
                    language=transcription.language if transcription else None,
                    prompt=transcription.prompt if transcription else None,
                    held=held,
                )
            )
            if held:
                self.held = backchannels.HeldSpeech(item_id, event)
            else:
                self._announce(item_id, event.audio_start_ms)
        elif isinstance(event, turns.SpeechStopped):
            if self.held is not None:
                self.held.stopped = event
                self._judge_held()
                return
            self._stop(event)
        else:
            state.command(
                PredictEndOfTurn(
                    request_id=event.request_id,
                    audio_start_ms=event.audio_start_ms,
                    audio_end_ms=event.audio_end_ms,
                    speech_end_ms=event.speech_end_ms,
                )
            )

    def idle_timeout(self) -> bool:
        """``idle_timeout_ms`` passed: commit what was heard (maybe nothing) as a turn so the
        assistant prompts the caller. False when it does not apply now."""
        detection = self.state.session.audio.input.turn_detection
        if detection is None or detection.type != "server_vad" or self.phase is TurnPhase.SPEAKING:
            return False
        item_id = self.turn_item_id = self.state.new_id("item_")
        self.state.emit(
            se.InputAudioBufferTimeoutTriggered(
                audio_start_ms=int(self.buffer_start_ms), audio_end_ms=int(self.total_ms), item_id=item_id
            )
        )
        self._commit(len(self.buffer), by_vad=True)
        self._move(TurnTrigger.COMMITTED)
        if self.segmenter is not None:
            self.segmenter.reset(self.total_ms)
        self.held = None
        return True


def _samples(data: bytes) -> PcmAudio:
    import numpy as np

    return np.frombuffer(data, dtype="<i2").astype(np.int16)
