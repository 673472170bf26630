"""Map the Realtime API's voice names to the voices this server actually has.

Clients ask for ``alloy``, ``marin`` and the rest; we ship one neural English voice (Piper
``en_US-joe-medium``), optionally Kokoro's five style packs, and espeak-ng's robotic variants.
The table is documented data, overridable from configuration, and every entry is checked
against the installed engines when the table is built, so a typo fails at start-up rather
than in the middle of a call.

Default table (first available choice wins; ``kokoro`` only when that engine is enabled, which
``KOKORO=auto`` does on machines with the cores for it, see ``capacity.py``):

========  =====================================  ==========================================
name      choices, in order                      aim
========  =====================================  ==========================================
alloy     piper joe, espeak en-us+m6             default voice of many clients: neural
ash       kokoro jm_kumo, piper joe, espeak      male; openai-agents' default voice
          en-us+m6
ballad    espeak en-gb-x-rp+m2                   British male
coral     kokoro jf_nezumi, espeak en-us+f5      female
echo      espeak en-us+klatt                     male; the most intelligible espeak variant
sage      kokoro jf_tebukuro, espeak en-us+f2    female
shimmer   kokoro jf_gongitsune, espeak           female
          en-gb-x-rp+f2
verse     espeak en-gb-x-rp+m1                   British male
marin     kokoro jf_alpha, piper joe, espeak     recommended voice: best available
          en-us+f5
cedar     piper joe, kokoro jm_kumo, espeak      recommended voice: best available (male)
          en-us+m6
========  =====================================  ==========================================

Without Kokoro, ``alloy``, ``marin``, ``cedar`` and ``ash`` all speak with Piper joe: one good
voice four times beats a robotic voice on the names clients default to (``ash`` is the
openai-agents SDK's default). With Kokoro, ``marin`` is
the female ``jf_alpha`` and ``cedar`` stays Piper joe rather than ``jm_kumo``: both read codes
and sentences back as well through Whisper base (README, "Voices"), joe costs an eighth of
the CPU and answers first, and ``ash`` keeps ``jm_kumo`` as a sixth distinct neural voice. The espeak variants were
picked by intelligibility through Whisper tiny.en (5-17 % WER on a 53-word set; joe 0-2 %).

Every resolved voice reads its text through :mod:`normalize` first (codes letter by letter,
phone numbers digit by digit, amounts, dates; the transcript keeps the written text), so the
runtime gets this for free from :meth:`VoiceTable.resolve`.

Languages: each engine says which languages a voice speaks (Piper: its training language;
Kokoro: :data:`kokoro.LANGUAGES`; espeak-ng: the voice's own). ``resolve(name, language)``
keeps the name's voice when it speaks the language, else stands in a neural voice of the same
gender that does (Kokoro), else espeak-ng's voice for that language, so a session can answer
in the caller's language with the name it chose.

Override entries with ``{"name": "engine:voice"}`` or ``{"name": {"engine": ..., "voice":
..., "speed": 1.1, "pitch": 60, "description": ...}}`` (``pitch`` 0-99, espeak only); new
names (e.g. ``voice_abc`` for custom ``{"id": ...}`` voices) are added the same way. A client
may also name a voice directly as ``engine:voice`` (e.g. ``espeak:en-us+f3``) unless the
table was built with ``allow_direct=False``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

from openrealtime.engines.base import CancelToken, PcmAudio, Synthesizer, VoiceInfo
from openrealtime.engines.tts.measured import measured
from openrealtime.engines.tts.normalize import normalize_for_speech

__all__ = [
    "DEFAULT_PREFERENCES",
    "NAME_GENDERS",
    "OPENAI_VOICES",
    "TunedSynthesizer",
    "UnknownVoiceError",
    "VoiceConfigError",
    "VoiceSpec",
    "VoiceTable",
    "default_engines",
]

_LOG = logging.getLogger(__name__)

OPENAI_VOICES: tuple[str, ...] = (
    "alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar",
)  # fmt: skip
"""The built-in voice names of the Realtime API."""

PIPER_JOE = "piper:en_US-joe-medium"

DEFAULT_PREFERENCES: dict[str, tuple[str, ...]] = {
    "alloy": (PIPER_JOE, "espeak:en-us+m6"),
    "ash": ("kokoro:jm_kumo", PIPER_JOE, "espeak:en-us+m6"),
    "ballad": ("espeak:en-gb-x-rp+m2",),
    "coral": ("kokoro:jf_nezumi", "espeak:en-us+f5"),
    "echo": ("espeak:en-us+klatt",),
    "sage": ("kokoro:jf_tebukuro", "espeak:en-us+f2"),
    "shimmer": ("kokoro:jf_gongitsune", "espeak:en-gb-x-rp+f2"),
    "verse": ("espeak:en-gb-x-rp+m1",),
    "marin": ("kokoro:jf_alpha", PIPER_JOE, "espeak:en-us+f5"),
    "cedar": (PIPER_JOE, "kokoro:jm_kumo", "espeak:en-us+m6"),
}
"""For each built-in name, the voices to use in order of preference (see the module doc)."""

NAME_GENDERS: dict[str, str] = {
    "alloy": "female", "ash": "male", "ballad": "male", "coral": "female", "echo": "male",
    "sage": "female", "shimmer": "female", "verse": "male", "marin": "female", "cedar": "male",
}  # fmt: skip
"""How each built-in name sounds, so a stand-in voice for another language keeps it."""

ESPEAK_VARIANTS = {"female": "f5", "male": "klatt"}
"""espeak-ng variants for a stand-in voice in a language no neural voice speaks: through
Whisper base, ``klatt`` gave 33 / 57 / 64 % WER in Spanish / German / Italian where ``m3``
gave 87 / 79 / 100 %; the female variants were all ~70-100 % (robotic speech in other
languages is hard to follow)."""


_VOICE_PARAM = "session.audio.output.voice"


_ESPEAK_LANGUAGE_VOICES = {"zh": "cmn", "pt": "pt-br", "en": "en-us"}
"""espeak-ng's voice for a language where its name is not the ISO 639-1 code."""


