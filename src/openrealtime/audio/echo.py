"""Remove the assistant's own voice from the caller's input, and tell a new talker from its echo.

A client without echo cancellation (a speakerphone, an app on laptop speakers) sends back the
answer it is playing, some 50 to 250 ms later and a few dB quieter. The server knows exactly
what it sent, so it can cancel that echo before the VAD and the transcriber hear it:

* **Alignment.** The runtime places every output chunk on the session's input clock at the
  time it expects the client to play it (:meth:`EchoCanceller.play`). The true echo path adds
  network, jitter-buffer and loudspeaker delay, so :class:`EchoDelayEstimator` finds the lag
  between what was played and what came back by band-limited GCC-PHAT cross-correlation over
  the last second (lags ``0 .. max_delay_ms``), and keeps a lag only once two estimates agree.
* **Cancellation.** The far end, shifted by that lag, and the near end go through libspeexdsp's
  echo canceller (Debian's ``libspeexdsp1``: an MDF adaptive filter of ``tail_ms`` covering the
  room's reverberation after the lag) and its preprocessor, which suppresses the residual echo
  that the filter leaves (``echo_suppress_db``; harder while the far end is loud) and, when
  asked, noise. The binding is a thin ``ctypes`` layer over the library's C API; no filter is
  implemented here.
* **Level.** The echo return loss (echo level minus playback level) is estimated per frame
  while the far end plays, as the median of recent ratios (double talk, a minority of frames,
  does not move it much); until 320 ms of them are seen it is assumed to be 0 dB (echo as
  loud as playback). The second of input heard before the lag was found counts as well, so
  a caller who talks over the first answer soon after the path is found is weighed against
  the echo's real level, not that assumption.
* **Lags ruled out.** Until the lag is found, every lag ``0 .. max_delay_ms`` could carry echo.
  For each lag (in frames) the input's power while the playback at that lag was loud is
  compared with that playback's power: input ``quiet_return_loss_db`` below it (digital
  silence, room noise) rules the lag out for the session. A client that plays nothing back
  (headphones, its own echo cancellation, an app that sends silence while it plays) has
  every lag ruled out within ``max_delay_ms`` plus ``quiet_evidence_ms`` of loud playback
  (:attr:`EchoCanceller.no_echo_path`); before that a caller is weighed only against the
  playback at lags still possible. An echo keeps its own lag in play, so the gate stays
  strict for it until the lag is estimated. Frames whose loud playback lies only at ruled-out
  lags pass untouched, like frames without playback.
* **Different talker.** For each 16 ms frame the *predicted* echo level is the playback level
  over the echo path's window (lag .. lag + tail) plus the echo return loss. A frame counts as
  the caller's own voice when the cancelled output is louder than ``predicted echo -
  talker_margin_db`` and above the noise floor: echo alone leaves a residual far below its
  prediction, a person speaking at the echo's level leaves one at about the prediction.
  :meth:`EchoCanceller.different_talker` answers for a span of input time (e.g. from a VAD
  onset to now); the runtime must get a yes before ``speech_started`` fires while the
  assistant speaks.

``audio.input.noise_reduction`` chooses how hard to suppress (:meth:`EchoSettings.for_noise_reduction`):
``near_field`` (headset, close microphone) suppresses residual echo moderately and noise
lightly; ``far_field`` (speakerphone, laptop) suppresses both harder; ``None`` (the protocol's
"off") still cancels the server's own echo, which removes nothing of the caller, but leaves
noise alone. Without playback in the echo path's window a frame passes through untouched.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from .resample import StreamingResampler

__all__ = [
    "EchoCanceller",
    "EchoDelayEstimator",
    "EchoFrame",
    "EchoSettings",
    "EchoUnavailable",
    "NoiseReduction",
    "SpeexEchoCanceller",
    "level_db",
]

log = logging.getLogger("openrealtime.echo")

NoiseReduction = Literal["near_field", "far_field"] | None
FloatAudio = npt.NDArray[np.float32]

_SILENCE_DB = -100.0
_INF_DB = 100.0
RUN_END_MS = 1000
"""Playback silent this long ends a playback run (its echo reduction is logged)."""
RUN_ESTIMATE_EVERY_MS = 64
RUN_PAD_MS = 120
"""Until a run's offset is measured its echo is predicted from the playback this much either
side of where it was placed (runs measured live were off by -60 to +60 ms, rarely more)."""
LEARN_PASSES = 3
"""Times the audio already heard is run through the filter when the path is found or a run is
moved: speex's adaptive filter needs seconds of echo to converge, and a short first answer
piece would leave it unconverged at the start of the next."""
PATHLESS_ESTIMATES = 3
"""Estimates (every ``estimate_every_ms`` over ``estimate_window_ms``) that must find no echo
before :attr:`EchoCanceller.no_echo_path` holds."""
PROVEN_CANCELLATION_DB = 6.0
"""The canceller's output replaces the microphone's audio only once its filter has shown it
takes at least this much echo off (:attr:`EchoCanceller.cancellation_db`). Before that there is
no echo it has learnt to remove, and an adaptive filter and residual suppressor run against
playback that is not in the input (a client with its own echo cancellation, a caller talking
over an answer placed where it was not heard, a lag found by chance in the caller's speech)
take whole syllables off the caller: the talker gate still decides on the filter's output."""
CANDIDATE_ESTIMATES = 4
"""Estimates a lag candidate waits for a second one to agree before it is dropped (while one
waits, estimates that find nothing do not count towards :data:`PATHLESS_ESTIMATES`)."""

MIN_RETURN_LOSS_FRAMES = 20
"""Frames of echo (320 ms) the echo return loss needs before it replaces the 0 dB assumed."""
SETTLED_RETURN_LOSS_FRAMES = 60
"""Frames measured after the lag was found (about 1 s) before the return loss is the median."""

# speex_echo.h / speex_preprocess.h request codes
_ECHO_SET_SAMPLING_RATE = 24
_PP_SET_DENOISE = 0
_PP_SET_AGC = 2
_PP_SET_DEREVERB = 8
_PP_SET_NOISE_SUPPRESS = 18
_PP_SET_ECHO_SUPPRESS = 20
_PP_SET_ECHO_SUPPRESS_ACTIVE = 22
_PP_SET_ECHO_STATE = 24


class EchoUnavailable(RuntimeError):
    """libspeexdsp is not installed (Debian: ``apt-get install libspeexdsp1``)."""


_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


def _speexdsp() -> ctypes.CDLL:
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        name = ctypes.util.find_library("speexdsp") or "libspeexdsp.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError as error:
            raise EchoUnavailable(
                f"echo cancellation needs libspeexdsp ({error}); install the Debian package libspeexdsp1"
            ) from None
        p, i, i16p = ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int16)
        lib.speex_echo_state_init.argtypes = [i, i]
        lib.speex_echo_state_init.restype = p
        lib.speex_echo_state_destroy.argtypes = [p]
        lib.speex_echo_state_destroy.restype = None
        lib.speex_echo_state_reset.argtypes = [p]
        lib.speex_echo_state_reset.restype = None
        lib.speex_echo_cancellation.argtypes = [p, i16p, i16p, i16p]
        lib.speex_echo_cancellation.restype = None
        lib.speex_echo_ctl.argtypes = [p, i, p]
        lib.speex_echo_ctl.restype = i
        lib.speex_preprocess_state_init.argtypes = [i, i]
        lib.speex_preprocess_state_init.restype = p
        lib.speex_preprocess_state_destroy.argtypes = [p]
        lib.speex_preprocess_state_destroy.restype = None
        lib.speex_preprocess_run.argtypes = [p, i16p]
        lib.speex_preprocess_run.restype = i
        lib.speex_preprocess_ctl.argtypes = [p, i, p]
        lib.speex_preprocess_ctl.restype = i
        _lib = lib
        return lib


