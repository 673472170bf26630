"""Under ``semantic_vad``, speech heard while the answer plays is held until it is known to be
a bid for the turn.

Callers say "mhm", "okay", "right", cough or laugh while the assistant speaks; cancelling the
answer for that is one of the most common complaints about voice agents. ``server_vad`` keeps
OpenAI's semantics (any speech interrupts). Under ``semantic_vad`` with ``interrupt_response``,
speech the segmenter confirms while the answer can be heard (the runtime marks such frames,
``VadFrame.assistant_audible``) or is being generated is *held*: no ``speech_started``, no barge-in, but its
transcription starts at once. Each frame, and each transcript of it, asks
:func:`~openrealtime.engines.turn.backchannel.classify`:

* a word that is not a backchannel word, more than three words, or a second of speech: an
  **interruption**: ``speech_started`` is emitted with the onset it had, the answer stops,
  and the turn goes on as any other;
* short speech that ended with only backchannel words, or no words (a cough), or whose
  transcript did not come within 1.5 s: a **backchannel**: the segmenter forgets it, its
  transcription is dropped, the answer plays on. A turn end the segmenter finds while speech
  is still held and undecided also counts as a backchannel.

Pure and deterministic: the session's input clock is the only time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engines.turn.backchannel import BackchannelConfig, Verdict, classify
from . import turns

__all__ = ["HeldSpeech", "Verdict", "decide"]


@dataclass
class HeldSpeech:
    """Speech held back from ``speech_started`` while the answer plays."""

    item_id: str
    started: turns.SpeechStarted
    transcript: str | None = None
    config: BackchannelConfig = field(default_factory=BackchannelConfig)


def decide(
    held: HeldSpeech, segmenter: turns.SpeechSegmenter, now_ms: float, *, ended: bool = False
) -> Verdict:
    """The verdict on held speech at input time ``now_ms`` (``ended``: the segmenter ended it)."""
    speech_end = segmenter.speech_end_ms
    in_silence = ended or segmenter.state is turns.SegmenterState.SILENCE
    end = speech_end if in_silence and speech_end is not None else now_ms
    return classify(
        end - held.started.speech_start_ms,
        speech_ended=in_silence,
        transcript=held.transcript,
        waited_ms=now_ms - end if in_silence else 0.0,
        config=held.config,
    )