class VoiceConfigError(ValueError):
    """The voice table configuration names an engine or voice that is not installed."""


class UnknownVoiceError(ValueError):
    """A client asked for a voice the table cannot resolve.

    ``message`` is ready for an ``error`` event (``type: invalid_request_error``,
    ``code: invalid_value``, ``param: session.audio.output.voice``).
    """

    type = "invalid_request_error"
    code = "invalid_value"

    def __init__(self, message: str, *, param: str = _VOICE_PARAM) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True)
class VoiceSpec:
    """One table entry: which engine speaks, with which of its voices, and how."""

    engine: str
    voice: str
    speed: float = 1.0
    pitch: int | None = None
    description: str = ""

    @property
    def ref(self) -> str:
        return f"{self.engine}:{self.voice}"

    @classmethod
    def parse(cls, value: str | Mapping[str, Any] | VoiceSpec) -> VoiceSpec:
        """Read ``"engine:voice"`` or a mapping with ``engine``, ``voice`` and optional tweaks."""
        if isinstance(value, VoiceSpec):
            return value
        if isinstance(value, str):
            engine, sep, voice = value.partition(":")
            if not sep or not engine.strip() or not voice.strip():
                raise VoiceConfigError(
                    f"voice {value!r} must be written as 'engine:voice', e.g. 'espeak:en-us+f3'"
                )
            return cls(engine=engine.strip(), voice=voice.strip())
        if isinstance(value, Mapping):
            extra = set(value) - {"engine", "voice", "speed", "pitch", "description"}
            if extra:
                raise VoiceConfigError(f"unknown voice settings {sorted(extra)}")
            if "engine" not in value and ":" in str(value.get("voice", "")):
                base = cls.parse(str(value["voice"]))
            else:
                if "engine" not in value or "voice" not in value:
                    raise VoiceConfigError("a voice mapping needs 'engine' and 'voice'")
                base = cls(engine=str(value["engine"]), voice=str(value["voice"]))
            try:
                speed = float(value.get("speed", 1.0))
                pitch = None if value.get("pitch") is None else int(value["pitch"])
            except (TypeError, ValueError) as exc:
                raise VoiceConfigError(f"bad speed/pitch in voice {dict(value)!r}: {exc}") from exc
            if not 0.25 <= speed <= 4.0:
                raise VoiceConfigError(f"voice speed factor must be within 0.25..4, got {speed}")
            if pitch is not None and not 0 <= pitch <= 99:
                raise VoiceConfigError(f"voice pitch must be within 0..99, got {pitch}")
            return cls(base.engine, base.voice, speed, pitch, str(value.get("description", "")))
        raise VoiceConfigError(f"cannot read a voice from {value!r}")


