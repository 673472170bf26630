"""Turning the turns of a sweep into numbers (JSON) and a picture (PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..engines.asr.wer import corpus_wer
from .caller import TurnResult
from .stats import judge_level, summarize

__all__ = ["SERVER_STAGES", "STAGES", "level_summary", "plot_report", "stage_values"]

SERVER_STAGES = (
    "transcript_ready_ms",
    "llm_first_token_ms",
    "first_piece_ms",
    "tts_first_chunk_ms",
    "first_audio_sent_ms",
)
"""Stages of the server's ``turn timings`` record, in ms after its ``speech_stopped``."""

STAGES = (
    "speech_stopped",
    "transcript_completed",
    "transcript_ready",
    "llm_first_token",
    "first_piece",
    "tts_first_chunk",
    "first_audio_sent",
    "first_audio_received",
)
"""The per-stage breakdown, each in ms after the end of the user's speech. Server stages are
placed on the client's axis through the ``speech_stopped`` both sides saw (loopback: the two
instants are within a millisecond or so)."""


def stage_values(turns: Sequence[TurnResult]) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for turn in turns:
        client = {
            "speech_stopped": turn.speech_stopped_ms,
            "transcript_completed": turn.transcript_ms,
            "first_audio_received": turn.voice_to_voice_ms,
        }
        for stage, value in client.items():
            if value is not None:
                values[stage].append(value)
        if turn.speech_stopped_ms is None or turn.server.get("from") != "speech_stopped":
            continue
        for key in SERVER_STAGES:
            after_stopped = turn.server.get(key)
            if isinstance(after_stopped, int | float):
                values[key.removesuffix("_ms")].append(turn.speech_stopped_ms + float(after_stopped))
    return values


def level_summary(concurrency: int, turns: Sequence[TurnResult], p95_limit_ms: float) -> dict[str, Any]:
    """One concurrency level: latency percentiles, underruns, verdict, stages and every turn."""
    v2v = [t.voice_to_voice_ms for t in turns if t.voice_to_voice_ms is not None]
    underruns = sum(t.underruns for t in turns)
    verdict = judge_level(v2v, turns=len(turns), underruns=underruns, p95_limit_ms=p95_limit_ms)
    latency = summarize(v2v)
    stages = {stage: summarize(values) for stage, values in stage_values(turns).items() if values}
    server_stages = {
        key: summarize(values)
        for key in SERVER_STAGES
        if (values := [float(t.server[key]) for t in turns if isinstance(t.server.get(key), int | float)])
    }
    scored = [(t.reference, t.transcript or "") for t in turns if t.reference]
    return {
        "concurrency": concurrency,
        "turn_count": len(turns),
        "answered": len(v2v),
        "p50_ms": latency["p50"],
        "p95_ms": latency["p95"],
        "underruns": underruns,
        "underrun_turns": sum(1 for t in turns if t.underruns),
        "underrun_gap_ms": round(sum(t.underrun_gap_ms for t in turns), 1),
        "held": verdict.held,
        "verdict": verdict.reason,
        "voice_to_voice_ms": latency,
        "stages_ms_after_speech_end": stages,
        "server_stages_ms_after_speech_stopped": server_stages,
        "asr_wer": corpus_wer(scored) if scored else None,
        "errors": sorted({t.error for t in turns if t.error}),
        "turns": [t.as_dict() for t in turns],
    }


def plot_report(report: dict[str, Any], path: Path) -> None:
    """Latency CDF per level, p50/p95 against concurrency, and the per-stage breakdown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels: list[dict[str, Any]] = report["levels"]
    limit = float(report["config"]["p95_limit_ms"])
    fig, (cdf, sweep, stages) = plt.subplots(1, 3, figsize=(17, 5.2))
    colors = plt.get_cmap("viridis")

    for index, level in enumerate(levels):
        values = sorted(t["voice_to_voice_ms"] for t in level["turns"] if t["voice_to_voice_ms"] is not None)
        if not values:
            continue
        fractions = [0.0] + [(i + 1) / len(values) for i in range(len(values))]
        color = colors(index / max(1, len(levels) - 1))
        label = f"{level['concurrency']} at once"
        cdf.step([values[0], *values], fractions, where="post", color=color, label=label)
    slowest = max((lv["voice_to_voice_ms"]["max"] or 0.0 for lv in levels), default=0.0)
    if limit <= 2 * slowest:
        cdf.axvline(limit, color="tab:red", linestyle="--", linewidth=1, label=f"p95 limit {limit:.0f} ms")
    cdf.set_xlim(0, max(slowest, limit if limit <= 2 * slowest else 0.0) * 1.08 or 1.0)
    cdf.axhline(0.95, color="grey", linestyle=":", linewidth=1)
    cdf.set_xlabel("voice-to-voice (ms)")
    cdf.set_ylabel("fraction of turns")
    cdf.set_title("Voice-to-voice latency CDF")
    if cdf.get_legend_handles_labels()[0]:
        cdf.legend(fontsize=8)

    xs = [level["concurrency"] for level in levels]
    for key, style in (("p50_ms", "o-"), ("p95_ms", "s-")):
        ys = [level[key] if level[key] is not None else float("nan") for level in levels]
        sweep.plot(xs, ys, style, label=key.removesuffix("_ms"))
    for level in levels:
        if level["underruns"] and level["p95_ms"] is not None:
            sweep.annotate(
                f"{level['underruns']} underrun(s)",
                (level["concurrency"], level["p95_ms"]),
                textcoords="offset points",
                xytext=(4, 6),
                fontsize=8,
                color="tab:red",
            )
    if limit <= 2 * slowest:
        sweep.axhline(limit, color="tab:red", linestyle="--", linewidth=1, label=f"p95 limit {limit:.0f} ms")
    sweep.set_ylim(0, max(slowest, limit if limit <= 2 * slowest else 0.0) * 1.08 or 1.0)
    sweep.set_xscale("log", base=2)
    sweep.set_xlim(min(xs, default=1) / 1.4, max(xs, default=1) * 1.4)
    sweep.set_xticks(xs, [str(x) for x in xs])
    sweep.set_xlabel("concurrent sessions")
    sweep.set_ylabel("voice-to-voice (ms)")
    held = report["held_concurrency"]
    sweep.set_title(f"Latency vs concurrency (held: {held if held else 'none'})")
    sweep.legend(fontsize=8)

    shown = [stage for stage in STAGES if any(stage in lv["stages_ms_after_speech_end"] for lv in levels)]
    width = 0.8 / max(1, len(levels))
    for index, level in enumerate(levels):
        heights = [
            (level["stages_ms_after_speech_end"].get(stage) or {}).get("p50") or 0.0 for stage in shown
        ]
        offsets = [i + (index - (len(levels) - 1) / 2) * width for i in range(len(shown))]
        color = colors(index / max(1, len(levels) - 1))
        stages.bar(offsets, heights, width=width, color=color, label=f"{level['concurrency']} at once")
    stages.set_xticks(range(len(shown)), [s.replace("_", "\n") for s in shown], fontsize=7)
    stages.set_ylabel("p50, ms after end of speech")
    stages.set_title("Per-stage breakdown")
    stages.legend(fontsize=8)

    machine = report["machine"]
    fig.suptitle(
        f"openrealtime bench — {machine.get('cpu')} ({machine.get('logical_cpus')} CPUs, "
        f"load {machine.get('load_average')}), silence_duration_ms={report['config']['silence_ms']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