def level_db(samples: npt.ArrayLike) -> float:
    """Mean power of float samples in dB relative to full scale (-100 for digital silence)."""
    x = np.asarray(samples, dtype=np.float64)
    power = float(np.mean(x * x)) if x.size else 0.0
    return 10.0 * math.log10(power) if power > 1e-10 else _SILENCE_DB


@dataclass(frozen=True)
class EchoSettings:
    """How the canceller runs; :meth:`for_noise_reduction` maps the protocol's switch."""

    frame_ms: int = 16
    tail_ms: int = 128
    """Length of speex's adaptive filter: the room's reverberation after the estimated lag."""
    max_delay_ms: int = 400
    """Longest echo lag searched (network + playout buffer + loudspeaker + air)."""
    lead_ms: int = 32
    """The far end goes to the filter this much early, so a lag estimate up to this much late
    still leaves the echo inside the filter's causal window."""
    lag_tolerance_ms: float = 24.0
    """A new lag estimate this close to the current one keeps the filter as it is: each answer
    chunk after a playback underrun lands up to a client tick (20 ms) off its placement, and
    restarting the filter for each would keep it from ever converging (the adaptive filter
    follows such a shift within its window instead)."""
    echo_suppress_db: int = -40
    echo_suppress_active_db: int = -25
    noise_suppress_db: int = -3
    """speex applies its residual echo suppression inside its denoiser, so the denoiser always
    runs; this caps how much it may take off stationary noise (-3 dB: barely)."""
    talker_margin_db: float = 15.0
    """A frame is the caller's when its cancelled level exceeds the predicted echo minus the
    cancellation achieved so far (less ``talker_guard_db``), and at least minus this."""
    talker_guard_db: float = 8.0
    talker_floor_margin_db: float = 9.0
    """... and the noise floor plus this."""
    talker_fraction: float = 0.5
    """:meth:`EchoCanceller.different_talker`: share of talker frames a span needs."""
    talker_window_ms: float = 160.0
    """:meth:`EchoCanceller.gate` asks about this much audio up to the frame's end."""
    cancellation_window_ms: float = 750.0
    """Frames the achieved cancellation is measured over (its 25th percentile)."""
    cancellation_decay_db_per_s: float = 2.0
    """How fast the held cancellation gives way when the filter stops reaching it."""
    sustained_ms: float = 320.0
    sustained_excess_db: float = 4.0
    """Fail-open: input whose filtered level stays, by its median over ``sustained_ms``, this
    far above the predicted echo is a person, however the cancellation estimate stands (an
    echo alone does not stay above its own prediction)."""
    far_active_db: float = -55.0
    """Playback quieter than this (dBFS) is treated as silence: no echo to predict."""
    quiet_return_loss_db: float = -30.0
    """While the echo path is unknown, a lag at which the input stayed this far below the
    playback it would be echoing (over ``quiet_evidence_ms`` of loud playback) is ruled out:
    a loudspeaker echo comes back at about -6 dB, a laptop's at -10 to -20 dB."""
    quiet_evidence_ms: float = 48.0
    estimate_every_ms: int = 250
    estimate_window_ms: int = 1000
    run_search_ms: int = 300
    """How far (either way) a playback run's own echo is searched around where its placement
    and the echo path put it: a run placed after an underrun lands where the server's view of
    the input clock was when it sent it, which is off the client's by the audio in flight."""
    run_heard_ms: int = 400
    """Echo of a run heard before its offset is estimated (and then held for the whole run)."""

    def __post_init__(self) -> None:
        if self.frame_ms <= 0 or self.tail_ms <= 0 or self.max_delay_ms < 0 or self.lead_ms < 0:
            raise ValueError("frame_ms and tail_ms must be positive, max_delay_ms and lead_ms non-negative")
        if not 0.0 < self.talker_fraction <= 1.0:
            raise ValueError("talker_fraction must be within (0, 1]")
        if self.echo_suppress_db > 0 or self.echo_suppress_active_db > 0 or self.noise_suppress_db > 0:
            raise ValueError("suppression levels are attenuations in dB (<= 0)")

    @classmethod
    def for_noise_reduction(cls, mode: NoiseReduction) -> EchoSettings:
        """``near_field``: headset-like, moderate; ``far_field``: speakerphone, hard; ``None``:
        cancel the server's own echo only, no noise suppression."""
        if mode == "far_field":
            return cls(tail_ms=200, echo_suppress_db=-60, echo_suppress_active_db=-45, noise_suppress_db=-25)
        if mode == "near_field":
            return cls(echo_suppress_db=-40, echo_suppress_active_db=-25, noise_suppress_db=-12)
        if mode is None:
            return cls()
        raise ValueError(f"noise_reduction must be near_field, far_field or None, got {mode!r}")