class _ExtendedSynthesizer(Protocol):
    def synthesize(
        self,
        text: str,
        *,
        voice: str,
        speed: float = 1.0,
        cancel: CancelToken | None = None,
        **options: Any,
    ) -> Iterator[PcmAudio]: ...


class TunedSynthesizer:
    """An engine as one table entry speaks with it: text normalised for speech (codes, numbers,
    amounts, dates; see ``normalize.py``) in the entry's language, its speed factor applied,
    and the language (Kokoro) or pitch (espeak-ng) passed on where the engine takes them.

    The session's ``audio.output.speed`` multiplies the factor; the engine clamps the result
    to its own range. ``language`` is an ISO 639-1 code (``None``: the voice's own).
    """

    def __init__(
        self,
        inner: Synthesizer,
        *,
        speed: float = 1.0,
        pitch: int | None = None,
        language: str | None = None,
        normalize: bool = True,
    ) -> None:
        if pitch is not None and not getattr(inner, "supports_pitch", False):
            raise VoiceConfigError(f"engine {inner.name!r} has no pitch setting (only espeak does)")
        self.inner = inner
        self.name = inner.name
        self.sample_rate = inner.sample_rate
        self.speed = speed
        self.pitch = pitch
        self.language = language
        self.normalize = normalize

    def voices(self) -> list[VoiceInfo]:
        return self.inner.voices()

    def synthesize(
        self, text: str, *, voice: str, speed: float = 1.0, cancel: CancelToken | None = None
    ) -> Iterator[PcmAudio]:
        if self.normalize:
            text = normalize_for_speech(text, self.language or "en")
        options: dict[str, Any] = {}
        if self.pitch is not None:
            options["pitch"] = self.pitch
        if self.language is not None and getattr(self.inner, "supports_language", False):
            options["lang"] = self.language
        if not options:
            return self.inner.synthesize(text, voice=voice, speed=speed * self.speed, cancel=cancel)
        extended = cast(_ExtendedSynthesizer, self.inner)
        return extended.synthesize(text, voice=voice, speed=speed * self.speed, cancel=cancel, **options)


def _language(code: str) -> str:
    """``en-US``, ``en_us``, ``EN`` -> ``en``."""
    return code.strip().lower().replace("_", "-").split("-")[0]


def voice_languages(engine: Synthesizer, voice: str) -> tuple[str, ...]:
    """The languages (ISO 639-1) ``voice`` of ``engine`` speaks; English when it cannot say."""
    languages = getattr(engine, "languages", None)
    if callable(languages):
        found = tuple(languages(voice))
        if found:
            return found
    return ("en",)


def _gender_of(spec: VoiceSpec, name: str) -> str:
    if name in NAME_GENDERS:
        return NAME_GENDERS[name]
    voice = spec.voice.lower()
    if "+m" in voice or voice[1:3] == "m_":
        return "male"
    return "female"


