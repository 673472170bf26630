"""Whisper speech recognition on CTranslate2 (faster-whisper's runtime), tuned for short turns.

Whisper is trained on 30 s windows and faster-whisper pads every call to one (its
``chunk_length`` option changes the feature extractor but the features are still padded to
3000 frames), so a 2 s turn costs as much as 30 s of audio. CTranslate2's encoder accepts
shorter mel inputs, so this engine encodes only ``max(min_window, audio + margin)`` seconds.
Decoded naively, a short window makes Whisper loop ("ten of clubs ten of clubs ...", 111 %
WER with the window cut at the end of the audio), because it never saw speech followed by the
end of its window. Three guards keep it correct:

* timestamp mode: the model marks where each segment starts, and segments that start past
  the end of the real audio (text invented over padding) are dropped;
* a minimum window of several seconds (5 s for base, 10 s for tiny.en, which still looped
  in 8 of 37 turns at 5 s), so short turns are followed by seconds of silence;
* a fallback: a decode that hits its token budget or looks like a loop (see
  ``_looks_like_a_loop``) is redone on the full 30 s window.

Measured on one thread (``python bench/asr_latency.py --sweep``; shared real speech plus one
25 s turn; and 37 turns adding 24 synthetic ones): base per-call p50 fell from 1.17 s (30 s
window) to 0.30 s (10 s) and 0.17 s (5 s); WER 2.4 % -> 4.2 % on the real speech (two words)
and 3.8 % -> 4.0-4.2 % on the 37 turns. tiny.en: 0.51 s -> 0.17 s at the same 4.8 %. Greedy
decoding is the default: beam 5 cost ~15 % more and helped on the real speech (2.4 % at 10 s)
but not on the 37 turns (4.0 % at 10 s, 4.6 % at 5 s). Audio longer than one window goes
through faster-whisper's own long-form loop.
"""

from __future__ import annotations

import re
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from openrealtime.engines.asr.language import (
    LanguageDetection,
    LanguagePolicy,
    keep_script,
    speech_seconds,
    wrong_script,
)
from openrealtime.engines.base import CancelToken, FloatAudio, Transcript

__all__ = [
    "DEFAULT_MIN_WINDOW_SECONDS",
    "DEFAULT_WINDOW_MARGIN_SECONDS",
    "FULL_WINDOW_SECONDS",
    "MIN_WINDOW_SECONDS_BY_MODEL",
    "Segment",
    "SegmentedTranscript",
    "TranscriptionCancelled",
    "WhisperTranscriber",
    "resolve_model_dir",
]

SAMPLE_RATE = 16_000
FULL_WINDOW_SECONDS = 30.0
DEFAULT_MIN_WINDOW_SECONDS = 10.0
MIN_WINDOW_SECONDS_BY_MODEL = {"whisper-base": 5.0, "whisper-tiny.en": 10.0}
"""Measured per embedded model: base kept its WER with 5 s windows (no loop in 49 turns) and
is ~45 % faster than at 10 s on short turns; tiny.en looped in 8 of 37 turns at 5 s. Models
from a user's directory get the safer 10 s."""
DEFAULT_WINDOW_MARGIN_SECONDS = 2.0
_HOP = 160
_TIME_PRECISION = 0.02
_MAX_LENGTH = 448
_TOKENS_PER_SECOND_CAP = 10.0
_COMPRESSION_RATIO_THRESHOLD = 2.4
_NO_SPEECH_THRESHOLD = 0.6
_LOG_PROB_THRESHOLD = -1.0
_PHANTOM_SLACK_SECONDS = 0.2
_MAX_WORDS_PER_SECOND = 6.0


class TranscriptionCancelled(Exception):
    """Raised when the ``CancelToken`` was set; the partial work is discarded."""


