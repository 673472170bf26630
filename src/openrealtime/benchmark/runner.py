"""The concurrency sweep behind ``openrealtime bench``: levels 1, 2, 4, ... of simultaneous
voice sessions until p95 voice-to-voice passes the limit, audio underruns, or the maximum.

Each level runs its sessions at once (their starts spread over one second, as callers do not
dial in the same millisecond); each session speaks several turns. The first level that misses
ends the sweep; the answer is the highest level that held.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .audio import Utterance, bundled_utterances, load_utterance
from .caller import CallerSettings, TurnResult, run_session
from .machine import machine_info
from .report import level_summary, plot_report
from .server import BenchServer, start_server
from .stats import percentile, sweep_levels

__all__ = ["BenchOptions", "default_out_dir", "run_benchmark"]

MACHINE_PACKAGES = ("openrealtime", "llama-cpp-python", "faster-whisper", "piper-tts", "onnxruntime")


@dataclass
class BenchOptions:
    audio: list[Path] = field(default_factory=list)
    """Audio files to speak; empty means the bundled samples."""
    utterances: list[Utterance] | None = None
    """Ready utterances (e.g. with annotated speech edges); they replace ``audio``."""
    url: str | None = None
    """A running server; ``None`` starts one on a free loopback port."""
    api_key: str | None = None
    max_concurrency: int = 8
    levels: list[int] | None = None
    """Explicit levels (all run, no stop rule); default: the 1, 2, 4, ... sweep."""
    p95_limit_ms: float = 1500.0
    keep_going: bool = False
    """Run every level even after one missed (to see the whole curve)."""
    turns: int = 3
    """Turns per session."""
    min_turns: int = 8
    """Turns per level at least: a session does more turns at low levels to reach it."""
    silence_ms: int = 300
    turn_detection: list[str] = field(default_factory=lambda: ["server_vad"])
    """Turn detection modes to measure, one sweep each, on the same server, in this order."""
    eagerness: str = "auto"
    """``semantic_vad`` eagerness."""
    chunk_ms: int = 40
    warm_up: bool = True
    serve_args: list[str] = field(default_factory=list)
    out: Path | None = None
    name: str = "bench"
    """Output file stem: ``<name>-<timestamp>.json/.png`` and ``<name>-latest.json/.png``."""
    command: str = ""
    server_env: dict[str, str] = field(default_factory=dict)
    """Settings for the self-started server's environment."""
    compare: str | None = None
    """``preemptive`` or ``batching``: run everything twice, on a server with the feature on and
    one with it off, and print both side by side (``compare.py``)."""


def default_out_dir(start: Path | None = None) -> Path:
    """``bench/results`` of the openrealtime checkout around ``start`` (the working directory),
    else ``start`` itself."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if (
            (folder / "bench").is_dir()
            and pyproject.is_file()
            and 'name = "openrealtime"' in pyproject.read_text()
        ):
            return folder / "bench" / "results"
    return here


class _Display:
    """Progress bar per level and a live table of each level's p50 / p95 / underruns."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("turns"),
            TimeElapsedColumn(),
            console=console,
        )
        self.rows: dict[int, list[TurnResult]] = {}
        self.verdicts: dict[int, str] = {}
        self.live = Live(self.render(), console=console, refresh_per_second=4)

    def render(self) -> Group:
        table = Table(title="voice-to-voice latency per concurrency level")
        for column in ("sessions", "turns", "p50 ms", "p95 ms", "underruns", "no answer", "verdict"):
            table.add_column(column, justify="right" if column != "verdict" else "left")
        for level, turns in self.rows.items():
            v2v = [t.voice_to_voice_ms for t in turns if t.voice_to_voice_ms is not None]
            p50, p95 = percentile(v2v, 0.5), percentile(v2v, 0.95)
            table.add_row(
                str(level),
                str(len(turns)),
                "-" if p50 is None else f"{p50:.0f}",
                "-" if p95 is None else f"{p95:.0f}",
                str(sum(t.underruns for t in turns)),
                str(len(turns) - len(v2v)),
                self.verdicts.get(level, "running"),
            )
        return Group(self.progress, table)

    def refresh(self) -> None:
        self.live.update(self.render())

    @contextlib.contextmanager
    def running(self) -> Iterator[_Display]:
        with self.live:
            yield self


