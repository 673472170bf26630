"""``openrealtime replay``: speak a recorded session's caller turns into a server again and
see what changed.

Each recorded turn's caller audio (from a little before the detected start of speech to a
little after its end) is spoken by the benchmark's caller at real-time pace, one turn after
the other, each after the previous answer has been played, with the recorded session
configuration (the one in force when the caller first spoke, merged with ``--session-config``
when given). Function calls are answered with the recorded results, matched by name and
order (the *n*-th call of ``f`` in the replay gets the *n*-th recorded result of ``f``),
followed by the ``response.create`` the recorded client sent. Barge-in timing is not
re-enacted: turns are spoken in sequence.

The report compares each turn with the recording (transcript, answer, tool calls,
voice-to-voice latency and stage timings, before and after) and writes JSON and a PNG.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml  # type: ignore[import-untyped]
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..benchmark.audio import Utterance
from ..benchmark.caller import CallerSettings, run_session
from ..benchmark.machine import machine_info
from ..benchmark.runner import default_out_dir
from ..benchmark.server import BenchServer
from ..protocol.session import merge_session_update
from .bundle import Bundle, read_bundle
from .journal import RATE
from .replay_report import compare_turn, plot_replay, print_replay, recorded_result, totals
from .turns import RecordedTurn, ToolCall, replay_session

__all__ = ["RecordedTools", "ReplayOptions", "load_recording", "replay_config", "replay_plan", "run_replay"]

LEAD_MS = 300
"""Recorded audio kept before the detected start of speech (the server's prefix padding)."""
TAIL_MS = 200
"""Recorded audio kept after the detected end of speech (then room tone, as the bench sends)."""
PCM = {"type": "audio/pcm", "rate": RATE}


@dataclass
class ReplayOptions:
    recordings: list[str]
    """Bundle files (``GET /v1/recordings/{id}``), or recording ids fetched from ``url``."""
    url: str
    api_key: str
    session_config: Path | None = None
    server_log: Path | None = None
    """The target server's log, for its per-stage timings (as ``openrealtime bench`` reads them)."""
    out: Path | None = None
    name: str = "replay"
    chunk_ms: int = 40
    pause_ms: int = 300
    turn_timeout_s: float = 60.0
    command: str = ""
    fetched: dict[str, Path] = field(default_factory=dict)


def _http_base(url: str) -> str:
    base = url.rstrip("/")
    if base.startswith("ws"):
        base = "http" + base.removeprefix("ws")
    return base.removesuffix("/v1")


def load_recording(source: str, url: str | None = None, api_key: str | None = None) -> Bundle:
    """A bundle from a file, or fetched by recording id from ``url``'s ``/v1/recordings/{id}``."""
    path = Path(source)
    if path.is_file():
        return read_bundle(path)
    if url is None or not source.startswith("rec_"):
        raise ValueError(f"{source}: no such bundle file (or give a recording id rec_… and --url)")
    response = httpx.get(
        f"{_http_base(url)}/v1/recordings/{source}",
        headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
        timeout=120.0,
    )
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        raise ValueError(f"{source}: the server answered {response.status_code}: {message}")
    return read_bundle(response.content)


def _read_override(path: Path) -> dict[str, Any]:
    text = path.read_text()
    data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    if isinstance(data, Mapping) and data.get("type") == "session.update":
        data = data.get("session")
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a session object (or a session.update event)")
    return dict(data)


def replay_config(
    recorded: Mapping[str, Any] | None, override: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ``session`` to replay with: the recorded configuration, the override merged over it
    (``session.update`` rules), audio as 24 kHz PCM both ways (what the caller speaks and
    times). Turns must be detected by the server (``server_vad`` or ``semantic_vad``)."""
    session = replay_session(recorded)
    if override:
        session = merge_session_update(session, dict(override))
    if session.get("type") == "transcription":
        raise ValueError("a transcription session has no answers to replay")
    audio = session.setdefault("audio", {})
    audio.setdefault("input", {})["format"] = dict(PCM)
    audio.setdefault("output", {})["format"] = dict(PCM)
    if not audio["input"].get("turn_detection"):
        raise ValueError("replay needs server turn detection (server_vad or semantic_vad) in the session")
    return session


def replay_plan(bundle: Bundle) -> tuple[list[Utterance], list[RecordedTurn]]:
    """The caller turns to speak (with the recorded transcripts as references) and the turns
    they replay; turns without a detected end of speech are left out."""
    if not bundle.has_audio:
        raise ValueError(
            f"{bundle.recording_id} was recorded without audio (metadata mode): nothing to speak"
        )
    plan: list[Utterance] = []
    turns: list[RecordedTurn] = []
    spoken_until = 0
    recorded = [t for t in bundle.turns if t.audio_end_ms is not None]
    for position, turn in enumerate(recorded):
        assert turn.audio_end_ms is not None
        start = max(spoken_until, (turn.audio_start_ms - LEAD_MS) * RATE // 1000, 0)
        end = (turn.audio_end_ms + TAIL_MS) * RATE // 1000
        if position + 1 < len(recorded):
            end = min(end, max(start, (recorded[position + 1].audio_start_ms - LEAD_MS) * RATE // 1000))
        pcm = bundle.caller_audio(start, end)
        if pcm.size == 0:
            continue
        speech_end_ms = turn.audio_end_ms - start * 1000 / RATE
        plan.append(Utterance(f"turn {turn.index + 1}", pcm, speech_end_ms, turn.transcript))
        turns.append(turn)
        spoken_until = end
    if not plan:
        raise ValueError(f"{bundle.recording_id} has no caller turns detected by the server")
    return plan, turns


class RecordedTools:
    """Answers the replay's function calls with the recording's results, by name and order."""

    def __init__(self, turns: Sequence[RecordedTurn]) -> None:
        self._by_name: dict[str, collections.deque[ToolCall]] = collections.defaultdict(collections.deque)
        for turn in turns:
            for call in turn.tool_calls:
                self._by_name[call.name].append(call)
        self.unmatched: list[str] = []

    def __call__(self, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        followup: dict[str, Any] | None = None
        for call in calls:
            name = str(call.get("name") or "")
            queue = self._by_name.get(name)
            recorded = queue.popleft() if queue else None
            if recorded is None or recorded.output is None:
                self.unmatched.append(name)
                output = json.dumps({"error": f"the recording has no result for this call of {name}"})
            else:
                output = recorded.output
                followup = recorded.followup or followup
            events.append(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "function_call_output",
                        "call_id": call.get("call_id"),
                        "output": output,
                    },
                }
            )
        create = {k: v for k, v in (followup or {"type": "response.create"}).items() if k != "event_id"}
        events.append(create)
        return events


async def _replay_one(
    bundle: Bundle,
    server: BenchServer,
    options: ReplayOptions,
    override: dict[str, Any] | None,
    progress: Progress,
) -> dict[str, Any]:
    plan, recorded = replay_plan(bundle)
    session = replay_config(bundle.session, override)
    tools = RecordedTools(recorded)
    task = progress.add_task(f"replaying {bundle.recording_id}", total=len(plan))
    settings = CallerSettings(
        turns=len(plan),
        chunk_ms=options.chunk_ms,
        pause_ms=options.pause_ms,
        turn_timeout_s=options.turn_timeout_s,
    )
    replayed = await run_session(
        server,
        plan,
        settings,
        session=0,
        plan=plan,
        session_config=session,
        tools=tools,
        on_turn=lambda _result: progress.advance(task),
    )
    await asyncio.sleep(0.5)  # the server logs a response's timings just after its response.done
    timings = server.turn_timings()
    for result in replayed:
        result.server = timings.get(result.response_id or "", {})
    before = [recorded_result(turn) for turn in recorded]
    turns = [compare_turn(old, new) for old, new in zip(before, replayed, strict=True)]
    return {
        "recording_id": bundle.recording_id,
        "recording": bundle.manifest["recording"],
        "session": session,
        "turn_count": len(turns),
        "unmatched_tool_calls": tools.unmatched,
        "turns": turns,
        "_results": (before, replayed),
    }


def run_replay(options: ReplayOptions, console: Console | None = None) -> dict[str, Any]:
    """Replay every recording; write ``<name>-<timestamp>.json/.png`` and ``<name>-latest.*``."""
    console = console or Console()
    override = _read_override(options.session_config) if options.session_config else None
    bundles = [load_recording(source, options.url, options.api_key) for source in options.recordings]
    out_dir = options.out or default_out_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    server = BenchServer(options.url, options.api_key, options.server_log)
    machine = machine_info("openrealtime")
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("turns"),
        TimeElapsedColumn(),
        console=console,
    )
    sections: list[dict[str, Any]] = []
    try:
        with progress:
            for bundle in bundles:
                sections.append(asyncio.run(_replay_one(bundle, server, options, override, progress)))
    finally:
        for bundle in bundles:
            bundle.close()
    before = [r for section in sections for r in section["_results"][0]]
    after = [r for section in sections for r in section["_results"][1]]
    for section in sections:
        section.pop("_results")
    machine["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    report: dict[str, Any] = {
        "replay": "openrealtime replay",
        "schema_version": 1,
        "command": options.command or " ".join(sys.argv),
        "started_at": started,
        "machine": machine,
        "target": {
            "url": options.url,
            "session_config": str(options.session_config) if options.session_config else None,
            "server_log": str(options.server_log) if options.server_log else None,
        },
        "definition": (
            "voice-to-voice = end of the caller's speech -> first answer audio. Recorded: on the recording "
            "server's clock (the arrival of the last speech sample -> the first audio delta sent, or playback "
            "start on WebRTC/SIP). Replayed: on this client's clock (the capture of the last speech sample, "
            "real-time paced -> the first audio delta received)."
        ),
        "recordings": sections,
        "totals": totals(before, after, [turn for section in sections for turn in section["turns"]]),
    }
    stem = out_dir / f"{options.name}-{started}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    plot_replay(report, stem.with_suffix(".png"))
    for suffix in (".json", ".png"):
        shutil.copyfile(stem.with_suffix(suffix), out_dir / f"{options.name}-latest{suffix}")
    console.print()
    print_replay(console, report)
    console.print(f"wrote {stem}.json and {stem}.png (and {out_dir / options.name}-latest.*)")
    if not any(result.status for result in after):
        errors = report["totals"]["errors"]
        raise RuntimeError(f"no replayed turn got an answer ({'; '.join(errors[:3]) or 'no errors seen'})")
    return report