def _engine_has_voice(engine: Synthesizer, voice: str) -> bool:
    check = getattr(engine, "has_voice", None)
    if callable(check):
        return bool(check(voice))
    return any(v.id == voice for v in engine.voices())


def default_engines(
    *,
    piper: bool = True,
    piper_voices: Iterable[str | os.PathLike[str]] = (),
    kokoro: bool = False,
    kokoro_model: str | os.PathLike[str] | None = None,
    kokoro_voices: Iterable[str | os.PathLike[str]] = (),
    espeak: bool = True,
    onnx_threads: int = 1,
    kokoro_threads: int | None = None,
) -> dict[str, Synthesizer]:
    """Build the installed TTS engines (cheap: models load on first use).

    Piper with its embedded voice is required when ``piper`` is set (a missing voice package
    raises); espeak-ng is skipped with a warning when the binary is absent; Kokoro is loaded
    when ``kokoro`` is set (the server sets it from ``KOKORO``, by default only on a machine
    with the cores for it: ``capacity.py``). ``kokoro_threads``: Kokoro's intra-op threads;
    default ``onnx_threads``, raised to the threads the capacity rule gives one Kokoro answer
    when this machine has the cores for them.
    """
    engines: dict[str, Synthesizer] = {}
    if piper:
        from openrealtime.engines.tts.piper import PiperSynthesizer

        engines["piper"] = PiperSynthesizer(piper_voices, onnx_threads=onnx_threads)
    if kokoro:
        from openrealtime.engines.tts.kokoro import KokoroSynthesizer

        if kokoro_threads is None:
            from openrealtime.engines.tts.capacity import kokoro_capacity

            capacity = kokoro_capacity()
            kokoro_threads = max(onnx_threads, capacity.threads) if capacity.enabled else onnx_threads
        engines["kokoro"] = KokoroSynthesizer(kokoro_model, kokoro_voices, onnx_threads=kokoro_threads)
    if espeak:
        from openrealtime.engines.tts.espeak import EspeakSynthesizer

        if EspeakSynthesizer.available():
            engines["espeak"] = EspeakSynthesizer()
        else:
            _LOG.warning("espeak-ng not found (apt-get install espeak-ng); its voices are unavailable")
    return engines