class SpeexEchoCanceller:
    """libspeexdsp's echo canceller plus preprocessor (residual echo and noise suppression).

    ``process`` takes one frame of the microphone and the time-aligned frame of playback
    (int16, ``frame_samples`` each) and returns the cleaned frame. Not thread-safe.
    """

    def __init__(self, sample_rate: int, frame_samples: int, settings: EchoSettings) -> None:
        lib = _speexdsp()
        self._lib = lib
        self.sample_rate = sample_rate
        self.frame_samples = frame_samples
        filter_length = max(frame_samples, round(settings.tail_ms * sample_rate / 1000))
        self._echo: int | None = lib.speex_echo_state_init(frame_samples, filter_length)
        self._pre: int | None = lib.speex_preprocess_state_init(frame_samples, sample_rate)
        if not self._echo or not self._pre:
            self.close()
            raise EchoUnavailable("libspeexdsp could not create its echo or preprocess state")
        self._ctl_echo(_ECHO_SET_SAMPLING_RATE, sample_rate)
        self._ctl_pre(_PP_SET_ECHO_STATE, None)
        self._ctl_pre(_PP_SET_DENOISE, 1)
        self._ctl_pre(_PP_SET_NOISE_SUPPRESS, settings.noise_suppress_db)
        self._ctl_pre(_PP_SET_AGC, 0)
        # the VAD is off by default; setting it at all makes libspeexdsp print a warning line
        # on stderr, which would break a JSON log
        self._ctl_pre(_PP_SET_DEREVERB, 0)
        self._ctl_pre(_PP_SET_ECHO_SUPPRESS, settings.echo_suppress_db)
        self._ctl_pre(_PP_SET_ECHO_SUPPRESS_ACTIVE, settings.echo_suppress_active_db)
        self._out = np.zeros(frame_samples, dtype=np.int16)

    def _ctl_echo(self, request: int, value: int) -> None:
        arg = ctypes.c_int(value)
        self._lib.speex_echo_ctl(self._echo, request, ctypes.cast(ctypes.byref(arg), ctypes.c_void_p))

    def _ctl_pre(self, request: int, value: int | None) -> None:
        if value is None:  # SET_ECHO_STATE takes the echo state itself
            self._lib.speex_preprocess_ctl(self._pre, request, self._echo)
            return
        arg = ctypes.c_int(value)
        self._lib.speex_preprocess_ctl(self._pre, request, ctypes.cast(ctypes.byref(arg), ctypes.c_void_p))

    def process(
        self, near: npt.NDArray[np.int16], far: npt.NDArray[np.int16]
    ) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.int16]]:
        """``(linear, cleaned)``: the adaptive filter's output (the caller's voice untouched,
        echo reduced) and that after residual echo and noise suppression."""
        if self._echo is None or self._pre is None:
            raise RuntimeError("this echo canceller is closed")
        if near.shape != (self.frame_samples,) or far.shape != (self.frame_samples,):
            raise ValueError(f"expected frames of {self.frame_samples} samples")
        rec = np.ascontiguousarray(near, dtype=np.int16)
        play = np.ascontiguousarray(far, dtype=np.int16)
        out = np.empty(self.frame_samples, dtype=np.int16)
        i16p = ctypes.POINTER(ctypes.c_int16)
        self._lib.speex_echo_cancellation(
            self._echo, rec.ctypes.data_as(i16p), play.ctypes.data_as(i16p), out.ctypes.data_as(i16p)
        )
        linear = out.copy()
        self._lib.speex_preprocess_run(self._pre, out.ctypes.data_as(i16p))
        return linear, out

    def reset(self) -> None:
        """Forget the adapted echo path (after the lag changed)."""
        if self._echo is not None:
            self._lib.speex_echo_state_reset(self._echo)

    def close(self) -> None:
        if self._pre:
            self._lib.speex_preprocess_state_destroy(self._pre)
        if self._echo:
            self._lib.speex_echo_state_destroy(self._echo)
        self._pre = self._echo = None

    def __del__(self) -> None:
        self.close()


