"""What changed between a recorded session and its replay: per turn and in total, as JSON, a
console table and a PNG plot (pure arithmetic here; ``replay.py`` runs the calls)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ..benchmark.caller import TurnResult
from ..benchmark.report import STAGES, stage_values
from ..benchmark.stats import summarize
from ..engines.asr.wer import corpus_wer, normalize, wer
from .turns import RecordedTurn

__all__ = ["compare_turn", "plot_replay", "print_replay", "recorded_result", "tool_differences", "totals"]


def recorded_result(turn: RecordedTurn) -> TurnResult:
    """A recorded turn in the benchmark's shape, so both sides go through the same statistics
    (times relative to the end of the caller's speech, on the recording server's clock)."""
    return TurnResult(
        session=0,
        turn=turn.index,
        utterance=f"turn {turn.index + 1}",
        voice_to_voice_ms=turn.voice_to_voice_ms,
        speech_stopped_ms=turn.speech_stopped_ms,
        transcript_ms=turn.transcript_ms,
        response_id=turn.answer_id,
        status=turn.status,
        transcript=turn.transcript,
        answer=turn.answer,
        tool_calls=[{"name": c.name, "arguments": c.arguments} for c in turn.tool_calls],
        server=dict(turn.timings),
    )


def _arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw.strip()
    return raw


def tool_differences(before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]]) -> list[str]:
    """How the replay's function calls differ from the recording's, call by call in order
    (arguments compared as JSON values)."""
    differences = []
    for index in range(max(len(before), len(after))):
        old = before[index] if index < len(before) else None
        new = after[index] if index < len(after) else None
        if old is None and new is not None:
            differences.append(f"extra call {new['name']}({new.get('arguments') or ''})")
        elif new is None and old is not None:
            differences.append(f"missing call {old['name']}({old.get('arguments') or ''})")
        elif old is not None and new is not None:
            if old["name"] != new["name"]:
                differences.append(f"called {new['name']} instead of {old['name']}")
            elif _arguments(old.get("arguments")) != _arguments(new.get("arguments")):
                differences.append(
                    f"{new['name']} arguments {new.get('arguments')} instead of {old.get('arguments')}"
                )
    return differences


def _side(result: TurnResult) -> dict[str, Any]:
    return {
        "transcript": result.transcript,
        "answer": result.answer,
        "status": result.status,
        "tool_calls": result.tool_calls,
        "voice_to_voice_ms": result.voice_to_voice_ms,
        "speech_stopped_ms": result.speech_stopped_ms,
        "transcript_ms": result.transcript_ms,
        "server": result.server,
        "error": result.error,
    }


def compare_turn(recorded: TurnResult, replayed: TurnResult) -> dict[str, Any]:
    """One turn side by side: transcripts, answers, tool calls, latency before and after."""
    heard = wer(recorded.transcript or "", replayed.transcript or "") if recorded.transcript else None
    said = wer(recorded.answer or "", replayed.answer or "") if recorded.answer else None
    before, after = recorded.voice_to_voice_ms, replayed.voice_to_voice_ms
    return {
        "turn": recorded.turn,
        "recorded": _side(recorded),
        "replayed": _side(replayed),
        "transcript_wer": None if heard is None else round(heard.wer, 3),
        "answer_changed": normalize(recorded.answer or "") != normalize(replayed.answer or ""),
        "answer_wer": None if said is None else round(said.wer, 3),
        "tool_call_differences": tool_differences(recorded.tool_calls, replayed.tool_calls),
        "voice_to_voice_change_ms": None if before is None or after is None else round(after - before, 1),
    }


def _stages(results: Sequence[TurnResult]) -> dict[str, Any]:
    return {stage: summarize(values) for stage, values in stage_values(results).items() if values}


def totals(
    recorded: Sequence[TurnResult], replayed: Sequence[TurnResult], turns: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """Sums over every turn of every replayed recording."""
    heard = [
        (r.transcript, p.transcript or "") for r, p in zip(recorded, replayed, strict=True) if r.transcript
    ]
    before = [r.voice_to_voice_ms for r in recorded if r.voice_to_voice_ms is not None]
    after = [p.voice_to_voice_ms for p in replayed if p.voice_to_voice_ms is not None]
    return {
        "turns": len(turns),
        "answered_before": sum(1 for r in recorded if r.answer or r.voice_to_voice_ms is not None),
        "answered_after": sum(1 for p in replayed if p.status is not None),
        "transcript_wer": round(corpus_wer(heard), 3) if heard else None,
        "answers_changed": sum(1 for t in turns if t["answer_changed"]),
        "tool_call_differences": sum(len(t["tool_call_differences"]) for t in turns),
        "errors": sorted({p.error for p in replayed if p.error}),
        "voice_to_voice_ms": {"before": summarize(before), "after": summarize(after)},
        "stages_ms_after_speech_end": {"before": _stages(recorded), "after": _stages(replayed)},
    }


def _short(text: str | None, width: int = 60) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def print_replay(console: Console, report: dict[str, Any]) -> None:
    """Each turn side by side, then the totals."""
    for recording in report["recordings"]:
        table = Table(title=f"replay of {recording['recording_id']} ({recording['turn_count']} turns)")
        for column in (
            "turn",
            "heard (recorded → replayed)",
            "answer (recorded → replayed)",
            "tools",
            "v2v ms",
        ):
            table.add_column(column, justify="right" if column in ("turn", "v2v ms") else "left")
        for turn in recording["turns"]:
            old, new = turn["recorded"], turn["replayed"]
            table.add_row(
                str(turn["turn"] + 1),
                f"{_short(old['transcript'])}\n→ {_short(new['transcript'])}"
                + ("" if turn["transcript_wer"] is None else f"  (WER {turn['transcript_wer']:.0%})"),
                f"{_short(old['answer'])}\n→ {_short(new['answer'])}"
                + ("  [changed]" if turn["answer_changed"] else ""),
                "; ".join(turn["tool_call_differences"]) or ("same" if old["tool_calls"] else "-"),
                f"{_ms(old['voice_to_voice_ms'])}\n→ {_ms(new['voice_to_voice_ms'])}",
            )
        console.print(table)
    total = report["totals"]
    v2v = total["voice_to_voice_ms"]
    wer_text = "-" if total["transcript_wer"] is None else f"{total['transcript_wer']:.1%}"
    console.print(
        f"[bold]{total['turns']} turn(s)[/]: transcript WER {wer_text}, {total['answers_changed']} answer(s) changed, "
        f"{total['tool_call_differences']} tool-call difference(s); voice-to-voice p50 "
        f"{_ms(v2v['before']['p50'])} → {_ms(v2v['after']['p50'])} ms, p95 {_ms(v2v['before']['p95'])} → "
        f"{_ms(v2v['after']['p95'])} ms"
    )
    if total["errors"]:
        console.print(f"errors: {'; '.join(total['errors'][:3])}")


def plot_replay(report: dict[str, Any], path: Path) -> None:
    """Voice-to-voice per turn, stage p50s and transcript/answer change per turn, before vs after."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    turns = [turn for recording in report["recordings"] for turn in recording["turns"]]
    labels = [f"{i + 1}" for i in range(len(turns))]
    fig, (latency, stages, change) = plt.subplots(1, 3, figsize=(17, 5.2))
    width = 0.38
    xs = list(range(len(turns)))

    def values(side: str, key: str) -> list[float]:
        return [float(t[side][key]) if t[side][key] is not None else float("nan") for t in turns]

    latency.bar([x - width / 2 for x in xs], values("recorded", "voice_to_voice_ms"), width, label="recorded")
    latency.bar([x + width / 2 for x in xs], values("replayed", "voice_to_voice_ms"), width, label="replayed")
    latency.set_xticks(xs, labels)
    latency.set_xlabel("turn")
    latency.set_ylabel("voice-to-voice (ms)")
    latency.set_title("Voice-to-voice per turn")
    latency.legend(fontsize=8)

    before = report["totals"]["stages_ms_after_speech_end"]["before"]
    after = report["totals"]["stages_ms_after_speech_end"]["after"]
    shown = [stage for stage in STAGES if stage in before or stage in after]
    positions = list(range(len(shown)))
    stages.bar(
        [p - width / 2 for p in positions],
        [(before.get(s) or {}).get("p50") or 0.0 for s in shown],
        width,
        label="recorded",
    )
    stages.bar(
        [p + width / 2 for p in positions],
        [(after.get(s) or {}).get("p50") or 0.0 for s in shown],
        width,
        label="replayed",
    )
    stages.set_xticks(positions, [s.replace("_", "\n") for s in shown], fontsize=7)
    stages.set_ylabel("p50, ms after end of speech")
    stages.set_title("Per-stage breakdown")
    stages.legend(fontsize=8)

    change.bar(
        [x - width / 2 for x in xs],
        [t["transcript_wer"] if t["transcript_wer"] is not None else float("nan") for t in turns],
        width,
        label="transcript WER",
    )
    change.bar(
        [x + width / 2 for x in xs],
        [t["answer_wer"] if t["answer_wer"] is not None else float("nan") for t in turns],
        width,
        label="answer word change",
    )
    for x, turn in zip(xs, turns, strict=True):
        if turn["tool_call_differences"]:
            change.annotate("tools differ", (x, 0.02), rotation=90, fontsize=7, color="tab:red", ha="center")
    change.set_xticks(xs, labels)
    change.set_ylim(0, max(1.05, *[t["answer_wer"] or 0 for t in turns]))
    change.set_xlabel("turn")
    change.set_ylabel("word error rate vs the recording")
    change.set_title("What changed")
    change.legend(fontsize=8)

    machine = report["machine"]
    recordings = ", ".join(r["recording_id"] for r in report["recordings"])
    fig.suptitle(
        f"openrealtime replay of {recordings} against {report['target']['url']} — {machine.get('cpu')} "
        f"({machine.get('logical_cpus')} CPUs, load {machine.get('load_average')})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
