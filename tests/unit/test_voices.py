from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from openrealtime.engines.base import CancelToken, PcmAudio, Synthesizer, VoiceInfo
from openrealtime.engines.tts.voices import (
    DEFAULT_PREFERENCES,
    OPENAI_VOICES,
    TunedSynthesizer,
    UnknownVoiceError,
    VoiceConfigError,
    VoiceSpec,
    VoiceTable,
)


class FakeSynth:
    """Records calls; knows a fixed set of voices (``+variant`` accepted when ``variants``)."""

    def __init__(self, name: str, voices: list[str], *, rate: int = 22050, pitch: bool = False) -> None:
        self.name = name
        self.sample_rate = rate
        self._ids = voices
        self.supports_pitch = pitch
        self.calls: list[dict[str, Any]] = []

    def voices(self) -> list[VoiceInfo]:
        return [VoiceInfo(id=v, engine=self.name, description=f"{self.name} {v}") for v in self._ids]

    def has_voice(self, voice: str) -> bool:
        base, _, variant = voice.partition("+")
        return base in self._ids and (not variant or self.supports_pitch)

    def synthesize(
        self,
        text: str,
        *,
        voice: str,
        speed: float = 1.0,
        cancel: CancelToken | None = None,
        **extra: Any,
    ) -> Iterator[PcmAudio]:
        self.calls.append({"text": text, "voice": voice, "speed": speed, **extra})
        yield np.zeros(10, dtype=np.int16)


def piper() -> FakeSynth:
    return FakeSynth("piper", ["en_US-joe-medium"])


def espeak() -> FakeSynth:
    return FakeSynth("espeak", ["en-us", "en-gb-x-rp", "en"], pitch=True)


def kokoro() -> FakeSynth:
    return FakeSynth(
        "kokoro", ["jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"], rate=24000
    )


def refs(table: VoiceTable) -> dict[str, str]:
    return {name: table.spec(name).ref for name in table.names()}


def test_fake_is_a_synthesizer() -> None:
    assert isinstance(piper(), Synthesizer)


def test_default_table_piper_and_espeak() -> None:
    table = VoiceTable({"piper": piper(), "espeak": espeak()})
    mapping = refs(table)
    assert list(mapping) == list(OPENAI_VOICES)
    assert mapping["marin"] == mapping["cedar"] == mapping["alloy"] == "piper:en_US-joe-medium"
    assert mapping["ash"] == "piper:en_US-joe-medium"  # openai-agents' default: neural, not robotic
    for name in ("ballad", "coral", "echo", "sage", "shimmer", "verse"):
        assert mapping[name].startswith("espeak:"), name
    espeak_voices = [v for v in mapping.values() if v.startswith("espeak:")]
    assert len(set(espeak_voices)) == len(espeak_voices), "espeak stand-ins should all differ"


def test_default_table_with_kokoro_puts_marin_on_kokoro() -> None:
    mapping = refs(VoiceTable({"piper": piper(), "kokoro": kokoro(), "espeak": espeak()}))
    assert mapping["marin"] == "kokoro:jf_alpha"
    assert mapping["cedar"] == "piper:en_US-joe-medium"
    assert sum(v.startswith("kokoro:") for v in mapping.values()) == 5


def test_default_table_without_piper_or_espeak() -> None:
    only_espeak = refs(VoiceTable({"espeak": espeak()}))
    assert only_espeak["marin"] == "espeak:en-us+f5"
    assert all(v.startswith("espeak:") for v in only_espeak.values())
    only_piper = refs(VoiceTable({"piper": piper()}))
    assert set(only_piper.values()) == {"piper:en_US-joe-medium"}


def test_every_default_preference_is_well_formed() -> None:
    assert set(DEFAULT_PREFERENCES) == set(OPENAI_VOICES)
    for choices in DEFAULT_PREFERENCES.values():
        for ref in choices:
            VoiceSpec.parse(ref)


def inner(synth: Synthesizer) -> Synthesizer:
    assert isinstance(synth, TunedSynthesizer)
    return synth.inner