class EchoDelayEstimator:
    """The lag of the echo behind the placed playback, by band-limited GCC-PHAT.

    :meth:`estimate` correlates the last ``window`` samples of the microphone with playback
    ``0 .. max_lag`` samples earlier; whitening (PHAT) makes the peak sharp for speech, and
    300 Hz to 3.4 kHz keeps hum and hiss out. Returns ``(lag, confidence)`` or ``None`` when
    the playback in the window is too quiet; confidence is the peak's height in standard
    deviations of the correlation over all lags.
    """

    def __init__(self, sample_rate: int, max_lag: int, window: int) -> None:
        self.sample_rate = sample_rate
        self.max_lag = max_lag
        self.window = window

    def estimate(self, near: FloatAudio, far: FloatAudio) -> tuple[int, float] | None:
        """``near``: the last ``window`` samples; ``far``: the ``window + max_lag`` samples of
        playback ending at the same instant."""
        if near.size != self.window or far.size != self.window + self.max_lag:
            raise ValueError("near must hold window samples and far window + max_lag")
        if level_db(far[self.max_lag :]) < -60.0 or level_db(near) < -70.0:
            return None
        n = 1 << math.ceil(math.log2(far.size + near.size))
        spectrum = np.fft.rfft(near, n) * np.conj(np.fft.rfft(far, n))
        freqs = np.fft.rfftfreq(n, 1.0 / self.sample_rate)
        band = (freqs >= 300.0) & (freqs <= 3400.0)
        spectrum = np.where(band, spectrum / (np.abs(spectrum) + 1e-12), 0.0)
        corr = np.fft.irfft(spectrum, n)
        # near[t] ~ far[t + max_lag - lag]: circular lag k = lag - max_lag for lag in 0..max_lag
        lags = (np.arange(self.max_lag + 1) - self.max_lag) % n
        values = corr[lags]
        best = int(np.argmax(values))
        spread = float(np.std(values))
        confidence = (float(values[best]) - float(np.mean(values))) / spread if spread > 0 else 0.0
        return best, confidence


@dataclass(frozen=True)
class EchoFrame:
    """One processed frame: where it sits on the input clock and what was decided about it."""

    start_ms: float
    end_ms: float
    near_db: float
    out_db: float
    predicted_echo_db: float | None
    """Playback level over the echo window plus the echo return loss; None: no playback."""
    talker: bool
    """The cancelled frame is louder than echo alone explains (a person is speaking)."""
    linear_db: float | None = None
    """Level after the adaptive filter, before residual suppression (None: not run)."""
    allowed_db: float = 0.0
    """How far below the predicted echo the filter's output may be and still count as a talker."""


