"""``openrealtime bench --compare preemptive|batching``: the same clips with a feature on and off.

Each variant gets its own self-started server (the feature is a server setting) and the whole
sweep; then the levels both reached are printed side by side with the on/off ratio of p50 and
p95, and, for preemptive generation, the hit rate (turns answered by a released guess, from the
server's turn timings).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from .runner import BenchOptions

__all__ = ["COMPARISONS", "hit_rate", "run_comparison"]

COMPARISONS: dict[str, tuple[str, dict[str, str], dict[str, str]]] = {
    "preemptive": (
        "preemptive generation",
        {"OPENREALTIME_PREEMPTIVE": "true"},
        {"OPENREALTIME_PREEMPTIVE": "false"},
    ),
    "batching": (
        "LLM continuous batching",
        {"OPENREALTIME_LLM_PARALLEL": "8"},
        {"OPENREALTIME_LLM_PARALLEL": "1"},
    ),
}
"""name → (what it is, server settings for on, for off)."""


def hit_rate(level: dict[str, Any]) -> float | None:
    """Share of a level's answered turns whose answer was a released guess."""
    outcomes = [
        (turn.get("server") or {}).get("speculation")
        for turn in level.get("turns", [])
        if turn.get("voice_to_voice_ms") is not None
    ]
    return sum(o == "hit" for o in outcomes) / len(outcomes) if outcomes else None


def _ratio(on: float | None, off: float | None) -> str:
    return "-" if on is None or not off else f"{on / off:.2f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def run_comparison(
    options: BenchOptions, console: Console, run: Callable[[BenchOptions, Console], dict[str, Any]]
) -> dict[str, Any]:
    if options.compare not in COMPARISONS:
        raise ValueError(f"--compare: one of {', '.join(COMPARISONS)}")
    if options.url is not None:
        raise ValueError("--compare needs a self-started server (no --url): the feature is a server setting")
    title, on_env, off_env = COMPARISONS[options.compare]
    reports: dict[str, dict[str, Any]] = {}
    for variant, env in (("on", on_env), ("off", off_env)):
        console.print(f"[bold]{title}: {variant}[/]")
        reports[variant] = run(
            dataclasses.replace(
                options,
                compare=None,
                server_env={**options.server_env, **env},
                name=f"{options.name}-{options.compare}-{variant}",
            ),
            console,
        )
    table = Table(title=f"{title} on vs off: voice-to-voice ms (n sessions; underruns on/off; hit rate)")
    for column in ("n", "p50 on", "off", "ratio", "p95 on", "off", "ratio", "underruns", "hits"):
        table.add_column(column, justify="right")
    rows = []
    off_levels = {lv["concurrency"]: lv for lv in reports["off"]["levels"]}
    for on in reports["on"]["levels"]:
        off = off_levels.get(on["concurrency"])
        if off is None:
            continue
        rate = hit_rate(on)
        rows.append(
            {
                "concurrency": on["concurrency"],
                "p50_ms": {"on": on["p50_ms"], "off": off["p50_ms"]},
                "p95_ms": {"on": on["p95_ms"], "off": off["p95_ms"]},
                "underruns": {"on": on["underruns"], "off": off["underruns"]},
                "hit_rate": rate,
            }
        )
        table.add_row(
            str(on["concurrency"]),
            _ms(on["p50_ms"]),
            _ms(off["p50_ms"]),
            _ratio(on["p50_ms"], off["p50_ms"]),
            _ms(on["p95_ms"]),
            _ms(off["p95_ms"]),
            _ratio(on["p95_ms"], off["p95_ms"]),
            f"{on['underruns']}/{off['underruns']}",
            "-" if rate is None else f"{rate:.0%}",
        )
    console.print(table)
    comparison = {
        "benchmark": "openrealtime bench --compare",
        "compare": options.compare,
        "command": options.command,
        "started_at": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
        "machine": reports["on"]["machine"],
        "machine_off": reports["off"]["machine"],
        "levels": rows,
    }
    from .runner import default_out_dir

    out_dir = options.out or default_out_dir()
    path = out_dir / f"{options.name}-{options.compare}-comparison.json"
    path.write_text(json.dumps(comparison, indent=2) + "\n")
    console.print(f"wrote {path}")
    return comparison