class VoiceTable:
    """Resolves voice names to ``(synthesizer, voice_id)``.

    ``engines``: installed engines by name (``piper``, ``kokoro``, ``espeak``, or any other
    ``Synthesizer``). ``overrides``: entries replacing or adding to the default table (see the
    module doc); an override naming a missing engine or voice raises ``VoiceConfigError``.
    """

    def __init__(
        self,
        engines: Mapping[str, Synthesizer],
        overrides: Mapping[str, str | Mapping[str, Any] | VoiceSpec] | None = None,
        *,
        allow_direct: bool = True,
    ) -> None:
        if not engines:
            raise VoiceConfigError("no TTS engine is installed")
        self.engines = dict(engines)
        self.allow_direct = allow_direct
        self._specs: dict[str, VoiceSpec] = {}
        for name, choices in DEFAULT_PREFERENCES.items():
            spec = self._first_available(choices)
            if spec is None:
                spec = self._fallback()
            self._specs[name] = spec
        for name, value in (overrides or {}).items():
            if not name or not name.strip():
                raise VoiceConfigError("voice names must not be empty")
            spec = VoiceSpec.parse(value)
            self._check(spec, name)
            self._specs[name] = spec
        self._resolved: dict[tuple[str, str | None], tuple[Synthesizer, str]] = {}

    # ------------------------------------------------------------------ building

    def _first_available(self, choices: Iterable[str]) -> VoiceSpec | None:
        for ref in choices:
            spec = VoiceSpec.parse(ref)
            engine = self.engines.get(spec.engine)
            if engine is not None and _engine_has_voice(engine, spec.voice):
                return spec
        return None

    def _fallback(self) -> VoiceSpec:
        """Any installed voice, preferring Piper, so every built-in name resolves."""
        for name in ("piper", "kokoro", "espeak", *self.engines):
            engine = self.engines.get(name)
            if engine is not None and engine.voices():
                return VoiceSpec(name, engine.voices()[0].id)
        raise VoiceConfigError("no installed TTS engine has any voice")

    def _check(self, spec: VoiceSpec, name: str) -> None:
        engine = self.engines.get(spec.engine)
        if engine is None:
            raise VoiceConfigError(
                f"voice {name!r}: engine {spec.engine!r} is not enabled (enabled: {', '.join(self.engines)})"
            )
        if not _engine_has_voice(engine, spec.voice):
            raise VoiceConfigError(f"voice {name!r}: {spec.engine} has no voice {spec.voice!r}")
        if spec.pitch is not None and not getattr(engine, "supports_pitch", False):
            raise VoiceConfigError(f"voice {name!r}: engine {spec.engine!r} has no pitch setting")

    # ------------------------------------------------------------------ lookups

    def names(self) -> list[str]:
        """Configured voice names: the built-ins first, then custom ones."""
        return list(self._specs)

    def spec(self, name: str) -> VoiceSpec:
        return self._specs[name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.error_for(name) is None

    def error_for(self, name: str | Mapping[str, Any]) -> str | None:
        """The error text for a voice the table cannot speak, or None when it can."""
        try:
            self.resolve(name)
        except UnknownVoiceError as exc:
            return exc.message
        return None

    def resolve(self, name: str | Mapping[str, Any], language: str | None = None) -> tuple[Synthesizer, str]:
        """Return the synthesizer (text normalisation and any speed/pitch tweak applied) and
        its voice id.

        Accepts a voice name, a custom voice object ``{"id": ...}``, or ``engine:voice`` when
        direct references are allowed. Raises ``UnknownVoiceError`` with a message listing
        what is available. ``language`` (ISO 639-1, e.g. ``es``): the language of the text;
        when the name's voice does not speak it, a stand-in that does is chosen (see
        :meth:`for_language`).
        """
        key = self._key(name)
        lang = _language(language) if language else None
        cached = self._resolved.get((key, lang))
        if cached is not None:
            return cached
        spec = self._specs.get(key)
        if spec is None:
            spec = self._direct(key)
        if lang is not None:
            spec = self.for_language(spec, lang, gender=_gender_of(spec, key))
        engine = self.engines[spec.engine]
        own = voice_languages(engine, spec.voice)
        speaking = lang if lang is not None and lang in own else own[0]
        synth: Synthesizer = TunedSynthesizer(
            engine,
            speed=spec.speed,
            pitch=spec.pitch,
            language=speaking if len(own) > 1 or speaking != "en" else None,
        )
        result = (synth, spec.voice)
        self._resolved[(key, lang)] = result
        return result

    def for_language(self, spec: VoiceSpec, language: str, *, gender: str = "female") -> VoiceSpec:
        """A voice for ``language``: ``spec`` itself when it speaks it, else the neural voice
        of the same gender that does (Kokoro's speak several), else espeak-ng's voice for the
        language with a variant of that gender, else ``spec`` (speaking its own language)."""
        lang = _language(language)
        engine = self.engines.get(spec.engine)
        if engine is not None and lang in voice_languages(engine, spec.voice):
            return spec
        for name, engine in self.engines.items():
            if not getattr(engine, "neural", False):
                continue
            candidates = [v.id for v in engine.voices() if lang in voice_languages(engine, v.id)]
            if not candidates:
                continue
            same = [v for v in candidates if _gender_of(VoiceSpec(name, v), "") == gender]
            return VoiceSpec(name, (same or candidates)[0], spec.speed)
        espeak = self.engines.get("espeak")
        if espeak is not None:
            base = _ESPEAK_LANGUAGE_VOICES.get(lang, lang)
            variant = spec.voice.partition("+")[2] if spec.engine == "espeak" else ESPEAK_VARIANTS[gender]
            voice = f"{base}+{variant}" if variant else base
            if _engine_has_voice(espeak, voice):
                return VoiceSpec("espeak", voice, spec.speed, spec.pitch if spec.engine == "espeak" else None)
        return spec

    def languages(self) -> dict[str, list[str]]:
        """Every language some voice speaks -> the engines that speak it, neural first."""
        found: dict[str, list[str]] = {}
        for name, engine in sorted(self.engines.items(), key=lambda kv: not getattr(kv[1], "neural", False)):
            spoken = getattr(engine, "spoken_languages", None)
            langs: set[str] = set(spoken()) if callable(spoken) else set()
            for info in engine.voices():
                langs.update(voice_languages(engine, info.id))
            for lang in sorted(langs):
                found.setdefault(lang, []).append(name)
        return found

    def _key(self, name: str | Mapping[str, Any]) -> str:
        if isinstance(name, Mapping):
            vid = name.get("id")
            if not isinstance(vid, str) or not vid:
                raise UnknownVoiceError("A custom voice must be an object with a string 'id'.")
            return vid
        if not isinstance(name, str) or not name.strip():
            raise UnknownVoiceError("The voice must be a non-empty string.")
        return name.strip()

    def _direct(self, key: str) -> VoiceSpec:
        available = ", ".join(self._specs)
        if self.allow_direct and ":" in key:
            spec = VoiceSpec.parse(key)
            engine = self.engines.get(spec.engine)
            if engine is None:
                raise UnknownVoiceError(
                    f"Invalid voice '{key}': TTS engine '{spec.engine}' is not enabled on this server "
                    f"(enabled: {', '.join(self.engines)})."
                )
            if not _engine_has_voice(engine, spec.voice):
                some = ", ".join(v.id for v in engine.voices()[:8])
                raise UnknownVoiceError(
                    f"Invalid voice '{key}': {spec.engine} has no voice '{spec.voice}' (has: {some})."
                )
            return spec
        hint = " or 'engine:voice' (e.g. 'espeak:en-us+f3')" if self.allow_direct else ""
        raise UnknownVoiceError(f"Invalid voice '{key}'. Supported voices: {available}{hint}.")

    @staticmethod
    def _voice_detail(engine: Synthesizer, voice: str) -> str:
        describe = getattr(engine, "describe_voice", None)
        if callable(describe):
            return str(describe(voice))
        infos = {v.id: v.description for v in engine.voices()}
        if voice in infos:
            return infos[voice]
        for sep in ("+", "#"):
            base, found, rest = voice.partition(sep)
            if found and base in infos:
                return f"{infos[base].split(';')[0]}, variant {rest}"
        return f"{engine.name} {voice}"

    def describe(self) -> list[dict[str, Any]]:
        """One row per configured name, for ``GET /v1/voices``."""
        rows: list[dict[str, Any]] = []
        for name, spec in self._specs.items():
            engine = self.engines[spec.engine]
            detail = self._voice_detail(engine, spec.voice)
            row: dict[str, Any] = {
                "name": name,
                "engine": spec.engine,
                "voice": spec.voice,
                "description": spec.description or detail,
                "sample_rate": engine.sample_rate,
                "builtin": name in OPENAI_VOICES,
                "neural": bool(getattr(engine, "neural", False)),
                "languages": list(voice_languages(engine, spec.voice)),
            }
            figures = measured(spec.engine, spec.voice)
            if figures is not None:
                row["measured"] = figures
            if spec.speed != 1.0:
                row["speed"] = spec.speed
            if spec.pitch is not None:
                row["pitch"] = spec.pitch
            rows.append(row)
        return rows