class EchoCanceller:
    """One session's echo removal: playback in, microphone in, cleaned microphone out.

    Times are ms on the session's input clock. :meth:`play` places output audio (any rate;
    resampled to ``sample_rate``) where the client is expected to play it; :meth:`process`
    takes microphone audio at ``sample_rate`` in whole frames (16 ms: the VAD's 32 ms frame is
    two) and returns it cleaned. Not thread-safe: one session's audio task calls it.
    """

    def __init__(self, sample_rate: int = 16_000, settings: EchoSettings | None = None) -> None:
        self.settings = settings or EchoSettings()
        self.sample_rate = sample_rate
        s = self.settings
        self.frame_samples = round(s.frame_ms * sample_rate / 1000)
        self._speex = SpeexEchoCanceller(sample_rate, self.frame_samples, s)
        self._max_lag = round(s.max_delay_ms * sample_rate / 1000)
        self._tail = round(s.tail_ms * sample_rate / 1000)
        self._lead = round(s.lead_ms * sample_rate / 1000)
        self._window = round(s.estimate_window_ms * sample_rate / 1000)
        self._estimator = EchoDelayEstimator(sample_rate, self._max_lag, self._window)
        self._keep = self._window + self._max_lag + self._tail + 4 * self.frame_samples
        # playback on the input clock: self._far[i] is input sample self._far_origin + i
        self._far = np.zeros(0, dtype=np.float32)
        self._far_origin = 0
        self._far_stream: _PlaybackStream | None = None
        self._run_shift = 0
        """Samples the last playback run was found to be heard later than it was placed."""
        self._run_search = round(s.run_search_ms * sample_rate / 1000)
        self._run_heard = round(s.run_heard_ms * sample_rate / 1000)
        self._near = np.zeros(0, dtype=np.float32)  # raw microphone, ending at self._near_end
        self._near_end = 0
        self._lag: int | None = None
        self._candidate: int | None = None
        self._since_estimate = 0
        self._ratios: deque[float] = deque(maxlen=200)
        self._live_ratios = 0
        self._reductions: deque[float] = deque(maxlen=round(s.cancellation_window_ms / s.frame_ms))
        self._held_cancellation = 0.0
        """The best cancellation seen since the filter last started over, less a slow decay:
        the caller's own voice (not cancelled) must not talk the estimate down, or a caller who
        keeps talking would close the gate on themselves."""
        self._excess: deque[float] = deque(maxlen=max(1, round(s.sustained_ms / s.frame_ms)))
        self._floor: deque[float] = deque(maxlen=64)
        self.frames: deque[EchoFrame] = deque(maxlen=round(4000 / s.frame_ms))
        self.resets = 0
        self.run_reductions_db: list[float] = []
        """Per finished playback run: the median echo reduction of the adaptive filter (dB)
        over its frames where echo stood above the noise and the lag was known."""
        self._run: list[float] = []
        self._quiet_frames = 0
        self._open = False
        self._pathless = 0
        """Delay estimates in a row that found no echo of loud playback in the input at all."""
        self._candidate_age = 0
        """Estimates since the pending lag candidate was found (it expires after a few)."""
        self._lag_frames = self._max_lag // self.frame_samples + 1
        """Lags looked at while the path is unknown: 0 .. max_delay_ms in whole frames."""
        self._tail_frames = -(-self._tail // self.frame_samples)
        self._quiet_near = np.zeros(self._lag_frames)
        """Per lag: input power summed over frames where the playback at that lag was loud."""
        self._quiet_far = np.zeros(self._lag_frames)
        """Per lag: the playback's power summed over the same frames."""
        self._quiet_count = np.zeros(self._lag_frames, dtype=np.int64)
        self._ruled_out = np.zeros(self._lag_frames, dtype=bool)
        """Lags at which the input stayed far quieter than the playback: no echo path there."""

    # ------------------------------------------------------------------ inspection

    @property
    def delay_ms(self) -> float | None:
        """The echo lag behind placed playback, once estimated."""
        return None if self._lag is None else self._lag * 1000 / self.sample_rate

    @property
    def echo_return_loss_db(self) -> float:
        """Echo level relative to playback (0 until measured: echo as loud as playback).

        The median of the recent frames' ratios; its 60th percentile until
        ``SETTLED_RETURN_LOSS_FRAMES`` have been measured after the lag was found: the first
        estimate rests mostly on the audio heard before, and erring loud there keeps an echo
        peak of the first answer from passing for a caller (``bench/echo_barge_in.py``: fewer
        false barge-ins and earlier callers than the median alone)."""
        if len(self._ratios) < MIN_RETURN_LOSS_FRAMES:
            return 0.0
        early = self._live_ratios < SETTLED_RETURN_LOSS_FRAMES
        return float(np.percentile(np.asarray(self._ratios), 60 if early else 50))

    @property
    def cancellation_db(self) -> float:
        """How much the adaptive filter surely takes off echo now: the 25th percentile of the
        level reduction over the last 1.5 s of frames where echo stood well above the noise
        (0 until the lag is known: an unconverged filter takes off nothing)."""
        return self._held_cancellation

    @property
    def no_echo_path(self) -> bool:
        """No lag found and :data:`PATHLESS_ESTIMATES` estimates in a row saw no echo of loud
        playback (a client with its own echo cancellation, or not playing): nothing to tell a
        talker from, so the gate stays open rather than predict an echo that never comes.
        Also as soon as every lag is ruled out by a quiet input (see the module docs): a client
        that sends silence while the answer plays has no echo path, whoever speaks next."""
        return self._lag is None and (self._pathless >= PATHLESS_ESTIMATES or bool(self._ruled_out.all()))

    @property
    def noise_floor_db(self) -> float:
        if not self._floor:
            return -90.0
        return float(np.median(np.asarray(self._floor)))

    # ------------------------------------------------------------------ input

    def play(self, pcm: npt.NDArray[np.int16] | FloatAudio, rate: int, at_ms: float | None = None) -> None:
        """Playback that starts at ``at_ms`` on the input clock (default: right after the
        previous chunk). int16 or float32, mono, at ``rate``; chunks that follow each other
        (within 2 ms) are resampled as one stream."""
        samples = np.asarray(pcm)
        if samples.ndim != 1:
            raise ValueError("playback must be mono")
        audio = (
            samples.astype(np.float32) / 32768.0 if samples.dtype == np.int16 else samples.astype(np.float32)
        )
        stream = self._far_stream
        continues = (
            stream is not None
            and stream.rate == rate
            and (at_ms is None or abs(at_ms - stream.next_ms) <= 2.0)
        )
        if not continues:
            if stream is not None:
                self._place(stream.flush(), stream.position + stream.shift)
            begin = at_ms if at_ms is not None else (stream.next_ms if stream is not None else 0.0)
            stream = self._far_stream = _PlaybackStream(rate, self.sample_rate, begin)
            stream.shift = self._run_shift  # the last run's offset: the best guess until measured
            stream.held = self._lag is None  # the run that finds the echo path defines its offset
        assert stream is not None
        out, position = stream.push(audio)
        self._place(out, position + stream.shift)

    def cut(self, at_ms: float) -> None:
        """Playback stopped at ``at_ms`` on the input clock (barge-in, cleared): what was placed
        after it will not be heard, so it predicts no echo."""
        stream = self._far_stream
        if stream is not None:
            self._place(stream.flush(), stream.position + stream.shift)
            self._far_stream = None
        keep = round(at_ms * self.sample_rate / 1000) - self._far_origin
        if keep < self._far.size:
            self._far = self._far[: max(keep, 0)].copy()

    def _place(self, audio: FloatAudio, start: int) -> None:
        if audio.size == 0:
            return
        if self._far.size == 0:
            self._far_origin = start
        offset = start - self._far_origin
        if offset < 0:  # older than what is kept: keep the part that is still needed
            audio = audio[-offset:]
            offset = 0
            if audio.size == 0:
                return
        need = offset + audio.size
        if need > self._far.size:
            grown = np.zeros(need, dtype=np.float32)
            grown[: self._far.size] = self._far
            self._far = grown
        self._far[offset : offset + audio.size] = audio

    def _far_slice(self, start: int, end: int) -> FloatAudio:
        """Playback for input samples ``[start, end)`` (zeros where nothing was played)."""
        out = np.zeros(end - start, dtype=np.float32)
        a = max(start, self._far_origin)
        b = min(end, self._far_origin + self._far.size)
        if b > a:
            out[a - start : b - start] = self._far[a - self._far_origin : b - self._far_origin]
        return out

    def process(self, near: FloatAudio, start_ms: float) -> FloatAudio:
        """Clean microphone audio that starts at ``start_ms``; returns the same number of samples."""
        samples = np.asarray(near, dtype=np.float32)
        if samples.ndim != 1 or samples.size % self.frame_samples:
            raise ValueError(f"expected mono audio in whole frames of {self.frame_samples} samples")
        start = round(start_ms * self.sample_rate / 1000)
        out = np.empty_like(samples)
        for index in range(0, samples.size, self.frame_samples):
            frame = samples[index : index + self.frame_samples]
            out[index : index + self.frame_samples] = self._frame(frame, start + index)
        self._trim()
        return out

    def _frame(self, near: FloatAudio, start: int) -> FloatAudio:
        n = self.frame_samples
        end = start + n
        self._remember_near(near, end)
        self._since_estimate += n
        # a run's offset is looked for every few frames: until it is found the gate is strict
        every_ms = self.settings.estimate_every_ms if self._lag is None else RUN_ESTIMATE_EVERY_MS
        if self._since_estimate * 1000 >= every_ms * self.sample_rate:
            self._since_estimate = 0
            if self._lag is None:
                self._update_lag(end)
            else:
                self._update_run_offset(end)
        near_db = level_db(near)
        start_ms, end_ms = start * 1000 / self.sample_rate, end * 1000 / self.sample_rate
        # the playback that can be in this frame: the lag's window, or every lag still possible
        unsure = self._run_unsure(start)
        if self._lag is not None:
            # a run whose offset is not yet measured may be heard up to run_search either way
            pad = round(RUN_PAD_MS * self.sample_rate / 1000) if unsure else 0
            window = self._far_slice(start - self._lag - self._tail - pad, end - self._lag + self._lead + pad)
            far_db = played_db = self._window_level(window)
        else:
            played_db, far_db = self._possible_echo_level(end, near_db)
        if far_db < self.settings.far_active_db:
            if played_db < self.settings.far_active_db:  # nothing played: the room as it is
                self._quiet_frames += 1
                if self._quiet_frames * self.settings.frame_ms >= RUN_END_MS:
                    self.end_run()
                self._floor.append(near_db)
            self._excess.append(_INF_DB if near_db > self._floor_gate() else -_INF_DB)
            frame = EchoFrame(start_ms, end_ms, near_db, near_db, None, near_db > self._floor_gate())
            self.frames.append(frame)
            return near
        self._quiet_frames = 0
        lag = self._lag if self._lag is not None else 0
        far = self._far_slice(start - lag + self._lead, end - lag + self._lead)
        linear16, cleaned16 = self._speex.process(_to_int16(near), _to_int16(far))
        cleaned = cleaned16.astype(np.float32) / 32768.0
        out_db = level_db(cleaned)
        linear_db = level_db(linear16.astype(np.float32) / 32768.0)
        predicted = far_db + self.echo_return_loss_db
        # a run not yet placed where it is heard may be cancelled far less than the filter did
        cancellation = 0.0 if unsure else self.cancellation_db
        allowed = min(cancellation - self.settings.talker_guard_db, self.settings.talker_margin_db)
        talker = linear_db > predicted - allowed and linear_db > self._floor_gate()
        if self._lag is not None and not unsure:  # else ratios would mix in pre-echo frames
            self._ratios.append(near_db - far_db)
            self._live_ratios += 1
            if near_db > self._floor_gate():  # echo well above the noise: cancellation shows
                self._reductions.append(near_db - linear_db)
                self._run.append(near_db - linear_db)
                self._update_cancellation()
        self._excess.append(linear_db - predicted if linear_db > self._floor_gate() else -_INF_DB)
        proven = self.cancellation_db >= PROVEN_CANCELLATION_DB
        self.frames.append(
            EchoFrame(
                start_ms,
                end_ms,
                near_db,
                out_db if proven else near_db,
                predicted,
                talker,
                linear_db,
                allowed,
            )
        )
        return cleaned if proven else near

    def _update_cancellation(self) -> None:
        decay = self.settings.cancellation_decay_db_per_s * self.settings.frame_ms / 1000
        held = max(0.0, self._held_cancellation - decay)
        if len(self._reductions) >= 8:
            held = max(held, float(np.percentile(np.asarray(self._reductions), 25)))
        self._held_cancellation = held

    def sustained_talker(self) -> bool:
        """The fail-open check: the last ``sustained_ms`` of filtered input stayed, in median,
        ``sustained_excess_db`` above the predicted echo."""
        if len(self._excess) < (self._excess.maxlen or 1):
            return False
        return float(np.median(np.asarray(self._excess))) > self.settings.sustained_excess_db

    def _possible_echo_level(self, end: int, near_db: float) -> tuple[float, float]:
        """While the lag is unknown: ``(played, possible)``, the loudest playback frame at any
        lag ``0 .. max_delay + tail`` and the loudest at a lag not ruled out (dBFS). Adds this
        frame to each lag's evidence first: where the playback at that lag was loud, the
        input's power against it (see the module docs)."""
        n, lags = self.frame_samples, self._lag_frames
        rows = lags + self._tail_frames
        far = self._far_slice(end - rows * n, end).astype(np.float64).reshape(rows, n)[::-1]
        power = np.mean(far * far, axis=1)  # row j: the playback j frames before this one
        s = self.settings
        loud = power[:lags] >= 10.0 ** (s.far_active_db / 10.0)
        if loud.any():
            self._quiet_near[loud] += 10.0 ** (near_db / 10.0)
            self._quiet_far[loud] += power[:lags][loud]
            self._quiet_count[loud] += 1
            excess = self._quiet_near - self._quiet_count * 10.0 ** (self.noise_floor_db / 10.0)
            enough = self._quiet_count * s.frame_ms >= s.quiet_evidence_ms
            quiet = excess < self._quiet_far * 10.0 ** (s.quiet_return_loss_db / 10.0)
            newly = enough & quiet & ~self._ruled_out
            if newly.any():
                self._ruled_out |= newly
                if self._ruled_out.all():
                    log.debug("no echo path: the input stayed quiet at every lag of loud playback")
        # an echo at lag j still possible carries the playback from j to j + tail
        possible = np.convolve((~self._ruled_out).astype(np.float64), np.ones(self._tail_frames + 1))[:rows]
        loudest = float(np.max(power))
        reachable = power[possible > 0.5]
        return _power_db(loudest), _power_db(float(np.max(reachable)) if reachable.size else 0.0)

    def _window_level(self, window: FloatAudio) -> float:
        """Loudest frame-sized block of the playback window, in dBFS."""
        n = self.frame_samples
        usable = window[: window.size // n * n].reshape(-1, n)
        if usable.size == 0:
            return _SILENCE_DB
        power = float(np.max(np.mean(usable.astype(np.float64) ** 2, axis=1)))
        return 10.0 * math.log10(power) if power > 1e-10 else _SILENCE_DB

    def _floor_gate(self) -> float:
        return self.noise_floor_db + self.settings.talker_floor_margin_db

    def _remember_near(self, near: FloatAudio, end: int) -> None:
        if self._near.size and end - near.size != self._near_end:
            self._near = np.zeros(0, dtype=np.float32)  # a gap in the input: start over
        self._near = np.concatenate((self._near, near))[-self._window :]
        self._near_end = end

    def _update_lag(self, end: int) -> None:
        if self._near.size < self._window:
            return
        far = self._far_slice(end - self._window - self._max_lag, end)
        found = self._estimator.estimate(self._near, far)
        if found is not None and found[1] < 8.0 and self._lag is None and self._candidate is None:
            self._pathless += 1  # playback, input, and nothing of one in the other
        elif found is not None:
            self._pathless = 0
        if self._candidate is not None:
            self._candidate_age += 1
            if self._candidate_age > CANDIDATE_ESTIMATES:  # never confirmed: a chance peak
                self._candidate = None
        if found is None or found[1] < 8.0:
            return
        lag, confidence = found
        close = round(self.settings.lag_tolerance_ms * self.sample_rate / 1000)
        if self._lag is not None and abs(lag - self._lag) <= close:
            self._candidate = None
            return
        agreed = self._candidate is not None and abs(lag - self._candidate) <= close
        if agreed or (self._lag is None and confidence >= 14.0):
            self._set_lag(lag)  # a clear first estimate, or two agreeing on a new lag
            self._candidate = None
        else:
            self._candidate = lag
            self._candidate_age = 0

    def _run_unsure(self, start: int) -> bool:
        """Whether input sample ``start`` can hold echo of a run whose offset is not measured."""
        run = self._far_stream
        if self._lag is None or run is None or run.held:
            return False
        return start - self._lag >= run.start + run.shift - self._run_search - self._tail

    def _learn_path(self, end: int, samples: int, *, measure: bool = False) -> None:
        """Run the last ``samples`` of input before the frame ending at ``end`` through the
        filter with the playback where it now sits, so the filter goes on from a path learnt
        on audio already heard instead of learning it from the next frames.

        With ``measure`` (the path was just found) the first pass also measures that audio as
        the frames that follow will be (:meth:`_measure_heard`), so a caller who talks over
        the first answer is weighed against the echo as it is, not against the 0 dB return
        loss assumed before anything is measured. Double talk in that audio only raises the
        return loss and lowers the reduction: the gate errs strict."""
        assert self._lag is not None
        n = self.frame_samples
        usable = min(samples, self._near.size - n) // n * n
        if usable <= 0:
            return
        history = self._near[self._near.size - n - usable : self._near.size - n]
        first = end - n - usable
        for learn in range(LEARN_PASSES):
            for i in range(0, usable, n):
                at = first + i - self._lag + self._lead
                near = history[i : i + n]
                linear, _ = self._speex.process(_to_int16(near), _to_int16(self._far_slice(at, at + n)))
                if measure and learn == 0:
                    self._measure_heard(first + i, near, linear)
        if measure:
            self._update_cancellation()

    def _measure_heard(self, start: int, near: FloatAudio, linear: npt.NDArray[np.int16]) -> None:
        """Count a frame of audio heard before the path was found as a frame after it is: its
        echo return loss, and the reduction of the filter's first pass over it (each frame
        filtered before the filter learns from it, as it will be from now on)."""
        assert self._lag is not None
        n = self.frame_samples
        far_db = self._window_level(
            self._far_slice(start - self._lag - self._tail, start + n - self._lag + self._lead)
        )
        if far_db < self.settings.far_active_db:
            return
        near_db = level_db(near)
        self._ratios.append(near_db - far_db)
        if near_db > self._floor_gate():
            self._reductions.append(near_db - level_db(linear.astype(np.float32) / 32768.0))

    def _update_run_offset(self, end: int) -> None:
        """Once ``run_heard_ms`` of the current run's echo has come back, find where it really
        is (GCC-PHAT over that run's playback alone, within ``run_search_ms`` of its
        placement), move the run there and hold it: the adaptive filter keeps one echo path
        for the session and sees a far end that is continuous for the whole run, instead of
        re-learning after every re-placement."""
        run = self._far_stream
        assert self._lag is not None
        if run is None or run.held:
            return
        heard = end - (run.start + run.shift + self._lag)
        if heard < self._run_heard or self._near.size < self._run_heard:
            return
        window = min(heard, self._near.size, self._window)
        search = self._run_search
        reach = self._lag - search  # echo of far[t] expected at t + lag: search lag +- search
        far = run.played(end - window - 2 * search - reach, end - reach)
        found = EchoDelayEstimator(self.sample_rate, 2 * search, window).estimate(self._near[-window:], far)
        if found is None or found[1] < 8.0:
            run.tries += 1
            if run.tries >= 8:  # not near where the path puts it: look for the path anew
                lag = self._lag
                self._update_lag(end)
                if self._lag != lag:
                    run.hold()
            return
        moved = found[0] - search
        log.debug(
            "playback run offset %+.0f ms (confidence %.1f), held for the run",
            (run.shift + moved) * 1000 / self.sample_rate,
            found[1],
        )
        if moved:
            self._unplace(run)
            run.shift += moved
            self._place(run.played(run.start + run.shift, run.position + run.shift), run.start + run.shift)
            self._learn_path(end, heard)
        run.hold()
        self._run_shift = run.shift

    def _unplace(self, run: _PlaybackStream) -> None:
        a = max(run.start + run.shift - self._far_origin, 0)
        b = min(run.position + run.shift - self._far_origin, self._far.size)
        if b > a:
            self._far[a:b] = 0.0

    def _set_lag(self, lag: int) -> None:
        log.debug("echo lag %s -> %.0f ms", self.delay_ms, lag * 1000 / self.sample_rate)
        if self._lag is not None:
            self._speex.reset()
            self.resets += 1
        first = self._lag is None
        self._lag = lag
        # the echo's level does not depend on its lag: the return loss is kept
        self._reductions.clear()
        self._held_cancellation = 0.0
        if first:
            self._learn_path(self._near_end, self._window, measure=True)

    def _trim(self) -> None:
        drop = (self._near_end - self._keep) - self._far_origin
        if drop > 0:
            self._far = self._far[drop:]
            self._far_origin += drop

    # ------------------------------------------------------------------ decisions

    def different_talker(self, since_ms: float, until_ms: float | None = None) -> bool:
        """Whether the input ``[since_ms, until_ms]`` holds a person rather than echo.

        True when no playback could be heard there; else when the adaptive filter's output,
        in power over the span, stands above the predicted echo less what the filter takes
        off (see the module docs) and above the noise floor. Power over the span rather than
        frame votes: a talker's syllables carry it, single frames of echo leak do not.
        """
        if self.no_echo_path:
            return True
        frames = [
            f
            for f in self.frames
            if f.end_ms > since_ms + 1e-6 and (until_ms is None or f.start_ms < until_ms - 1e-6)
        ]
        echoing = [f for f in frames if f.predicted_echo_db is not None and f.linear_db is not None]
        if not echoing:
            return True
        linear = _power_mean([f.linear_db for f in echoing if f.linear_db is not None])
        predicted = _power_mean([f.predicted_echo_db for f in echoing if f.predicted_echo_db is not None])
        allowed = float(np.mean([f.allowed_db for f in echoing]))
        return linear > predicted - allowed and linear > self._floor_gate()

    def gate(self, probability: float, end_ms: float) -> float:
        """A VAD frame's speech probability as the segmenter should see it: unchanged while
        the caller is the only source, 0 while playback could be echoing and the last
        ``talker_window_ms`` do not hold a different talker. Feeding gated probabilities
        keeps the segmenter as it is and makes ``speech_started`` wait for the check."""
        sustained = self.sustained_talker()
        if sustained or self.different_talker(end_ms - self.settings.talker_window_ms, end_ms):
            if not self._open and probability >= 0.5:
                self._open = True
                log.debug(
                    "echo gate opens at %.0f ms (%s): lag %s ms, return loss %.1f dB, cancellation %.1f dB",
                    end_ms,
                    "sustained" if sustained else "no echo path" if self.no_echo_path else "different talker",
                    None if self._lag is None else round(self._lag * 1000 / self.sample_rate),
                    self.echo_return_loss_db,
                    self.cancellation_db,
                )
            return probability
        self._open = False
        return 0.0

    def end_run(self) -> None:
        """The playback run is over: log (and keep) the echo reduction it achieved."""
        if not self._run:
            return
        reduction = float(np.median(np.asarray(self._run)))
        self.run_reductions_db.append(reduction)
        log.debug(
            "echo run over: %d frames, reduction %.1f dB, lag %s ms, resets %d, offset %+.0f ms",
            len(self._run),
            reduction,
            None if self._lag is None else round(self._lag * 1000 / self.sample_rate),
            self.resets,
            self._run_shift * 1000 / self.sample_rate,
        )
        self._run = []

    def close(self) -> None:
        self.end_run()
        self._speex.close()


class _PlaybackStream:
    """One run of contiguous playback, resampled to the canceller's rate and kept on time."""

    def __init__(self, rate: int, out_rate: int, start_ms: float) -> None:
        self.rate = rate
        self.out_rate = out_rate
        self.next_ms = start_ms
        self.start = round(start_ms * out_rate / 1000)  # input sample where it was placed
        self.position = self.start  # input sample of the next output
        self.shift = 0
        """Samples the run is heard later than placed (its measured offset, once held)."""
        self.held = False
        self.tries = 0
        """Estimates of its offset that found nothing within ``run_search_ms``."""
        self._audio: list[FloatAudio] = []
        self._resampler = StreamingResampler(rate, out_rate) if rate != out_rate else None

    def push(self, audio: FloatAudio) -> tuple[FloatAudio, int]:
        self.next_ms += audio.size * 1000 / self.rate
        out = (
            audio if self._resampler is None else np.asarray(self._resampler.process(audio), dtype=np.float32)
        )
        position = self.position
        self.position += out.size
        if not self.held:  # kept until its offset is measured
            self._audio.append(out)
        return out, position

    def hold(self) -> None:
        """The run's offset is measured: keep it (and no longer the audio)."""
        self.held = True
        self._audio = []

    def played(self, start: int, end: int) -> FloatAudio:
        """This run's audio for input samples ``[start, end)`` at its current offset (zeros
        outside it)."""
        out = np.zeros(max(end - start, 0), dtype=np.float32)
        audio = np.concatenate(self._audio) if self._audio else np.zeros(0, dtype=np.float32)
        self._audio = [audio]
        begin = self.start + self.shift
        a, b = max(start, begin), min(end, begin + audio.size)
        if b > a:
            out[a - start : b - start] = audio[a - begin : b - begin]
        return out

    def flush(self) -> FloatAudio:
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(self._resampler.flush(), dtype=np.float32)


def _power_db(power: float) -> float:
    return 10.0 * math.log10(power) if power > 1e-10 else _SILENCE_DB


def _power_mean(levels: list[float]) -> float:
    power = float(np.mean(np.power(10.0, np.asarray(levels) / 10.0)))
    return 10.0 * math.log10(power) if power > 1e-10 else _SILENCE_DB


def _to_int16(audio: FloatAudio) -> npt.NDArray[np.int16]:
    out: npt.NDArray[np.int16] = np.clip(np.rint(audio * 32768.0), -32768, 32767).astype(np.int16)
    return out