async def _run_level(
    server: BenchServer,
    utterances: list[Utterance],
    settings: CallerSettings,
    concurrency: int,
    on_turn: Any,
) -> list[TurnResult]:
    sessions = [
        run_session(
            server,
            utterances,
            settings,
            session=index,
            start_delay_s=index / concurrency,
            on_turn=on_turn,
        )
        for index in range(concurrency)
    ]
    per_session = await asyncio.gather(*sessions)
    return [turn for turns in per_session for turn in turns]


def _load_utterances(paths: list[Path]) -> list[Utterance]:
    if not paths:
        return bundled_utterances()
    return [load_utterance(path) for path in paths]


def _sweep(
    options: BenchOptions, server: BenchServer, display: _Display, turn_detection: str = "server_vad"
) -> list[dict[str, Any]]:
    utterances = options.utterances or _load_utterances(options.audio)
    base = CallerSettings(
        turns=options.turns,
        silence_ms=options.silence_ms,
        chunk_ms=options.chunk_ms,
        turn_detection=turn_detection,
        eagerness=options.eagerness,
    )
    explicit = options.levels is not None
    levels = options.levels or sweep_levels(options.max_concurrency)
    if options.warm_up:
        task = display.progress.add_task("warm-up (not counted)", total=1)
        warm = dataclasses.replace(base, turns=1)
        asyncio.run(_run_level(server, utterances, warm, 1, lambda _t: display.progress.advance(task)))
    summaries = []
    for concurrency in levels:
        turns = max(options.turns, math.ceil(options.min_turns / concurrency))
        settings = dataclasses.replace(base, turns=turns)
        task = display.progress.add_task(f"{concurrency} session(s) at once", total=concurrency * turns)
        display.rows[concurrency] = []
        display.refresh()

        def on_turn(result: TurnResult, task: Any = task, concurrency: int = concurrency) -> None:
            display.rows[concurrency].append(result)
            display.progress.advance(task)
            display.refresh()

        results = asyncio.run(_run_level(server, utterances, settings, concurrency, on_turn))
        time.sleep(0.5)  # the server logs a response's timings just after its response.done
        timings = server.turn_timings()
        for result in results:
            result.server = timings.get(result.response_id or "", {})
        summary = level_summary(concurrency, results, options.p95_limit_ms)
        summaries.append(summary)
        display.verdicts[concurrency] = "held" if summary["held"] else "missed: " + summary["verdict"]
        display.refresh()
        if not summary["held"] and not (explicit or options.keep_going):
            break
    return summaries


def _held(levels: list[dict[str, Any]]) -> int | None:
    """The highest level reached with every level up to it held."""
    held = None
    for level in levels:
        if not level["held"]:
            break
        held = level["concurrency"]
    return held


