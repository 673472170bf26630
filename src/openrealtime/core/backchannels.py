"""Under ``semantic_vad``, speech heard while the answer plays is held until it is known to be
a bid for the turn.

Callers say "mhm", "okay", "right", cough or laugh while the assistant speaks; cancelling the
answer for that is one of the most common complaints about voice agents. ``server_vad`` keeps
OpenAI's semantics (any speech interrupts). Under ``semantic_vad`` with ``interrupt_response``,
speech the segmenter confirms while the answer can be heard (the runtime marks such frames,
``VadFrame.assistant_audible``) or is being generated is *held*: no ``speech_started``, no
barge-in (the runtime pauses an answer it plays itself, and starts the speech's streaming
transcription only if it becomes a turn). Every frame asks
:func:`~openrealtime.engines.turn.backchannel.classify`:

* a second of speech is an **interruption**: ``speech_started`` is emitted with the onset it
  had, the answer stops, and the turn goes on as any other;
* when the speech ends, one transcription of exactly that speech is asked for
  (``TranscribeHeld``: onset to end, padded by :data:`SPAN_PAD_MS`); its words decide:
  only backchannel words or none (a cough) make a **backchannel** (the segmenter forgets
  it, its transcription is dropped, the answer plays on), anything else an interruption.
  Until that transcript comes the answer plays on; a turn end the segmenter finds meanwhile
  waits for it too, so the verdict is the same however long the pass takes. Speech that
  resumes asks again for the longer span.

Pure and deterministic: the session's input clock is the only time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engines.turn.backchannel import BackchannelConfig, Verdict, classify
from . import turns

__all__ = ["HeldSpeech", "Verdict", "decide"]


SPAN_PAD_MS = 100.0
"""The held speech's transcription starts this much before the VAD's onset and ends this much
after its end (the VAD's edges can clip a soft first or last sound)."""


@dataclass
class HeldSpeech:
    """Speech held back from ``speech_started`` while the answer plays."""

    item_id: str
    started: turns.SpeechStarted
    transcript: str | None = None
    """The transcript of the speech up to :attr:`asked_end_ms`."""
    asked_end_ms: float | None = None
    """The end of the span whose transcript was asked for (None: not yet)."""
    stopped: turns.SpeechStopped | None = None
    """A turn end the segmenter found before the verdict: carried out once it is given."""
    config: BackchannelConfig = field(default_factory=BackchannelConfig)

    def span_to_transcribe(self, segmenter: turns.SpeechSegmenter) -> tuple[float, float] | None:
        """The span to ask a transcript of, when the speech has ended at a new point."""
        if self.stopped is not None:
            end: float | None = float(self.stopped.audio_end_ms)
        elif segmenter.state is turns.SegmenterState.SILENCE:
            end = segmenter.speech_end_ms
        else:
            return None
        if end is None:
            return None
        if self.asked_end_ms is not None and self.asked_end_ms >= end + SPAN_PAD_MS:
            return None
        self.asked_end_ms = end + SPAN_PAD_MS
        self.transcript = None
        return max(self.started.speech_start_ms - SPAN_PAD_MS, 0.0), self.asked_end_ms

    def heard(self, text: str, end_ms: float) -> None:
        """A transcript came: it counts when it covers the span last asked for."""
        if self.asked_end_ms is not None and abs(end_ms - self.asked_end_ms) < 1e-6:
            self.transcript = text


def decide(held: HeldSpeech, segmenter: turns.SpeechSegmenter, now_ms: float) -> Verdict:
    """The verdict on held speech at input time ``now_ms``."""
    if held.stopped is not None:  # the segmenter ended the turn: the speech ended there
        in_silence, end = True, float(held.stopped.audio_end_ms)
    else:
        speech_end = segmenter.speech_end_ms
        in_silence = segmenter.state is turns.SegmenterState.SILENCE and speech_end is not None
        end = speech_end if in_silence and speech_end is not None else now_ms
    return classify(
        end - held.started.speech_start_ms,
        speech_ended=in_silence,
        transcript=held.transcript if in_silence else None,
        config=held.config,
    )
