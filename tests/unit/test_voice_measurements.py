"""Published voice measurements reach GET /v1/voices rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openrealtime.engines.tts import measured as measured_module
from openrealtime.engines.tts.measured import MEASUREMENTS_FILE, measured, record


def test_record_merges_and_measured_reads(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    assert measured("piper", "joe", path) is None
    record({"piper:joe": {"rtf_idle": 0.2, "measured_on": "x"}}, path)
    record({"piper:joe": {"codes_read_back": "48/50"}, "espeak:en-us": {"rtf_idle": 0.01}}, path)
    assert measured("piper", "joe", path) == {"rtf_idle": 0.2, "measured_on": "x", "codes_read_back": "48/50"}
    assert measured("espeak", "en-us", path) == {"rtf_idle": 0.01}
    assert list(json.loads(path.read_text())["voices"]) == ["espeak:en-us", "piper:joe"]


def test_a_broken_file_is_no_measurement(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text("{not json")
    assert measured("piper", "joe", path) is None


def test_the_shipped_file_covers_the_default_voices() -> None:
    """Every voice the default names map to on this machine has published figures."""
    data = json.loads(MEASUREMENTS_FILE.read_text())["voices"]
    for key in ("piper:en_US-joe-medium", "kokoro:jf_alpha"):
        figures = data[key]
        assert {"first_chunk_ms_p50", "rtf_idle", "round_trip_wer", "measured_on", "command"} <= set(figures)


def test_describe_adds_the_figures(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from openrealtime.engines.tts import voices

    path = tmp_path / "m.json"
    record({"espeak:en-us+klatt": {"rtf_idle": 0.01}}, path)
    monkeypatch.setattr(voices, "measured", lambda e, v: measured_module.measured(e, v, path))
    table = voices.VoiceTable(voices.default_engines(piper=False, kokoro=False))
    assert "espeak" in table.engines  # espeak-ng comes with the set-up (scripts/system-deps.sh)
    rows = {row["name"]: row for row in table.describe()}
    assert rows["echo"]["measured"] == {"rtf_idle": 0.01}
    assert "measured" not in rows["ballad"]
