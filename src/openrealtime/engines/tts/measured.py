"""What the voice benchmarks measured per voice, for ``GET /v1/voices`` and the README table.

``bench/voices.py --publish`` (first chunk, real-time factor idle and while another session
is active, CPU seconds per audio second, round-trip WER through the server's ASR) and
``bench/code_readback.py --publish`` (codes read back exactly) write their figures here, keyed
``engine:voice``, with the machine and the command that measured them; the voice table adds
them to each row it describes. The figures are a record of one machine, not a promise: the
row says where and when.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["MEASUREMENTS_FILE", "measured", "record"]

MEASUREMENTS_FILE = Path(__file__).with_name("voice_measurements.json")


@cache
def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def measured(engine: str, voice: str, path: Path = MEASUREMENTS_FILE) -> dict[str, Any] | None:
    """The published figures for ``engine:voice`` (``None``: never measured)."""
    entry = _load(path).get("voices", {}).get(f"{engine}:{voice}")
    return dict(entry) if isinstance(entry, dict) else None


def record(figures: dict[str, dict[str, Any]], path: Path = MEASUREMENTS_FILE) -> None:
    """Merge ``figures`` (``engine:voice`` -> named figures, each with its ``measured_on``
    machine and ``command``) into the published file, keeping other voices and figures."""
    data = dict(_load(path))
    voices: dict[str, Any] = {k: dict(v) for k, v in data.get("voices", {}).items()}
    for key, values in figures.items():
        voices.setdefault(key, {}).update(values)
    data["voices"] = dict(sorted(voices.items()))
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    _load.cache_clear()