def run_benchmark(options: BenchOptions, console: Console | None = None) -> dict[str, Any]:
    """Run the sweep, write ``<name>-<timestamp>.json/.png`` and ``<name>-latest.*``; the report."""
    console = console or Console()
    if options.compare is not None:
        from .compare import run_comparison

        return run_comparison(options, console, run_benchmark)
    if options.url is not None and not options.api_key:
        raise ValueError("--url needs --api-key (or OPENAI_API_KEY)")
    out_dir = options.out or default_out_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    display = _Display(console)
    with contextlib.ExitStack() as stack:
        if options.url is None:
            console.print("starting openrealtime serve on a free loopback port (embedded models) ...")
            server = stack.enter_context(start_server(options.serve_args, env=options.server_env))
        else:
            assert options.api_key is not None
            server = BenchServer(options.url, options.api_key)
        machine = machine_info(*MACHINE_PACKAGES)
        by_mode: dict[str, list[dict[str, Any]]] = {}
        for mode in options.turn_detection:
            if len(options.turn_detection) > 1:
                console.print(f"[bold]{mode}[/]")
                display = _Display(console)
            with display.running():
                by_mode[mode] = _sweep(options, server, display, mode)
        levels = by_mode[options.turn_detection[0]]
        console.print()
        machine["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    config: dict[str, Any] = {
        "audio": [u.name for u in options.utterances or []]
        or [str(p) for p in options.audio]
        or ["bundled samples"],
        "server": "self-started" if options.url is None else options.url,
        "serve_args": options.serve_args,
        "levels": options.levels or sweep_levels(options.max_concurrency),
        "max_concurrency": options.max_concurrency,
        "p95_limit_ms": options.p95_limit_ms,
        "keep_going": options.keep_going,
        "turns_per_session": options.turns,
        "min_turns_per_level": options.min_turns,
        "silence_ms": options.silence_ms,
        "turn_detection": options.turn_detection,
        "eagerness": options.eagerness,
        "chunk_ms": options.chunk_ms,
        "warm_up": options.warm_up,
        "server_env": options.server_env,
    }
    held = _held(levels)
    report: dict[str, Any] = {
        "benchmark": "openrealtime bench",
        "schema_version": 1,
        "command": options.command or " ".join(sys.argv),
        "started_at": started,
        "machine": machine,
        "config": config,
        "definition": (
            "voice-to-voice = end of the user's speech in the sent audio (the instant its last speech "
            "sample was captured, real-time paced) -> first response.output_audio.delta received. "
            "Underrun = an audio delta arriving after the client finished playing everything before it "
            "(playback in real time from the first delta)."
        ),
        "held_concurrency": held,
        "stop_reason": next(
            (f"{lv['concurrency']}: {lv['verdict']}" for lv in levels if not lv["held"]), None
        ),
        "levels": levels,
        "by_turn_detection": {
            mode: [
                {
                    k: level[k]
                    for k in (
                        "concurrency",
                        "turn_count",
                        "answered",
                        "p50_ms",
                        "p95_ms",
                        "underruns",
                        "verdict",
                    )
                }
                | {
                    "speech_stopped_p50_ms": level["stages_ms_after_speech_end"]
                    .get("speech_stopped", {})
                    .get("p50")
                }
                for level in mode_levels
            ]
            for mode, mode_levels in by_mode.items()
        },
        # every turn of the other modes too (``levels`` holds the first mode's)
        "levels_by_turn_detection": {mode: by_mode[mode] for mode in options.turn_detection[1:]},
    }
    _write(report, out_dir, f"{options.name}-{started}", options.name)
    _print_summary(console, report, out_dir / f"{options.name}-{started}", options.name)
    if not any(level["answered"] for level in levels):
        errors = sorted({error for level in levels for error in level["errors"]})
        raise RuntimeError(f"no turn got an answer ({'; '.join(errors[:3]) or 'no errors seen'})")
    return report


def _write(report: dict[str, Any], out_dir: Path, stem: str, name: str) -> None:
    import json

    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    plot_report(report, out_dir / f"{stem}.png")
    for suffix in (".json", ".png"):
        shutil.copyfile(out_dir / f"{stem}{suffix}", out_dir / f"{name}-latest{suffix}")


def _print_summary(console: Console, report: dict[str, Any], stem: Path, name: str) -> None:
    limit = report["config"]["p95_limit_ms"]
    for level in report["levels"]:
        stages = {k: v["p50"] for k, v in level["stages_ms_after_speech_end"].items()}
        stage_text = ", ".join(f"{k} {v:.0f}" for k, v in stages.items() if v is not None)
        p50, p95 = level["p50_ms"], level["p95_ms"]
        latency = "no answers" if p50 is None else f"p50 {p50:.0f} ms, p95 {p95:.0f} ms"
        console.print(
            f"{level['concurrency']} session(s): {level['turn_count']} turns, {latency}, "
            f"{level['underruns']} underruns — {level['verdict']}\n  stage p50s (ms after end of speech): {stage_text}"
        )
        if level["errors"]:
            console.print(f"  errors: {'; '.join(level['errors'][:3])}")
    held = report["held_concurrency"]
    if held is None:
        console.print(
            f"[bold]No level held p95 <= {limit:.0f} ms without underruns[/] ({report['stop_reason']})."
        )
    else:
        level = next(lv for lv in report["levels"] if lv["concurrency"] == held)
        console.print(
            f"[bold]Held {held} concurrent session(s)[/] at p95 {level['p95_ms']:.0f} ms <= {limit:.0f} ms "
            f"without underruns"
            + (f"; stopped at {report['stop_reason']}" if report["stop_reason"] else "")
            + "."
        )
    modes = report["by_turn_detection"]
    if len(modes) > 1:
        console.print(
            "voice-to-voice by turn detection ("
            + report["config"]["eagerness"]
            + " eagerness for semantic_vad):"
        )
        for mode, mode_levels in modes.items():
            for level in mode_levels:
                p50, p95 = level["p50_ms"], level["p95_ms"]
                text = "no answers" if p50 is None else f"p50 {p50:.0f} ms, p95 {p95:.0f} ms"
                console.print(
                    f"  {mode:13s} {level['concurrency']} session(s): {text} ({level['turn_count']} turns)"
                )
    console.print(f"wrote {stem}.json and {stem}.png (and {stem.parent / name}-latest.*)")
