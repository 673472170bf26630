"""Turn-taking: speech probabilities into ``speech_started`` / ``speech_stopped`` decisions.

A pure, deterministic state machine: no threads, no clocks, no audio. The caller runs a VAD
model on fixed frames and feeds each frame's speech probability, the frame's position on the
session's input clock (ms since the first appended byte) and, optionally, the frame's level
in dB. Time only moves with audio, as on the real service: if the client stops sending
audio, nothing fires.

Decisions (both modes)
----------------------
* ``neg = negative_threshold`` (default ``max(threshold - 0.15, 0.01)``, silero's reference
  hysteresis).
* **Onset.** From idle, a frame with ``p >= threshold`` opens a *candidate* whose onset is that
  frame's start. Frames with ``p >= neg`` extend it; a frame with ``p < neg`` drops it. Once the
  candidate spans ``min_speech_duration_ms`` (onset to end of the current frame) it is
  confirmed and :class:`SpeechStarted` is emitted. Clicks shorter than the minimum never start
  a turn, so they never barge in on the assistant.
* **Speaking.** Frames with ``p >= neg`` extend speech (``speech_end`` = that frame's end). The
  first frame with ``p < neg`` starts *silence* at ``speech_end``.
* **Resuming.** In silence, ``p >= threshold`` opens a resume candidate under the same
  minimum-duration rule; confirmed, speech continues (no event); dropped, its frames count as
  silence. While a resume candidate is open the turn does not end.
* ``server_vad`` ends the turn once ``silence >= silence_duration_ms``, silence running from
  the reported (refined) end of speech to the end of the current frame, so the VAD's release
  lag does not add to the caller's wait.
* ``semantic_vad`` asks the turn detector. Once ``silence >= min_silence_ms`` the segmenter
  emits :class:`EndOfTurnRequested` (one at a time, ids increase); the caller runs the detector
  on the turn's audio ``[audio_start_ms, audio_end_ms)`` on a worker thread and feeds the answer
  back with :meth:`SpeechSegmenter.end_of_turn_result`. An answer ``>= end_of_turn_threshold``
  ends the turn at once (reason ``end_of_turn``). A lower answer keeps waiting; the detector is
  asked again once another ``retry_interval_ms`` of silence has passed since that answer (never
  if ``None``). Whatever the detector says, ``silence >= max_silence_ms`` ends the turn (reason
  ``max_silence``). Eagerness sets the defaults: low 8 s / 0.7, medium and auto 4 s / 0.5,
  high 2 s / 0.3 (max silence / probability threshold). Answers to a request made before the
  user resumed speaking, or after :meth:`~SpeechSegmenter.reset`, are ignored. With
  ``combined=True`` (the default) the flat threshold and timeout give way to the evidence of
  each pause and its silence budget (core/pause_evidence.py).

Reported edges
--------------
Silero's edges are late; :class:`~openrealtime.core.edges.EdgeRefinement` corrects the
reported ones (its module says how and by how much).

* :class:`SpeechStarted`: ``speech_start_ms`` = the onset; ``audio_start_ms = max(onset -
  prefix_padding_ms, buffer_start_ms)``, floored.
* :class:`SpeechStopped`: ``audio_end_ms`` = the refined end of speech (ceiled);
  ``detected_at_ms`` = end of the frame, or the clock position of the turn-detector answer,
  that decided it. After a stop the segmenter is idle and ``buffer_start_ms`` moves to
  ``detected_at_ms``, where the server commits the buffer.

OpenAI documents ``speech_stopped.audio_end_ms`` as including the silence duration; this
module reports the speech edge in ``audio_end_ms`` and the decision point in
``detected_at_ms``; the session core chooses which one goes on the wire.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from ..engines.turn.end_of_turn import EndOfTurnPolicy
from ..protocol.session import SemanticVad, ServerVad
from .edges import EdgeRefinement
from .pause_evidence import PauseEvidence

__all__ = [
    "EAGERNESS_DEFAULTS",
    "Eagerness",
    "EdgeRefinement",
    "EndOfTurnRequested",
    "SegmenterConfig",
    "SegmenterEvent",
    "SegmenterState",
    "SemanticVadConfig",
    "ServerVadConfig",
    "SpeechSegmenter",
    "SpeechStarted",
    "SpeechStopped",
    "StopReason",
    "config_for",
]

Eagerness = Literal["low", "medium", "high", "auto"]
StopReason = Literal["silence", "end_of_turn", "max_silence"]

EAGERNESS_DEFAULTS: dict[Eagerness, tuple[int, float]] = {
    "low": (8000, 0.7),
    "medium": (4000, 0.5),
    "auto": (4000, 0.5),
    "high": (2000, 0.3),
}
"""eagerness → (max silence before the turn ends regardless, end-of-turn probability threshold)."""

_EPS = 1e-6
_HISTORY_FRAMES = 32


def _check_common(threshold: float, negative_threshold: float | None, prefix: int, min_speech: int) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be within [0, 1], got {threshold}")
    if negative_threshold is not None and not 0.0 <= negative_threshold <= threshold:
        raise ValueError(f"negative_threshold must be within [0, threshold], got {negative_threshold}")
    if prefix < 0 or min_speech < 0:
        raise ValueError("prefix_padding_ms and min_speech_duration_ms must be non-negative")


@dataclass(frozen=True)
class ServerVadConfig:
    """``server_vad``: the turn ends after a fixed silence.

    The protocol's fields plus tuning knobs the wire does not carry.
    """

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    negative_threshold: float | None = None
    min_speech_duration_ms: int = 80
    refinement: EdgeRefinement | None = field(default_factory=EdgeRefinement)

    def __post_init__(self) -> None:
        _check_common(
            self.threshold, self.negative_threshold, self.prefix_padding_ms, self.min_speech_duration_ms
        )
        if self.silence_duration_ms < 0:
            raise ValueError(f"silence_duration_ms must be non-negative, got {self.silence_duration_ms}")

    @property
    def neg_threshold(self) -> float:
        if self.negative_threshold is not None:
            return self.negative_threshold
        return max(self.threshold - 0.15, 0.01)


@dataclass(frozen=True)
class SemanticVadConfig:
    """``semantic_vad``: the turn ends when the turn detector agrees, or after a max silence.

    ``None`` fields take their value from ``eagerness`` (see :data:`EAGERNESS_DEFAULTS`).
    """

    eagerness: Eagerness = "auto"
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    negative_threshold: float | None = None
    min_speech_duration_ms: int = 80
    min_silence_ms: int = 250
    end_of_turn_threshold: float | None = None
    max_silence_ms: int | None = None
    retry_interval_ms: int | None = 1000
    refinement: EdgeRefinement | None = field(default_factory=EdgeRefinement)
    combined: bool = True
    """Decide by the evidence and its silence budget (else the flat threshold and timeout)."""

    def __post_init__(self) -> None:
        _check_common(
            self.threshold, self.negative_threshold, self.prefix_padding_ms, self.min_speech_duration_ms
        )
        if self.eagerness not in EAGERNESS_DEFAULTS:
            raise ValueError(f"eagerness must be one of {sorted(EAGERNESS_DEFAULTS)}, got {self.eagerness!r}")
        if self.min_silence_ms < 0:
            raise ValueError(f"min_silence_ms must be non-negative, got {self.min_silence_ms}")
        if self.retry_interval_ms is not None and self.retry_interval_ms <= 0:
            raise ValueError(f"retry_interval_ms must be positive or None, got {self.retry_interval_ms}")
        if self.end_of_turn_threshold is not None and not 0.0 <= self.end_of_turn_threshold <= 1.0:
            raise ValueError(f"end_of_turn_threshold must be within [0, 1], got {self.end_of_turn_threshold}")
        if self.max_silence_ms is not None and self.max_silence_ms < self.min_silence_ms:
            raise ValueError("max_silence_ms must be at least min_silence_ms")

    @property
    def neg_threshold(self) -> float:
        if self.negative_threshold is not None:
            return self.negative_threshold
        return max(self.threshold - 0.15, 0.01)

    @property
    def effective_max_silence_ms(self) -> int:
        if self.max_silence_ms is not None:
            return self.max_silence_ms
        return max(EAGERNESS_DEFAULTS[self.eagerness][0], self.min_silence_ms)

    @property
    def effective_end_of_turn_threshold(self) -> float:
        if self.end_of_turn_threshold is not None:
            return self.end_of_turn_threshold
        return EAGERNESS_DEFAULTS[self.eagerness][1]


SegmenterConfig = ServerVadConfig | SemanticVadConfig


@dataclass(frozen=True)
class SpeechStarted:
    """Speech confirmed at ``speech_start_ms``; ``audio_start_ms`` includes the prefix padding."""

    audio_start_ms: int
    speech_start_ms: float


@dataclass(frozen=True)
class SpeechStopped:
    """The turn ended: speech ended at ``audio_end_ms``; it was decided at ``detected_at_ms``."""

    audio_end_ms: int
    detected_at_ms: int
    reason: StopReason
    end_of_turn_probability: float | None = None


@dataclass(frozen=True)
class EndOfTurnRequested:
    """Ask the turn detector about the turn's audio ``[audio_start_ms, audio_end_ms)``."""

    request_id: int
    audio_start_ms: int
    audio_end_ms: int
    speech_end_ms: int | None = None
    """Where the speech before the pause ended (the prosody is measured up to here)."""


