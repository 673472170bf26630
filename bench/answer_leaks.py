"""How often an answer leaks prompt scaffolding (tool names, call JSON, system text, template
tokens) instead of plain words, and what the engine's guard did about it.

Six requests unrelated to the tools and three requests for a tool are sent with 1, 2, 3 and
4 of the four benchmark tools in the session (so some requests ask for a tool that is not
there), under the server's default instructions (``--prompts default,agent`` adds the
voice-agent prompt of ``llm_common``), sampled at temperature 0.7 with several seeds, through
``LlamaCppModel.generate`` on the real model. Every text answer is judged by
``openrealtime.benchmark.answers.answer_leak``, a check written independently of the
engine's own guard.

``--compare`` runs each case twice in one process, with the engine's leak handling off (the
behaviour before the guard: no steering note, no guard) and on, so both rates come from the
same load.

``--recheck RESULT`` then reruns the cases that leaked with leak handling off, with the guard
alone (no steering note), to show what the guard catches by itself.

    python bench/answer_leaks.py [--profile qwen2.5-0.5b] [--seeds 1,2] [--prompts default] [--compare]
    python bench/answer_leaks.py --recheck bench/results/answer_leaks.json

Writes bench/results/answer_leaks.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llm_common import SYSTEM_PROMPT, TOOLS, machine_info
from openrealtime.benchmark.answers import answer_leak
from openrealtime.engines.base import (
    CancelToken,
    ChatMessage,
    ChatRequest,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
)
from openrealtime.engines.llm.llamacpp import LlamaCppModel
from openrealtime.protocol.session import DEFAULT_INSTRUCTIONS

RESULTS = Path(__file__).resolve().parent / "results"

UNRELATED = (
    "Hello?",
    "Good morning!",
    "What's the capital of Australia?",
    "Tell me a short joke.",
    "I love rainy days, do you?",
    "My daughter starts school next week.",
)
TOOL_REQUESTS = (
    "Set a timer for five minutes.",
    "Where is my order A B 1 2 3 4?",
    "Text Bob that dinner is at seven.",
)
PROMPTS = {"default": DEFAULT_INSTRUCTIONS, "agent": SYSTEM_PROMPT}
"""The server's default instructions and the voice-agent prompt of ``llm_common``."""


def tool_sets() -> list[tuple[ToolSpec, ...]]:
    return [TOOLS[:n] for n in (1, 2, 3, 4)]


def run_one(engine: LlamaCppModel, system: str, tools: tuple[ToolSpec, ...], text: str) -> dict[str, Any]:
    request = ChatRequest(
        messages=(ChatMessage("system", system), ChatMessage("user", text)),
        tools=tools,
        tool_choice="auto",
        max_output_tokens=60,
        temperature=0.7,
    )
    answer = ""
    calls: list[str] = []
    started = time.perf_counter()
    for event in engine.generate(request, CancelToken()):
        if isinstance(event, TextDelta):
            answer += event.text
        elif isinstance(event, ToolCallDelta):
            calls.append(event.call.name)
    return {"answer": answer, "calls": calls, "seconds": round(time.perf_counter() - started, 2)}


