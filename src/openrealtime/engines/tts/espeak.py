"""espeak-ng text to speech through the Debian binary: robotic, but ~free and many voices.

Formant synthesis costs almost nothing (well over 50x real time on one core), so it gives
the protocol's ten voice names distinct voices without competing with the neural engines for
CPU. Each call runs ``espeak-ng --stdout`` once, feeds the text on stdin (never on the command
line, so text cannot become an option) and yields the WAV stream as it is produced.

Voice ids are espeak-ng language voices with an optional variant: ``en-us``, ``en-gb+f2``,
``en-us+m3`` (see ``espeak-ng --voices`` and ``--voices=variant``).
"""

from __future__ import annotations

import math
import re
import shutil
import struct
import subprocess
import threading
from collections.abc import Iterator
from functools import cached_property

import numpy as np

from openrealtime.engines.base import CancelToken, PcmAudio, VoiceInfo

__all__ = ["EspeakError", "EspeakSynthesizer"]

SAMPLE_RATE = 22050
BASE_WPM = 175  # espeak-ng's default rate, i.e. speed 1.0
SPEED_MIN, SPEED_MAX = 0.25, 1.5
_MIN_WPM, _MAX_WPM = 80, 450
# espeak-ng 1.51 ignores a variant on "en-gb" (and "en-uk"), but honours it on "en", the
# same British voice file.
_VARIANT_BASE_ALIASES = {"en-gb": "en", "en-uk": "en"}
_VOICE_RE = re.compile(r"^[a-z]{2,3}(?:-[A-Za-z0-9]+)*(?:\+[A-Za-z0-9_]+)?$")


class EspeakError(RuntimeError):
    """espeak-ng is missing or failed."""


def _clamp_speed(speed: float) -> float:
    if not math.isfinite(speed) or speed <= 0:
        raise ValueError(f"speed must be a positive number, got {speed!r}")
    return min(max(speed, SPEED_MIN), SPEED_MAX)