SegmenterEvent = SpeechStarted | SpeechStopped | EndOfTurnRequested


class SegmenterState(enum.Enum):
    IDLE = "idle"
    CANDIDATE = "candidate"
    SPEAKING = "speaking"
    SILENCE = "silence"


@dataclass(frozen=True)
class _Frame:
    start_ms: float
    end_ms: float
    level_db: float | None


@dataclass
class _Turn:
    """Book-keeping of the turn in progress (from a confirmed onset)."""

    onset_ms: float
    audio_start_ms: int
    speech_end_ms: float
    reported_end_ms: float = 0.0
    silence_start_ms: float | None = None
    resume_onset_ms: float | None = None
    pending_request: int | None = None
    retry_after_silence_ms: float = 0.0
    end_of_turn_probability: float | None = None
    decided: bool = False
    pause: PauseEvidence | None = None


class SpeechSegmenter:
    """The ``server_vad`` / ``semantic_vad`` state machine over per-frame probabilities."""

    def __init__(self, config: SegmenterConfig | None = None, *, buffer_start_ms: float = 0.0) -> None:
        self._config: SegmenterConfig = config or ServerVadConfig()
        self._buffer_start_ms = buffer_start_ms
        self._candidate_onset_ms: float | None = None
        self._turn: _Turn | None = None
        self._last_end_ms: float | None = None
        self._next_request_id = 1
        self._history: deque[_Frame] = deque(maxlen=_HISTORY_FRAMES)
        self._floor_levels: deque[float] = deque(maxlen=self._floor_frames())
        self._policy = _policy_of(self._config)

    # ------------------------------------------------------------------ inspection

    @property
    def config(self) -> SegmenterConfig:
        return self._config

    @property
    def state(self) -> SegmenterState:
        if self._turn is not None:
            if self._turn.silence_start_ms is not None:
                return SegmenterState.SILENCE
            return SegmenterState.SPEAKING
        return SegmenterState.CANDIDATE if self._candidate_onset_ms is not None else SegmenterState.IDLE

    @property
    def in_speech(self) -> bool:
        """True between ``SpeechStarted`` and ``SpeechStopped``."""
        return self._turn is not None

    @property
    def speech_end_ms(self) -> float | None:
        """Where the turn's speech was last heard (None outside a turn)."""
        return self._turn.speech_end_ms if self._turn is not None else None

    @property
    def buffer_start_ms(self) -> float:
        return self._buffer_start_ms

    @property
    def pending_request(self) -> int | None:
        """Id of the unanswered :class:`EndOfTurnRequested`, if any."""
        return self._turn.pending_request if self._turn is not None else None

    @property
    def noise_floor_db(self) -> float | None:
        """Median level of recent idle non-speech frames (None until one was seen)."""
        if not self._floor_levels:
            return None
        ordered = sorted(self._floor_levels)
        mid = len(ordered) // 2
        return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2

    # ------------------------------------------------------------------ control

    def update_config(self, config: SegmenterConfig) -> None:
        """Apply a ``session.update`` mid-stream; a turn in progress continues under it."""
        self._config = config
        self._policy = _policy_of(config)
        if self._floor_levels.maxlen != self._floor_frames():
            self._floor_levels = deque(self._floor_levels, maxlen=self._floor_frames())
        if self._turn is not None:
            self._turn.pending_request = None
            self._turn.decided = False
            self._turn.retry_after_silence_ms = 0.0
            self._turn.pause = None

    def set_buffer_start(self, ms: float) -> None:
        """The input buffer now starts at ``ms`` (manual commit or clear); prefixes clamp here."""
        self._buffer_start_ms = ms

    def reset(self, buffer_start_ms: float | None = None) -> None:
        """Forget any turn in progress without emitting events (e.g. ``input_audio_buffer.clear``).

        The noise floor is kept: it describes the caller's room, not the turn.
        """
        self._candidate_onset_ms = None
        self._turn = None
        self._history.clear()
        if buffer_start_ms is not None:
            self._buffer_start_ms = buffer_start_ms

    # ------------------------------------------------------------------ input

    def process(
        self, probability: float, start_ms: float, end_ms: float, level_db: float | None = None
    ) -> list[SegmenterEvent]:
        """Consume one frame; return the events it causes, in order.

        ``level_db`` is the frame's (pre-emphasised) level on any fixed dB scale; it only
        refines reported edges.
        """
        if not end_ms > start_ms:
            raise ValueError(f"frame must have positive duration, got [{start_ms}, {end_ms})")
        if self._last_end_ms is not None and start_ms < self._last_end_ms - _EPS:
            raise ValueError(f"frames must not go back in time: {start_ms} < {self._last_end_ms}")
        if math.isnan(probability) or (level_db is not None and math.isnan(level_db)):
            raise ValueError("probability and level must not be NaN")
        self._last_end_ms = end_ms
        p = min(max(probability, 0.0), 1.0)
        cfg = self._config
        events: list[SegmenterEvent] = []
        frame = _Frame(start_ms, end_ms, level_db)

        turn = self._turn
        if turn is None:
            self._idle_frame(p, frame, events)
            self._history.append(frame)
            return events
        self._history.append(frame)

        if turn.silence_start_ms is None:
            if p >= cfg.neg_threshold:
                turn.speech_end_ms = end_ms
            else:
                self._enter_silence(turn)
        elif turn.resume_onset_ms is not None:
            if p >= cfg.neg_threshold:
                if end_ms - turn.resume_onset_ms >= cfg.min_speech_duration_ms - _EPS:
                    self._resume(turn, end_ms)
            else:
                turn.resume_onset_ms = None
        elif p >= cfg.threshold:
            turn.resume_onset_ms = start_ms
            if end_ms - start_ms >= cfg.min_speech_duration_ms - _EPS:
                self._resume(turn, end_ms)

        if turn.silence_start_ms is not None and turn.resume_onset_ms is None:
            self._silence_frame(turn, end_ms, events)
        return events

    def end_of_turn_result(
        self,
        request_id: int,
        probability: float | None,
        *,
        text: float | None = None,
        prosody: float | None = None,
        text_pending: bool | None = None,
    ) -> list[SegmenterEvent]:
        """Feed back the turn detector's answer to :class:`EndOfTurnRequested` ``request_id``;
        for the combined policy also the pause's text completeness, prosody and whether its
        transcript is still being made, in one answer or several (``probability=None``)."""
        turn = self._turn
        if turn is not None and turn.pause is not None:
            return self._evidence(turn, turn.pause, request_id, probability, text, prosody, text_pending)
        if turn is None or turn.pending_request != request_id or probability is None:
            return []
        turn.pending_request = None
        turn.end_of_turn_probability = probability
        cfg = self._config
        if not isinstance(cfg, SemanticVadConfig) or turn.silence_start_ms is None:
            return []
        if probability >= cfg.effective_end_of_turn_threshold:
            turn.decided = True
            if turn.resume_onset_ms is None and self._last_end_ms is not None:
                return [self._stop(turn, self._last_end_ms, "end_of_turn")]
        else:
            retry = cfg.retry_interval_ms
            silence = (self._last_end_ms or 0.0) - turn.silence_start_ms
            turn.retry_after_silence_ms = math.inf if retry is None else silence + retry
        return []

    # ------------------------------------------------------------------ internals

    def _floor_frames(self) -> int:
        refinement = self._config.refinement
        return refinement.floor_frames if refinement is not None else 1

    def _evidence(
        self,
        turn: _Turn,
        pause: PauseEvidence,
        request_id: int,
        probability: float | None,
        text: float | None,
        prosody: float | None,
        text_pending: bool | None,
    ) -> list[SegmenterEvent]:
        """Merge an answer into the pause's evidence; end the turn if its silence suffices."""
        if turn.silence_start_ms is None or not pause.belongs(request_id):
            return []
        now = self._last_end_ms or 0.0
        if probability is not None:
            turn.end_of_turn_probability = probability
            if turn.pending_request == request_id:
                turn.pending_request = None
                retry = (
                    self._config.retry_interval_ms if isinstance(self._config, SemanticVadConfig) else None
                )
                turn.retry_after_silence_ms = math.inf if retry is None else self._silence(turn, now) + retry
        pause.merge(smart_turn=probability, text=text, prosody=prosody, text_pending=text_pending)
        if turn.resume_onset_ms is None and pause.ends(self._silence(turn, now)):
            return [self._stop(turn, now, "end_of_turn")]
        return []

    @staticmethod
    def _silence(turn: _Turn, end_ms: float) -> float:
        """Silence since the (refined) end of speech, not since the VAD's late release."""
        assert turn.silence_start_ms is not None
        return end_ms - min(turn.silence_start_ms, turn.reported_end_ms)

    def _idle_frame(self, p: float, frame: _Frame, events: list[SegmenterEvent]) -> None:
        cfg = self._config
        if self._candidate_onset_ms is None:
            if p < cfg.threshold:
                if p < cfg.neg_threshold and frame.level_db is not None:
                    self._floor_levels.append(frame.level_db)
                return
            self._candidate_onset_ms = frame.start_ms
        elif p < cfg.neg_threshold:
            self._candidate_onset_ms = None
            if frame.level_db is not None:
                self._floor_levels.append(frame.level_db)
            return
        onset = self._candidate_onset_ms
        if frame.end_ms - onset < cfg.min_speech_duration_ms - _EPS:
            return
        self._candidate_onset_ms = None
        onset = self._refined_onset(onset)
        audio_start_ms = math.floor(max(onset - cfg.prefix_padding_ms, self._buffer_start_ms) + _EPS)
        self._turn = _Turn(onset_ms=onset, audio_start_ms=audio_start_ms, speech_end_ms=frame.end_ms)
        events.append(SpeechStarted(audio_start_ms=audio_start_ms, speech_start_ms=onset))

    def _refined_onset(self, onset: float) -> float:
        """Move the onset back over loud frames just before it (weak fricatives)."""
        refinement = self._config.refinement
        floor = self.noise_floor_db
        if refinement is None or floor is None:
            return onset
        limit = max(onset - refinement.onset_lookback_ms, self._buffer_start_ms)
        refined = onset
        for frame in reversed(self._history):
            if frame.start_ms >= onset - _EPS:
                continue
            if (
                frame.start_ms < limit - _EPS
                or abs(frame.end_ms - refined) > _EPS
                or frame.level_db is None
                or frame.level_db < floor + refinement.margin_db
            ):
                break
            refined = frame.start_ms
        return refined

    def _refined_end(self, turn: _Turn) -> float:
        """The VAD's end of speech, less its release lag."""
        refinement = self._config.refinement
        if refinement is None:
            return turn.speech_end_ms
        return max(turn.speech_end_ms - refinement.end_compensation_ms, turn.onset_ms)

    def _enter_silence(self, turn: _Turn) -> None:
        # A gap in the frames (missing audio) counts as silence, so silence starts where
        # speech was last seen rather than at this frame.
        turn.silence_start_ms = turn.speech_end_ms
        turn.reported_end_ms = self._refined_end(turn)
        turn.resume_onset_ms = None
        turn.pending_request = None
        turn.decided = False
        turn.end_of_turn_probability = None
        turn.retry_after_silence_ms = 0.0
        if self._policy is not None:
            turn.pause = turn.pause or PauseEvidence(self._policy)
            turn.pause.start(self._next_request_id)

    def _resume(self, turn: _Turn, end_ms: float) -> None:
        turn.silence_start_ms = None
        turn.resume_onset_ms = None
        turn.pending_request = None
        turn.decided = False
        turn.speech_end_ms = end_ms

    def _silence_frame(self, turn: _Turn, end_ms: float, events: list[SegmenterEvent]) -> None:
        assert turn.silence_start_ms is not None
        silence = self._silence(turn, end_ms)
        cfg = self._config
        if isinstance(cfg, ServerVadConfig):
            if silence >= cfg.silence_duration_ms - _EPS:
                events.append(self._stop(turn, end_ms, "silence"))
            return
        if turn.pause is not None:
            if turn.pause.ends(silence):
                events.append(self._stop(turn, end_ms, "end_of_turn"))
                return
        elif turn.decided:
            events.append(self._stop(turn, end_ms, "end_of_turn"))
            return
        elif silence >= cfg.effective_max_silence_ms - _EPS:
            events.append(self._stop(turn, end_ms, "max_silence"))
            return
        ask_at = max(cfg.min_silence_ms, turn.retry_after_silence_ms)
        if turn.pending_request is None and silence >= ask_at - _EPS:
            request_id = self._next_request_id
            self._next_request_id += 1
            turn.pending_request = request_id
            events.append(
                EndOfTurnRequested(
                    request_id=request_id,
                    audio_start_ms=turn.audio_start_ms,
                    audio_end_ms=math.ceil(end_ms - _EPS),
                    speech_end_ms=math.ceil(turn.reported_end_ms - _EPS),
                )
            )

    def _stop(self, turn: _Turn, at_ms: float, reason: StopReason) -> SpeechStopped:
        event = SpeechStopped(
            audio_end_ms=math.ceil(turn.reported_end_ms - _EPS),
            detected_at_ms=math.ceil(at_ms - _EPS),
            reason=reason,
            end_of_turn_probability=(
                turn.pause.probability
                if turn.pause is not None
                else turn.end_of_turn_probability
                if reason != "silence"
                else None
            ),
        )
        self._turn = None
        self._candidate_onset_ms = None
        self._buffer_start_ms = at_ms
        return event


def _policy_of(config: SegmenterConfig) -> EndOfTurnPolicy | None:
    if isinstance(config, SemanticVadConfig) and config.combined:
        return EndOfTurnPolicy(config.eagerness)
    return None


def config_for(detection: ServerVad | SemanticVad) -> SegmenterConfig:
    """The segmenter settings for the session's ``audio.input.turn_detection``."""
    if isinstance(detection, ServerVad):
        return ServerVadConfig(
            threshold=detection.threshold,
            prefix_padding_ms=detection.prefix_padding_ms,
            silence_duration_ms=detection.silence_duration_ms,
        )
    return SemanticVadConfig(eagerness=detection.eagerness)