@dataclass(frozen=True)
class Segment:
    """A stretch of text with its start and end, in seconds from the start of the audio."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class SegmentedTranscript:
    """A transcript plus its timed segments (used to trim audio that is already final)."""

    transcript: Transcript
    segments: tuple[Segment, ...]
    used_fallback: bool = False
    detection: LanguageDetection | None = None
    """The language probabilities, when a :class:`LanguagePolicy` asked for detection."""


def resolve_model_dir(model: str | Path) -> Path:
    """A CTranslate2 Whisper directory: an existing path, or an embedded model's name.

    Embedded names (``whisper-base``, ``whisper-tiny.en``) go through
    :func:`openrealtime.engines.assets.resolve`, which verifies the weights and never
    downloads anything.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise FileNotFoundError(f"{path} has no model.bin: not a CTranslate2 Whisper model")
        return path
    if isinstance(model, Path) or "/" in str(model):
        raise FileNotFoundError(f"Whisper model directory {path} does not exist")
    from openrealtime.engines import assets

    return assets.resolve(str(model))


class WhisperTranscriber:
    """``Transcriber`` for Whisper models in CTranslate2 format, int8 on CPU by default.

    ``min_window_seconds`` (default: per model, see ``MIN_WINDOW_SECONDS_BY_MODEL``) and
    ``window_margin_seconds`` set the encoder window for audio shorter than 30 s;
    ``min_window_seconds=30`` restores Whisper's standard full window.
    ``beam_size=1`` (greedy) is the default: on the test speech beam search did not lower WER
    but cost more time. Safe to call from several threads; ``num_workers`` > 1 lets calls run
    in parallel (each worker holds its own copy of the model's state, with more memory).
    """

    sample_rate: int = SAMPLE_RATE
    supports_prefix: bool = True
    supports_language_policy: bool = True
    supports_fallback_choice: bool = True
    """A call may say ``fallback=False``: keep a short window's decode even when it ran into
    its token budget (a few words whose first ones are all that matter; the full window costs
    about ten times as much)."""

    def __init__(
        self,
        model: str | Path = "whisper-base",
        *,
        cpu_threads: int = 1,
        num_workers: int = 1,
        compute_type: str = "int8",
        device: str = "cpu",
        beam_size: int = 1,
        language: str | None = None,
        min_window_seconds: float | None = None,
        window_margin_seconds: float = DEFAULT_WINDOW_MARGIN_SECONDS,
        timestamps: bool = True,
        fallback: bool = True,
        name: str | None = None,
    ) -> None:
        import ctranslate2
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        if min_window_seconds is None:
            min_window_seconds = MIN_WINDOW_SECONDS_BY_MODEL.get(str(model), DEFAULT_MIN_WINDOW_SECONDS)
        if not 0 < min_window_seconds <= FULL_WINDOW_SECONDS:
            raise ValueError("min_window_seconds must be in (0, 30]")
        if window_margin_seconds < 0:
            raise ValueError("window_margin_seconds must be >= 0")
        self.model_dir = resolve_model_dir(model)
        self.name = name or (str(model) if not Path(str(model)).is_dir() else self.model_dir.name)
        self._whisper = WhisperModel(
            str(self.model_dir),
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            num_workers=num_workers,
            local_files_only=True,
        )
        self._ct2: Any = self._whisper.model
        self._storage = ctranslate2.StorageView
        self._features = self._whisper.feature_extractor
        self.multilingual: bool = bool(self._ct2.is_multilingual)
        self.beam_size = beam_size
        self.language = language
        self.min_window_seconds = min_window_seconds
        self.window_margin_seconds = window_margin_seconds
        self.timestamps = timestamps
        self.fallback = fallback
        self._tokenizer_cls = Tokenizer
        self._tokenizers: dict[str | None, Any] = {}
        self._lock = threading.Lock()
        base = self._tokenizer(None if not self.multilingual else "en")
        self._suppress: list[int] = list(get_suppressed_tokens(base, [-1]))
        self.fallbacks = 0
        """How many short-window decodes were redone on the full window (for benchmarks)."""
        self.script_repairs = 0
        """How many decodes came out in a script foreign to their language (for benchmarks)."""
        self.languages: frozenset[str] = frozenset(
            self._whisper.supported_languages if self.multilingual else ["en"]
        )

    # ------------------------------------------------------------------ public API

    def transcribe(
        self,
        audio: FloatAudio,
        *,
        language: str | None = None,
        prompt: str | None = None,
        cancel: CancelToken | None = None,
        prefix: str | None = None,
        policy: LanguagePolicy | None = None,
        fallback: bool | None = None,
    ) -> Transcript:
        """Text of ``audio`` (16 kHz mono float32).

        ``prompt`` is previous context (Whisper's ``initial_prompt``); ``prefix`` forces the
        transcript to start with that text, which lets a final pass continue words already
        shown to the user. ``policy`` (a session's language rule) replaces ``language``: the
        language is chosen from a detection on this audio's encoder output. Raises
        :class:`TranscriptionCancelled` if ``cancel`` is set (checked between the encoder and
        decoder; a running CTranslate2 call can't stop).
        """
        return self.transcribe_segments(
            audio,
            language=language,
            prompt=prompt,
            prefix=prefix,
            cancel=cancel,
            policy=policy,
            fallback=fallback,
        ).transcript

    def transcribe_segments(
        self,
        audio: FloatAudio,
        *,
        language: str | None = None,
        prompt: str | None = None,
        prefix: str | None = None,
        cancel: CancelToken | None = None,
        policy: LanguagePolicy | None = None,
        fallback: bool | None = None,
    ) -> SegmentedTranscript:
        """Like :meth:`transcribe`, keeping Whisper's segment timestamps (``fallback``: redo
        a degenerate short-window decode on the full window; the instance's setting if None)."""
        samples = np.asarray(audio, dtype=np.float32).reshape(-1)
        duration = samples.size / SAMPLE_RATE
        if policy is not None:
            language = policy.without_detection
            if not policy.needs_detection:
                policy = None
        language = language or self.language
        if language is not None and language not in self.languages:
            language = None  # a code Whisper does not know: detect instead of failing
        if not self.multilingual:
            language, policy = "en", None
        if samples.size < _HOP * 2:
            return SegmentedTranscript(Transcript("", language, duration, 0), ())
        _check(cancel)
        if duration + self.window_margin_seconds > FULL_WINDOW_SECONDS:
            return self._long_form(samples, language, prompt, prefix, cancel, policy)
        window = min(FULL_WINDOW_SECONDS, max(self.min_window_seconds, duration + self.window_margin_seconds))
        result, degenerate = self._decode_window(samples, window, language, prompt, prefix, cancel, policy)
        chosen = result.transcript.language
        foreign = wrong_script(result.transcript.text, chosen)
        allowed = self.fallback if fallback is None else fallback
        if (degenerate or foreign) and allowed and window < FULL_WINDOW_SECONDS:
            with self._lock:
                self.fallbacks += 1
            again, _ = self._decode_window(samples, FULL_WINDOW_SECONDS, chosen, prompt, prefix, cancel, None)
            result = SegmentedTranscript(again.transcript, again.segments, True, result.detection)
        return self._in_script(result)

    def _in_script(self, result: SegmentedTranscript) -> SegmentedTranscript:
        """Never a transcript in a script foreign to its language (see ``keep_script``)."""
        transcript = result.transcript
        if not wrong_script(transcript.text, transcript.language):
            return result
        with self._lock:
            self.script_repairs += 1
        text = keep_script(transcript.text, transcript.language)
        segments = tuple(
            Segment(s.start, s.end, kept)
            for s in result.segments
            if (kept := keep_script(s.text, transcript.language))
        )
        tokens = len(self._tokenizer(transcript.language).encode(" " + text)) if text else 0
        fixed = Transcript(text, transcript.language, transcript.input_audio_seconds, tokens)
        return SegmentedTranscript(fixed, segments, result.used_fallback, result.detection)

    def count_tokens(self, text: str) -> int:
        """Whisper tokens in ``text`` (the ``output_tokens`` of usage)."""
        return len(self._tokenizer((self.language or "en") if self.multilingual else None).encode(text))

    # ------------------------------------------------------------------ internals

    def _tokenizer(self, language: str | None) -> Any:
        key = language if self.multilingual else None
        tokenizer = self._tokenizers.get(key)
        if tokenizer is None:
            tokenizer = self._tokenizer_cls(
                self._whisper.hf_tokenizer, self.multilingual, task="transcribe", language=key
            )
            self._tokenizers[key] = tokenizer
        return tokenizer

    def _decode_window(
        self,
        samples: FloatAudio,
        window_seconds: float,
        language: str | None,
        prompt: str | None,
        prefix: str | None,
        cancel: CancelToken | None,
        policy: LanguagePolicy | None = None,
    ) -> tuple[SegmentedTranscript, bool]:
        """One encoder window; the flag is set when the output looks like a decoding loop."""
        duration = samples.size / SAMPLE_RATE
        frames = round(window_seconds * SAMPLE_RATE / _HOP)
        padded = np.pad(samples, (0, max(0, frames * _HOP - samples.size)))
        mel = self._features(padded, padding=0)[:, :frames]
        encoded = self._ct2.encode(self._storage.from_array(np.ascontiguousarray(mel[None])))
        _check(cancel)
        detection: LanguageDetection | None = None
        if policy is not None:
            detection = LanguageDetection.of(self._ct2.detect_language(encoded)[0], speech_seconds(samples))
            language = policy.choose(detection).language
        elif language is None:
            language = self._ct2.detect_language(encoded)[0][0][0][2:-2]
        tokenizer = self._tokenizer(language)
        tokens = self._prompt_tokens(tokenizer, prompt, prefix)
        new_tokens = int(duration * _TOKENS_PER_SECOND_CAP) + 20
        budget = min(_MAX_LENGTH, len(tokens) + new_tokens)
        result = self._ct2.generate(
            encoded,
            [tokens],
            beam_size=self.beam_size,
            max_length=budget,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
            max_initial_timestamp_index=50,
        )[0]
        _check(cancel)
        ids: list[int] = list(result.sequences_ids[0])
        text_ids, segments = self._split_segments(tokenizer, ids, duration)
        text = tokenizer.decode(text_ids).strip()
        generated = len(ids) - (len(tokens) - tokens.index(tokenizer.sot) - len(tokenizer.sot_sequence))
        degenerate = len(tokens) + generated >= budget or _looks_like_a_loop(text, duration)
        score = float(result.scores[0]) if result.scores else 0.0
        if not prefix and result.no_speech_prob > _NO_SPEECH_THRESHOLD and score < _LOG_PROB_THRESHOLD:
            text, text_ids, segments = "", [], []
        transcript = Transcript(text, language, duration, len(text_ids))
        return SegmentedTranscript(transcript, tuple(segments), detection=detection), degenerate

    def _prompt_tokens(self, tokenizer: Any, prompt: str | None, prefix: str | None) -> list[int]:
        tokens: list[int] = []
        if prompt and prompt.strip():
            previous = tokenizer.encode(" " + prompt.strip())
            tokens = [tokenizer.sot_prev, *previous[-(_MAX_LENGTH // 2 - 1) :]]
        tokens.extend(tokenizer.sot_sequence)
        if not self.timestamps:
            tokens.append(tokenizer.no_timestamps)
        if prefix and prefix.strip():
            if self.timestamps:
                tokens.append(tokenizer.timestamp_begin)
            tokens.extend(tokenizer.encode(" " + prefix.strip())[: _MAX_LENGTH // 2 - 1])
        return tokens

    def _split_segments(
        self, tokenizer: Any, ids: Sequence[int], duration: float
    ) -> tuple[list[int], list[Segment]]:
        """Text tokens and segments, without segments that begin after the audio ends."""
        begin = tokenizer.timestamp_begin
        eot = tokenizer.eot
        text_ids: list[int] = []
        segments: list[Segment] = []
        start: float | None = None
        current: list[int] = []
        last_time = 0.0

        def close(end: float) -> None:
            seg_start = start if start is not None else last_time
            if not current or seg_start >= duration - _PHANTOM_SLACK_SECONDS:
                return
            seg_end = min(end, duration)
            text = tokenizer.decode(current).strip()
            if segments and _too_many_words(text, seg_end - seg_start):
                return  # a repeat squeezed into the audio's last moments, not speech
            text_ids.extend(current)
            segments.append(Segment(seg_start, seg_end, text))

        for token in ids:
            if token >= begin:
                time = (token - begin) * _TIME_PRECISION
                if start is None:
                    start = time
                else:
                    close(time)
                    current = []
                    start = None
                last_time = time
            elif token < eot:
                current.append(token)
        if current:
            close(duration)
        return text_ids, segments

    def _long_form(
        self,
        samples: FloatAudio,
        language: str | None,
        prompt: str | None,
        prefix: str | None,
        cancel: CancelToken | None,
        policy: LanguagePolicy | None = None,
    ) -> SegmentedTranscript:
        """Audio longer than one window: faster-whisper's sequential 30 s windows."""
        detection: LanguageDetection | None = None
        if policy is not None:
            _, _, probabilities = self._whisper.detect_language(samples)
            detection = LanguageDetection.of(probabilities, speech_seconds(samples))
            language = policy.choose(detection).language
        pieces, info = self._whisper.transcribe(
            samples,
            language=language,
            beam_size=self.beam_size,
            initial_prompt=prompt or None,
            prefix=prefix or None,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=False,
        )
        segments: list[Segment] = []
        for piece in pieces:
            _check(cancel)
            if piece.text.strip():
                segments.append(Segment(float(piece.start), float(piece.end), piece.text.strip()))
        text = " ".join(segment.text for segment in segments)
        tokenizer = self._tokenizer(info.language)
        duration = samples.size / SAMPLE_RATE
        transcript = Transcript(
            text, info.language, duration, len(tokenizer.encode(" " + text)) if text else 0
        )
        return self._in_script(SegmentedTranscript(transcript, tuple(segments), detection=detection))


def _check(cancel: CancelToken | None) -> None:
    if cancel is not None and cancel.cancelled:
        raise TranscriptionCancelled


def _compression_ratio(text: str) -> float:
    """Whisper's loop detector: repetitive text compresses unusually well."""
    if not text:
        return 0.0
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data))


def _too_many_words(text: str, duration: float) -> bool:
    """More words than anyone speaks in the time (6 words/s, with 3 words of slack for
    Whisper's coarse timestamps). Whisper base sometimes ends a short clip by repeating its
    sentence in the last 0.2 s ("How can I help you today? Thank you for calling. How can")."""
    return len(re.findall(r"[a-z0-9']+", text.lower())) > _MAX_WORDS_PER_SECOND * duration + 3


def _looks_like_a_loop(text: str, duration: float) -> bool:
    """Signs of a short-window decoding loop; a false alarm only costs a full-window decode.

    Loops on short turns are too short for the compression test alone, so also flag more
    words than anyone speaks in the time (6 words/s) and immediate repetition: a word four
    times, a two- or three-word phrase three times, a longer phrase twice ("book a table for
    four. book a table for four.").
    """
    if _compression_ratio(text) > _COMPRESSION_RATIO_THRESHOLD:
        return True
    words = re.findall(r"[a-z0-9']+", text.lower())
    if len(words) > _MAX_WORDS_PER_SECOND * duration + 3:
        return True
    for size in range(1, min(12, len(words) // 2) + 1):
        times = 4 if size == 1 else 3 if size < 4 else 2
        for start in range(len(words) - times * size + 1):
            gram = words[start : start + size]
            if all(words[start + k * size : start + (k + 1) * size] == gram for k in range(1, times)):
                return True
    return False