class EspeakSynthesizer:
    """espeak-ng via subprocess, 22 050 Hz.

    ``binary``: path or name of ``espeak-ng`` (default: found on ``PATH``).
    ``chunk_ms``: size of the yielded chunks; audio streams while espeak-ng is still running.
    ``languages``: language prefixes listed by :meth:`voices` (all voices are accepted).
    ``synthesize`` also takes ``pitch`` (0-99, espeak-ng's default 50), which the voice table
    uses to make variants sound further apart.
    """

    name = "espeak"
    sample_rate = SAMPLE_RATE
    supports_pitch = True
    neural = False

    def __init__(
        self,
        *,
        binary: str = "espeak-ng",
        chunk_ms: int = 100,
        languages: tuple[str, ...] = ("en",),
    ) -> None:
        self.binary = binary
        self.chunk_ms = chunk_ms
        self.listed_languages = languages

    @staticmethod
    def available(binary: str = "espeak-ng") -> bool:
        """True when the espeak-ng binary can be found (it comes from the Debian package)."""
        return shutil.which(binary) is not None

    def _exe(self) -> str:
        exe = shutil.which(self.binary)
        if exe is None:
            raise EspeakError(f"{self.binary!r} not found; install it with: apt-get install -y espeak-ng")
        return exe

    def _run(self, *args: str) -> str:
        proc = subprocess.run([self._exe(), *args], capture_output=True, text=True, timeout=30, check=False)
        if proc.returncode != 0:
            raise EspeakError(f"espeak-ng {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    @cached_property
    def _catalogue(self) -> dict[str, str]:
        """Language voice id -> description, from ``espeak-ng --voices`` (MBROLA ones excluded)."""
        voices: dict[str, str] = {}
        for line in self._run("--voices").splitlines()[1:]:
            parts = line.split()
            if len(parts) < 5 or parts[4].startswith("mb/"):
                continue
            lang, label = parts[1], parts[3]
            voices.setdefault(lang, f"espeak-ng {label.replace('_', ' ')}")
        return voices

    @cached_property
    def _variant_genders(self) -> dict[str, str]:
        """Variant name -> "female"/"male", from ``espeak-ng --voices=variant``."""
        found: dict[str, str] = {}
        for match in re.finditer(
            r"\S+/([MF])\s+\S+\s+!v/(\S+)\s*$", self._run("--voices=variant"), re.MULTILINE
        ):
            found[match.group(2)] = "female" if match.group(1) == "F" else "male"
        return found or {
            f"{g}{i}": ("male" if g == "m" else "female")
            for g, n in (("m", 8), ("f", 5))
            for i in range(1, n + 1)
        }

    @property
    def variants(self) -> frozenset[str]:
        """Variant names accepted after ``+`` (e.g. ``f3``, ``m3``, ``klatt``)."""
        return frozenset(self._variant_genders)

    def describe_voice(self, voice: str) -> str:
        """Human description of a voice id, variant included."""
        base, _, variant = voice.partition("+")
        text = self._catalogue.get(base) or self._catalogue.get(
            "en-gb" if base == "en" else base, f"espeak-ng {base}"
        )
        if variant:
            text += f", variant {variant} ({self._variant_genders.get(variant, '?')})"
        return text

    def voices(self) -> list[VoiceInfo]:
        listed = [v for v in self._catalogue if v.split("-")[0] in self.listed_languages] or list(
            self._catalogue
        )
        return [
            VoiceInfo(
                id=v,
                engine=self.name,
                description=f"{self._catalogue[v]}; add a variant like +f5 (female) or +m6 (male)",
            )
            for v in sorted(listed)
        ]

    def spoken_languages(self) -> list[str]:
        """Every language (ISO 639-1 where one exists) some installed espeak-ng voice speaks."""
        return sorted({self.languages(v)[0] for v in self._catalogue})

    def languages(self, voice: str) -> tuple[str, ...]:
        """The language of a voice id (``es+f3`` -> ``es``; ``cmn`` -> ``zh``)."""
        base = voice.partition("+")[0].lower()
        lang = base.split("-")[0]
        return ({"cmn": "zh", "yue": "zh"}.get(lang, lang),)

    def has_voice(self, voice: str) -> bool:
        if not _VOICE_RE.match(voice):
            return False
        base, _, variant = voice.partition("+")
        known = base in self._catalogue or base in _VARIANT_BASE_ALIASES.values()
        return known and (not variant or variant in self.variants)

    def synthesize(
        self,
        text: str,
        *,
        voice: str,
        speed: float = 1.0,
        cancel: CancelToken | None = None,
        pitch: int | None = None,
    ) -> Iterator[PcmAudio]:
        """Yield int16 chunks of ``chunk_ms`` while espeak-ng speaks ``text``.

        ``speed`` 0.25-1.5 scales the words-per-minute rate (espeak-ng's floor is 80 wpm).
        """
        if not self.has_voice(voice):
            raise ValueError(
                f"unknown espeak-ng voice {voice!r}; use a language voice like en-us or en-gb, "
                "optionally with a variant such as +f3 or +m3"
            )
        if pitch is not None and not 0 <= pitch <= 99:
            raise ValueError(f"espeak-ng pitch must be 0..99, got {pitch}")
        wpm = round(min(max(BASE_WPM * _clamp_speed(speed), _MIN_WPM), _MAX_WPM))
        base, plus, variant = voice.partition("+")
        if variant:
            voice = _VARIANT_BASE_ALIASES.get(base, base) + plus + variant
        args = [self._exe(), "--stdout", "-b", "1", "-v", voice, "-s", str(wpm)]
        if pitch is not None:
            args += ["-p", str(pitch)]
        return self._stream(args, text, cancel)

    def _stream(self, args: list[str], text: str, cancel: CancelToken | None) -> Iterator[PcmAudio]:
        # Newlines end espeak-ng's input lines; the text is spoken as one passage.
        payload = " ".join(text.split())
        if not payload or (cancel is not None and cancel.cancelled):
            return
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        stdin = proc.stdin

        def feed() -> None:
            try:
                stdin.write(payload.encode("utf-8") + b"\n")
                stdin.close()
            except OSError:
                pass  # the process was killed (cancel) before reading everything

        writer = threading.Thread(target=feed, name="espeak-stdin", daemon=True)
        writer.start()
        try:
            header = proc.stdout.read(44)
            if len(header) < 44:
                proc.wait(timeout=10)
                raise EspeakError(
                    f"espeak-ng produced no audio: {proc.stderr.read().decode(errors='replace')}"
                )
            if header[:4] != b"RIFF" or header[36:40] != b"data":
                raise EspeakError("espeak-ng --stdout did not write a plain 44-byte WAV header")
            channels, rate = struct.unpack("<HI", header[22:28])
            bits = struct.unpack("<H", header[34:36])[0]
            if (channels, rate, bits) != (1, SAMPLE_RATE, 16):
                raise EspeakError(
                    f"espeak-ng wrote {channels} ch {rate} Hz {bits}-bit audio, expected mono 22050 16-bit"
                )
            block = max(2, int(SAMPLE_RATE * self.chunk_ms / 1000) * 2)
            while True:
                if cancel is not None and cancel.cancelled:
                    return
                data = proc.stdout.read(block)
                if not data:
                    break
                if len(data) % 2:
                    data += proc.stdout.read(1)
                if len(data) >= 2:
                    yield np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.int16)
            if proc.wait(timeout=10) != 0:
                raise EspeakError(f"espeak-ng failed: {proc.stderr.read().decode(errors='replace').strip()}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            writer.join(timeout=1)
            proc.stdout.close()
            proc.stderr.close()
