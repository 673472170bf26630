"""Where speech really starts and ends: the VAD's edges, refined.

Silero decides well *whether* someone speaks, but its edges are late (measured on the
shared real-speech clips): it misses weak word-initial fricatives ("four", "five", "seven":
140 to 160 ms late in room noise), and its probability stays high for 50 to 170 ms (mean about
100 ms) after speech ends. :class:`EdgeRefinement` corrects the reported edges:

* the onset moves back over contiguous frames just before it whose level is at least
  ``margin_db`` above the noise floor (at most ``onset_lookback_ms``). Levels come with the
  frames (:attr:`~openrealtime.audio.resample.AudioFrame.level_db`, pre-emphasised so that
  fricatives count and rumble does not); the floor is the median level of the last
  ``floor_frames`` idle non-speech frames. Without levels or a floor, the VAD's onset stands.
* the end of speech is reported ``end_compensation_ms`` before the VAD's end (never before
  the onset): the model's release lag is a property of the model, so a constant corrects it
  more robustly than the signal level, which in real rooms often does not fall at the end of
  a word.

Refinement only changes reported times, never when events fire; ``refinement=None`` reports
the VAD's raw edges.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EdgeRefinement"]


@dataclass(frozen=True)
class EdgeRefinement:
    """How reported edges are refined from frame levels (see the module docs)."""

    margin_db: float = 12.0
    onset_lookback_ms: float = 160.0
    floor_frames: int = 31
    end_compensation_ms: float = 96.0

    def __post_init__(self) -> None:
        if self.margin_db <= 0 or self.onset_lookback_ms < 0 or self.end_compensation_ms < 0:
            raise ValueError("margin_db must be positive, lookback and compensation non-negative")
        if self.floor_frames < 1:
            raise ValueError("floor_frames must be at least 1")