def recheck(args: argparse.Namespace) -> None:
    """The guard alone on the cases that leaked without it: does it catch and rewrite them?"""
    report = json.loads(args.recheck.read_text())
    engine = LlamaCppModel(args.profile, n_threads=args.threads, n_ctx=4096, seed=1)
    engine.steer_dropped_calls = False
    rows = [r for r in report["rows"] if r["mode"] == "off" and r["leak"]]
    added = []
    for old in rows:
        engine.seed = old["seed"]
        engine.guard_leaks = True
        tools = TOOLS[: old["tools"]]
        before = dict(engine.leak_stats)
        result = run_one(engine, PROMPTS[old["prompt"]], tools, old["request"])
        leak = answer_leak(result["answer"], tools, [PROMPTS[old["prompt"]]])
        stats = {k: engine.leak_stats[k] - before.get(k, 0) for k in engine.leak_stats}
        added.append({**old, **result, "mode": "guard", "leak": leak, "engine": stats})
        print(
            f"[guard] {old['request'][:40]!r}: {old['answer'][:50]!r} -> {result['answer'][:70]!r} {leak} {stats}"
        )
    report["rows"] = [r for r in report["rows"] if r["mode"] != "guard"] + added
    report["summary"]["guard_alone_on_off_leaks"] = {
        "cases": len(added),
        "still_leaking": sum(bool(r["leak"]) for r in added),
        "regenerated": sum(r["engine"].get("regenerated", 0) for r in added),
        "fallback": sum(r["engine"].get("fallback", 0) for r in added),
    }
    args.recheck.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["summary"]["guard_alone_on_off_leaks"]))
    engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="qwen2.5-0.5b")
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--prompts", default="default", help="comma-separated: default, agent")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--compare", action="store_true", help="also run with leak handling off")
    parser.add_argument(
        "--recheck",
        type=Path,
        help="rerun the cases that leaked with leak handling off in this earlier result, with "
        "the guard alone (no steering note), and add them to it as mode 'guard'",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "answer_leaks.json")
    args = parser.parse_args()
    if args.recheck is not None:
        recheck(args)
        return
    engine = LlamaCppModel(args.profile, n_threads=args.threads, n_ctx=4096, seed=1)
    modes = {"off": False, "on": True} if args.compare else {"on": True}
    rows: list[dict[str, Any]] = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for prompt_name, system in ((name, PROMPTS[name]) for name in args.prompts.split(",")):
            for tools in tool_sets():
                for kind, texts in (("unrelated", UNRELATED), ("tool", TOOL_REQUESTS)):
                    for text in texts:
                        for mode, on in modes.items():
                            engine.seed = seed
                            engine.guard_leaks = on
                            before = dict(engine.leak_stats)
                            result = run_one(engine, system, tools, text)
                            leak = answer_leak(result["answer"], tools, [system])
                            stats = {k: engine.leak_stats[k] - before.get(k, 0) for k in engine.leak_stats}
                            row = {
                                "mode": mode,
                                "seed": seed,
                                "prompt": prompt_name,
                                "tools": len(tools),
                                "kind": kind,
                                "request": text,
                                **result,
                                "leak": leak,
                                "engine": stats,
                            }
                            rows.append(row)
                            flag = f"LEAK ({leak})" if leak else ""
                            print(
                                f"[{mode} s{seed} {prompt_name} {len(tools)}t {kind}] {text[:40]!r} -> "
                                f"{result['calls'] or result['answer'][:70]!r} {flag} {stats or ''}",
                                flush=True,
                            )
    summary: dict[str, Any] = {}
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode]
        texts = [r for r in mine if not r["calls"]]
        summary[mode] = {
            "generations": len(mine),
            "text_answers": len(texts),
            "leaks": sum(bool(r["leak"]) for r in mine),
            "leak_rate": round(sum(bool(r["leak"]) for r in mine) / max(1, len(texts)), 4),
            "leaks_by_kind": {
                k: sum(bool(r["leak"]) for r in mine if r["kind"] == k) for k in ("unrelated", "tool")
            },
            "leaks_by_tools": {
                n: sum(bool(r["leak"]) for r in mine if r["tools"] == n) for n in (1, 2, 3, 4)
            },
            "guard": {
                key: sum(r["engine"].get(key, 0) for r in mine)
                for key in ("steered", "regenerated", "fallback")
            },
            "median_seconds": sorted(r["seconds"] for r in mine)[len(mine) // 2] if mine else None,
        }
    report = {"machine": machine_info(), "command": " ".join(sys.argv), "summary": summary, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out}")
    engine.close()


if __name__ == "__main__":
    main()