def test_resolve_returns_engine_and_voice() -> None:
    p, e = piper(), espeak()
    table = VoiceTable({"piper": p, "espeak": e})
    synth, voice = table.resolve("marin")
    assert inner(synth) is p and voice == "en_US-joe-medium"
    synth, voice = table.resolve({"id": "echo"})
    assert inner(synth) is e and voice == "en-us+klatt"
    synth, voice = table.resolve("espeak:en-us+f3")
    assert inner(synth) is e and voice == "en-us+f3"
    assert table.resolve("marin")[0] is table.resolve("marin")[0]  # cached, same object


def test_synthesis_reads_codes_but_keeps_plain_text() -> None:
    p = piper()
    synth, voice = VoiceTable({"piper": p}).resolve("marin")
    list(synth.synthesize("Your code is A7X-4921.", voice=voice))
    assert p.calls[-1]["text"] == "Your code is A, number 7, X, dash, 49, 21."
    list(synth.synthesize("Hello there.", voice=voice))
    assert p.calls[-1]["text"] == "Hello there."


class MultilingualFake(FakeSynth):
    """A neural engine that speaks several languages (like Kokoro) and takes ``lang``."""

    neural = True
    supports_language = True

    def languages(self, voice: str) -> tuple[str, ...]:
        return ("en", "es", "fr")


class EspeakFake(FakeSynth):
    neural = False

    def languages(self, voice: str) -> tuple[str, ...]:
        return (voice.partition("+")[0].split("-")[0],)

    def has_voice(self, voice: str) -> bool:
        base = voice.partition("+")[0]
        return base in {"en-us", "en-gb-x-rp", "en", "es", "de", "fr"}


def test_a_voice_for_the_language() -> None:
    p, e = FakeSynth("piper", ["en_US-joe-medium"]), EspeakFake("espeak", ["en-us", "de"], pitch=True)
    p.neural = True  # type: ignore[attr-defined]
    k = MultilingualFake("kokoro", ["jf_alpha", "jm_kumo"], rate=24000)
    table = VoiceTable({"piper": p, "kokoro": k, "espeak": e})
    assert table.spec("cedar").ref == "piper:en_US-joe-medium"
    # cedar (male) in Spanish: Piper speaks only English, so Kokoro's male voice stands in
    synth, voice = table.resolve("cedar", language="es")
    assert inner(synth) is k and voice == "jm_kumo"
    list(synth.synthesize("Son 12 euros.", voice=voice))
    assert k.calls[-1] == {"text": "Son doce euros.", "voice": "jm_kumo", "speed": 1.0, "lang": "es"}
    # marin (female) in German: no neural voice speaks it, espeak-ng does with a female variant
    synth, voice = table.resolve("marin", language="de-DE")
    assert inner(synth) is e and voice == "de+f5"
    # English stays on the table's own voice
    synth, voice = table.resolve("cedar", language="en")
    assert inner(synth) is p and voice == "en_US-joe-medium"
    # a language nobody speaks keeps the voice
    synth, voice = table.resolve("cedar", language="xx")
    assert inner(synth) is p
    assert table.languages()["es"] == ["kokoro", "espeak"] or table.languages()["es"] == ["kokoro"]
    assert table.languages()["en"][:2] == ["piper", "kokoro"]


