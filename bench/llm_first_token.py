"""Engine-level time to first token of the embedded LLM profiles, cold versus cached prefix.

The prompt is a realistic voice-agent turn: the ``llm_common`` system prompt plus four tool
schemas (tools are ignored by profiles without tool support), then a short spoken question.
Time to first token is measured from ``generate()`` to the first text delta.

Scenarios:

* ``cold``: a system prompt never seen before (a fresh nonce at its start): the whole prompt
  is evaluated;
* ``next_turn``: the next turn of the same conversation; the history is in the live KV cache;
* ``new_session_same_prompt``: a new conversation with the same system prompt and tools right
  after another one: the shared prefix is reused from the live KV cache;
* ``after_other_session``: a conversation resumes after a session with a different system
  prompt used the engine: its prefix comes back from the RAM snapshot cache.

Decode speed is completion tokens over decode time of the same answers (48 tokens max).

    python bench/llm_first_token.py [--profiles qwen2.5-0.5b,qwen2.5-1.5b,smollm2-135m] [--runs 6]

Writes bench/results/llm_first_token.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llm_common import NO_TOOL_CASES, SYSTEM_PROMPT, TOOLS, machine_info
from openrealtime.engines.base import CancelToken, ChatMessage, ChatRequest, TextDelta, ToolCallDelta
from openrealtime.engines.llm.llamacpp import PROFILES, LlamaCppModel

RESULTS = Path(__file__).resolve().parent / "results"
QUESTIONS = [c.text for c in NO_TOOL_CASES if c.text.endswith("?")]
OTHER_SYSTEM = (
    "You are Robin, the booking assistant of Harbour Dental. Help callers book, move or cancel "
    "appointments, in short spoken sentences. Opening hours are 8 to 6 on weekdays."
)


def turn(engine: LlamaCppModel, messages: list[ChatMessage]) -> dict[str, Any]:
    request = ChatRequest(messages=tuple(messages), tools=TOOLS, max_output_tokens=48, temperature=0.0)
    start = time.perf_counter()
    first: float | None = None
    text = ""
    for event in engine.generate(request, CancelToken()):
        if isinstance(event, (TextDelta, ToolCallDelta)) and first is None:
            first = time.perf_counter() - start
        if isinstance(event, TextDelta):
            text += event.text
    stats = engine.last_generation
    assert stats is not None
    messages.append(ChatMessage("assistant", text))
    return {
        "ttft_s": first,
        "prompt_tokens": stats.prompt_tokens,
        "cached_prompt_tokens": stats.cached_prompt_tokens,
        "cache_source": stats.cache_source,
        "completion_tokens": stats.completion_tokens,
        "decode_s": stats.decode_seconds,
    }


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ttfts = sorted(r["ttft_s"] for r in rows if r["ttft_s"] is not None)
    p95_index = min(len(ttfts) - 1, round(0.95 * (len(ttfts) - 1)))
    return {
        "n": len(rows),
        "ttft_p50_s": round(statistics.median(ttfts), 3) if ttfts else None,
        "ttft_p95_s": round(ttfts[p95_index], 3) if ttfts else None,
        "prompt_tokens_mean": round(statistics.mean(r["prompt_tokens"] for r in rows), 1),
        "cached_prompt_tokens_mean": round(statistics.mean(r["cached_prompt_tokens"] for r in rows), 1),
        "cache_sources": sorted({r["cache_source"] for r in rows}),
        "runs": rows,
    }


def bench_profile(profile: str, threads: int, runs: int, batch_threads: int | None = None) -> dict[str, Any]:
    engine = LlamaCppModel(profile, n_threads=threads, n_threads_batch=batch_threads, n_ctx=4096, seed=7)
    question = iter(QUESTIONS * 10)
    results: dict[str, list[dict[str, Any]]] = {
        "cold": [],
        "next_turn": [],
        "new_session_same_prompt": [],
        "after_other_session": [],
    }
    for _ in range(runs):
        nonce = f"[session {uuid.uuid4().hex[:8]}] "
        conversation = [ChatMessage("system", nonce + SYSTEM_PROMPT), ChatMessage("user", next(question))]
        results["cold"].append(turn(engine, conversation))
        conversation.append(ChatMessage("user", next(question)))
        results["next_turn"].append(turn(engine, conversation))
        fresh = [ChatMessage("system", nonce + SYSTEM_PROMPT), ChatMessage("user", next(question))]
        results["new_session_same_prompt"].append(turn(engine, fresh))
        other = [ChatMessage("system", OTHER_SYSTEM), ChatMessage("user", next(question))]
        turn(engine, other)
        conversation.append(ChatMessage("user", next(question)))
        results["after_other_session"].append(turn(engine, conversation))
    decode = [r for rows in results.values() for r in rows if r["completion_tokens"] > 4]
    tokens = sum(r["completion_tokens"] for r in decode)
    seconds = sum(r["decode_s"] for r in decode)
    engine.close()
    return {
        "tool_support": engine.supports_tools,
        "decode_tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        **{name: summary(rows) for name, rows in results.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", default=",".join(PROFILES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-threads", type=int, default=None, help="prompt-evaluation threads")
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--out", type=Path, default=RESULTS / "llm_first_token.json")
    args = parser.parse_args()

    info = machine_info()
    print(f"machine: {info}")
    report: dict[str, Any] = {
        "machine": info,
        "threads": args.threads,
        "batch_threads": args.batch_threads or args.threads,
        "profiles": {},
    }
    for profile in args.profiles.split(","):
        print(f"== {profile}", flush=True)
        res = bench_profile(profile, args.threads, args.runs, args.batch_threads)
        report["profiles"][profile] = res
        for name in ("cold", "next_turn", "new_session_same_prompt", "after_other_session"):
            s = res[name]
            print(
                f"  {name:24} ttft p50 {s['ttft_p50_s']:.3f} s  p95 {s['ttft_p95_s']:.3f} s  "
                f"prompt {s['prompt_tokens_mean']:.0f} tok, cached {s['cached_prompt_tokens_mean']:.0f} "
                f"({'/'.join(s['cache_sources'])})",
                flush=True,
            )
        print(f"  decode {res['decode_tokens_per_s']} tok/s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
