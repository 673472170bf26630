"""Tool-calling accuracy of the embedded LLM profiles on spoken-style requests.

48 single requests (24 that need one of four tools, 24 that need none: chit-chat, general
knowledge, and questions near the tools' topics) are sent through ``LlamaCppModel.generate``
with the voice-agent system prompt of ``llm_common``, ``tool_choice="auto"``, greedy, no
extra tool guidance in the system prompt (the engine's default). The same
set is run again after a two-turn history (a greeting and a finished weather call), and four
conversations end on a tool result (the model should answer, not call again).

A request needing a tool counts as correct when the first call names the right tool, its
arguments pass the schema (``validate_arguments``) and the key argument is right (city,
minutes, order number, recipient). A false call is any call on a request needing none.

Each case runs once with the decision threshold at 0 and records the model's call intent
(probability that the answer starts a call); the call path is greedy and deterministic, so the
result at any threshold follows (below it the engine answers in text). The report gives the
sweep and the numbers at the profile's calibrated threshold (``LlamaProfile.tool_threshold``).

    python bench/tool_accuracy.py [--profiles qwen2.5-0.5b,qwen2.5-1.5b,smollm2-135m] [--threads 1]

Writes bench/results/tool_accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llm_common import NO_TOOL_CASES, SYSTEM_PROMPT, TOOL_CASES, TOOLS, Case, machine_info
from openrealtime.engines.base import (
    CancelToken,
    ChatMessage,
    ChatRequest,
    TextDelta,
    ToolCall,
    ToolCallDelta,
)
from openrealtime.engines.llm.llamacpp import DEFAULT_TOOL_THRESHOLD, PROFILES, LlamaCppModel
from openrealtime.engines.llm.tool_calling import validate_arguments

RESULTS = Path(__file__).resolve().parent / "results"
THRESHOLDS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)

HISTORY = (
    ChatMessage("user", "Hi, it's Jordan."),
    ChatMessage("assistant", "Hi Jordan! How can I help you today?"),
    ChatMessage("user", "What's the weather in Madrid?"),
    ChatMessage(
        "assistant",
        tool_calls=(ToolCall("call_hist0000000000000000", "get_weather", '{"location": "Madrid"}'),),
    ),
    ChatMessage(
        "tool", '{"temperature_c": 24, "conditions": "sunny"}', tool_call_id="call_hist0000000000000000"
    ),
    ChatMessage("assistant", "It's 24 degrees and sunny in Madrid right now."),
)

AFTER_RESULT = (
    (
        "What's the weather in Rome?",
        "get_weather",
        '{"location": "Rome"}',
        '{"temperature_c": 19, "conditions": "cloudy"}',
    ),
    ("Set a timer for ten minutes.", "set_timer", '{"minutes": 10}', '{"ok": true, "ends_at": "18:42"}'),
    (
        "Where is order 4471?",
        "lookup_order",
        '{"order_id": "4471"}',
        '{"status": "shipped", "eta": "Friday"}',
    ),
    (
        "Text Maya that I'm on my way.",
        "send_message",
        '{"recipient": "Maya", "text": "I\'m on my way."}',
        '{"sent": true}',
    ),
)


def _compact(value: object) -> str:
    return re.sub(r"[^0-9a-z]", "", str(value).lower())


def key_correct(case: Case, arguments: dict[str, Any]) -> bool:
    value = arguments.get(case.key or "")
    if value is None:
        return False
    if case.key == "minutes":
        try:
            return float(value) == float(case.expected or 0)
        except (TypeError, ValueError):
            return False
    if case.key == "order_id":
        return _compact(value) == _compact(case.expected)
    return _compact(case.expected) in _compact(value)


def run_case(engine: LlamaCppModel, messages: tuple[ChatMessage, ...]) -> dict[str, Any]:
    request = ChatRequest(
        messages=messages, tools=TOOLS, tool_choice="auto", max_output_tokens=48, temperature=0.0
    )
    start = time.perf_counter()
    calls: list[ToolCall] = []
    text = ""
    first: float | None = None
    for event in engine.generate(request, CancelToken()):
        if isinstance(event, (TextDelta, ToolCallDelta)) and first is None:
            first = time.perf_counter() - start
        if isinstance(event, TextDelta):
            text += event.text
        elif isinstance(event, ToolCallDelta):
            calls.append(event.call)
    stats = engine.last_generation
    return {
        "intent": None if stats is None else stats.tool_probability,
        "calls": [{"name": c.name, "arguments": c.arguments} for c in calls],
        "text": text,
        "first_event_s": first,
        "total_s": time.perf_counter() - start,
    }


def score(case: Case, result: dict[str, Any], threshold: float) -> str:
    """``correct``/``wrong_tool``/``bad_args``/``missed`` for tool cases, ``call``/``ok`` otherwise."""
    intent = result["intent"] or 0.0
    called = bool(result["calls"]) and intent >= threshold
    if case.tool is None:
        return "call" if called else "ok"
    if not called:
        return "missed"
    first = result["calls"][0]
    if first["name"] != case.tool:
        return "wrong_tool"
    tool = next(t for t in TOOLS if t.name == case.tool)
    if validate_arguments(tool, first["arguments"]) is not None:
        return "bad_args"
    return "correct" if key_correct(case, json.loads(first["arguments"])) else "bad_args"


def summarise(cases: list[tuple[Case, dict[str, Any]]], threshold: float) -> dict[str, Any]:
    tool = [score(c, r, threshold) for c, r in cases if c.tool]
    none = [score(c, r, threshold) for c, r in cases if not c.tool]
    return {
        "threshold": threshold,
        "tool_accuracy": round(tool.count("correct") / max(1, len(tool)), 3),
        "false_call_rate": round(none.count("call") / max(1, len(none)), 3),
        "correct": tool.count("correct"),
        "missed": tool.count("missed"),
        "wrong_tool": tool.count("wrong_tool"),
        "bad_args": tool.count("bad_args"),
        "false_calls": none.count("call"),
        "n_tool": len(tool),
        "n_no_tool": len(none),
    }


def bench_profile(profile: str, threads: int, history: bool) -> dict[str, Any]:
    load = time.perf_counter()
    default_threshold = PROFILES[profile].tool_threshold if profile in PROFILES else DEFAULT_TOOL_THRESHOLD
    engine = LlamaCppModel(profile, n_threads=threads, n_ctx=4096, tool_threshold=0.0, seed=7)
    out: dict[str, Any] = {
        "load_s": round(time.perf_counter() - load, 2),
        "default_threshold": default_threshold,
    }
    if not engine.supports_tools:
        engine.close()
        out["tool_support"] = False
        out["note"] = "no tool support: tools are ignored and the model answers in text"
        return out
    system = ChatMessage("system", SYSTEM_PROMPT)
    variants: dict[str, tuple[ChatMessage, ...]] = {"single_turn": (system,)}
    if history:
        variants["after_history"] = (system, *HISTORY)
    for variant, prefix in variants.items():
        rows: list[tuple[Case, dict[str, Any]]] = []
        for case in (*TOOL_CASES, *NO_TOOL_CASES):
            result = run_case(engine, (*prefix, ChatMessage("user", case.text)))
            rows.append((case, result))
            verdict = score(case, result, default_threshold)
            print(
                f"  [{profile} {variant}] {verdict:10} p={result['intent'] or 0:.3f} {case.text!r} -> "
                f"{result['calls'][:1] or result['text'][:60]!r}",
                flush=True,
            )
        out[variant] = {
            "at_default": summarise(rows, default_threshold),
            "sweep": [summarise(rows, t) for t in THRESHOLDS],
            "cases": [{"text": c.text, "tool": c.tool, **r} for c, r in rows],
        }
    repeats = []
    for text, name, arguments, result_json in AFTER_RESULT:
        call = ToolCall("call_prev0000000000000000", name, arguments)
        messages = (
            system,
            ChatMessage("user", text),
            ChatMessage("assistant", tool_calls=(call,)),
            ChatMessage("tool", result_json, tool_call_id=call.call_id),
        )
        result = run_case(engine, messages)
        called = bool(result["calls"]) and (result["intent"] or 0) >= default_threshold
        repeats.append({"text": text, "called_again": called, **result})
        print(f"  [{profile} after_tool_result] called_again={called} {result['text'][:60]!r}", flush=True)
    out["after_tool_result"] = {
        "repeat_call_rate": round(sum(r["called_again"] for r in repeats) / len(repeats), 3),
        "cases": repeats,
    }
    engine.close()
    out["tool_support"] = True
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", default=",".join(PROFILES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-history", action="store_true", help="skip the after-history variant")
    parser.add_argument("--out", type=Path, default=RESULTS / "tool_accuracy.json")
    args = parser.parse_args()

    info = machine_info()
    print(f"machine: {info}")
    report: dict[str, Any] = {"machine": info, "threads": args.threads, "profiles": {}}
    for profile in args.profiles.split(","):
        print(f"== {profile}", flush=True)
        report["profiles"][profile] = bench_profile(profile, args.threads, not args.no_history)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    print("\nprofile        variant        threshold  accuracy  false-calls")
    for profile, res in report["profiles"].items():
        if not res.get("tool_support"):
            print(f"{profile:14} {'-':14} {'-':>9}  no tool support")
            continue
        for variant in ("single_turn", "after_history"):
            if variant in res:
                s = res[variant]["at_default"]
                print(
                    f"{profile:14} {variant:14} {s['threshold']:>9}  {s['correct']}/{s['n_tool']} "
                    f"({s['tool_accuracy']:.0%})  {s['false_calls']}/{s['n_no_tool']} ({s['false_call_rate']:.0%})"
                )
        print(
            f"{profile:14} {'after result':14} {'':>9}  repeat calls {res['after_tool_result']['repeat_call_rate']:.0%}"
        )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