def test_overrides_replace_and_add() -> None:
    e = espeak()
    table = VoiceTable(
        {"piper": piper(), "espeak": e},
        {
            "marin": "espeak:en-us+f3",
            "voice_custom": {"engine": "espeak", "voice": "en-gb-x-rp+m2", "speed": 1.2, "pitch": 30},
            "narrator": {"voice": "piper:en_US-joe-medium", "description": "story time"},
        },
    )
    assert table.spec("marin").ref == "espeak:en-us+f3"
    assert table.names()[-2:] == ["voice_custom", "narrator"]
    synth, voice = table.resolve({"id": "voice_custom"})
    list(inner(synth).synthesize("warm", voice=voice))
    list(synth.synthesize("hi", voice=voice, speed=0.5))
    assert e.calls[-1] == {"text": "hi", "voice": "en-gb-x-rp+m2", "speed": pytest.approx(0.6), "pitch": 30}
    rows = {row["name"]: row for row in table.describe()}
    assert rows["voice_custom"]["pitch"] == 30 and rows["voice_custom"]["speed"] == 1.2
    assert rows["narrator"]["description"] == "story time"
    assert rows["marin"]["builtin"] is True and rows["narrator"]["builtin"] is False


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"marin": "flite:kal"}, "not enabled"),
        ({"marin": "piper:nobody"}, "no voice"),
        ({"marin": "joe"}, "engine:voice"),
        ({"marin": {"engine": "piper"}}, "needs 'engine' and 'voice'"),
        ({"marin": {"engine": "piper", "voice": "en_US-joe-medium", "pitch": 40}}, "pitch"),
        ({"marin": {"engine": "espeak", "voice": "en-us", "pitch": 140}}, "0..99"),
        ({"marin": {"engine": "espeak", "voice": "en-us", "speed": "fast"}}, "speed"),
        ({"marin": {"engine": "espeak", "voice": "en-us", "volume": 3}}, "unknown voice settings"),
        ({"": "espeak:en-us"}, "empty"),
    ],
)
def test_bad_overrides_fail_at_build_time(override: dict[str, Any], match: str) -> None:
    with pytest.raises(VoiceConfigError, match=match):
        VoiceTable({"piper": piper(), "espeak": espeak()}, override)


def test_no_engines_is_a_config_error() -> None:
    with pytest.raises(VoiceConfigError):
        VoiceTable({})


def test_unknown_voice_errors_are_client_facing() -> None:
    table = VoiceTable({"piper": piper(), "espeak": espeak()})
    with pytest.raises(UnknownVoiceError) as info:
        table.resolve("nova")
    err = info.value
    assert err.param == "session.audio.output.voice"
    assert err.code == "invalid_value" and err.type == "invalid_request_error"
    assert "Invalid voice 'nova'" in err.message
    for name in OPENAI_VOICES:
        assert name in err.message
    assert "flite" in (table.error_for("flite:kal") or "")
    assert "no voice 'zz'" in (table.error_for("piper:zz") or "")
    assert table.error_for({"id": 5}) is not None
    assert table.error_for("") is not None
    assert table.error_for("cedar") is None
    assert "cedar" in table and "nova" not in table


def test_direct_references_can_be_disabled() -> None:
    table = VoiceTable({"piper": piper(), "espeak": espeak()}, allow_direct=False)
    message = table.error_for("espeak:en-us") or ""
    assert "Invalid voice" in message and "engine:voice" not in message


def test_describe_rows() -> None:
    rows = VoiceTable({"piper": piper(), "espeak": espeak()}).describe()
    assert [r["name"] for r in rows] == list(OPENAI_VOICES)
    marin = dict(rows[OPENAI_VOICES.index("marin")])
    assert "first_chunk_ms_p50" in marin.pop("measured")  # published by bench/voices.py
    assert marin == {
        "name": "marin",
        "engine": "piper",
        "voice": "en_US-joe-medium",
        "description": "piper en_US-joe-medium",
        "sample_rate": 22050,
        "builtin": True,
        "neural": False,  # the fake does not say it is neural
        "languages": ["en"],
    }
    echo = rows[OPENAI_VOICES.index("echo")]
    assert echo["description"] == "espeak en-us, variant klatt"


def test_tuned_synthesizer_passes_through() -> None:
    p = piper()
    tuned = TunedSynthesizer(p, speed=1.5)
    assert tuned.name == "piper" and tuned.sample_rate == 22050 and tuned.voices() == p.voices()
    assert isinstance(tuned, Synthesizer)
    list(tuned.synthesize("x", voice="en_US-joe-medium", speed=0.8))
    assert p.calls[-1]["speed"] == pytest.approx(1.2) and "pitch" not in p.calls[-1]
    with pytest.raises(VoiceConfigError):
        TunedSynthesizer(p, pitch=10)
