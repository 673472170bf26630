"""What a decode step costs the embedded LLM with 1, 2, 4, 8 sequences in it.

    python bench/llm_batch_step.py --threads 1 --sizes 1 2 4 8 --tokens 48

Each of N threads holds a sequence of one ``BatchedContext`` (the engine's batching,
``engines/llm/batching.py``), evaluates the same ~40-token prompt, then decodes ``--tokens``
single tokens (greedy), so every step carries one token of each sequence. Reports the median
step time, the time per token (step / N) and the tokens per second of all sequences together;
writes ``bench/results/llm_batch_step.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402

from openrealtime.benchmark.machine import machine_info  # noqa: E402
from openrealtime.engines.assets import resolve  # noqa: E402
from openrealtime.engines.llm.batching import BatchedContext  # noqa: E402

PROMPT = (
    "<|im_start|>system\nYou are a helpful voice assistant.<|im_end|>\n"
    "<|im_start|>user\nTell me a long story about a dragon who guards a lighthouse.<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def measure(context: BatchedContext, prompt: list[int], size: int, tokens: int) -> dict[str, float]:
    sequences = [context.acquire() for _ in range(size)]
    assert all(s is not None for s in sequences)
    for s in sequences:
        assert s is not None
        s.clear()
    start = threading.Barrier(size + 1)
    finished: list[float] = []

    def run(index: int) -> None:
        sequence = sequences[index]
        assert sequence is not None
        sequence.eval(prompt)
        start.wait()
        for _ in range(tokens):
            assert sequence.logits is not None
            sequence.eval([int(np.argmax(sequence.logits))])
        finished.append(time.perf_counter())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(size)]
    for t in threads:
        t.start()
    steps_before = context.steps
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    seconds = max(finished) - began
    steps = context.steps - steps_before
    for s in sequences:
        assert s is not None
        context.release(s)
    return {
        "sequences": size,
        "steps": steps,
        "seconds": round(seconds, 3),
        "step_ms": round(1000 * seconds / max(1, steps), 1),
        "ms_per_token": round(1000 * seconds / (size * tokens), 1),
        "tokens_per_second": round(size * tokens / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="qwen2.5-0.5b")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "llm_batch_step.json")
    args = parser.parse_args()

    import llama_cpp
    from llama_cpp import _internals
    from llama_cpp._logger import set_verbose

    set_verbose(False)
    llama_cpp.llama_backend_init()
    model = _internals.LlamaModel(
        path_model=str(resolve(args.model)), params=llama_cpp.llama_model_default_params(), verbose=False
    )
    context = BatchedContext(
        model,
        n_ctx=4096,
        n_seq=max(args.sizes),
        n_batch=256,
        n_threads=args.threads,
        n_threads_batch=args.threads,
    )
    prompt = [int(t) for t in model.tokenize(PROMPT.encode(), add_bos=False, special=True)]
    rows = []
    for size in args.sizes:
        runs = [measure(context, prompt, size, args.tokens) for _ in range(args.rounds)]
        row = {
            "sequences": size,
            "step_ms": statistics.median(r["step_ms"] for r in runs),
            "ms_per_token": statistics.median(r["ms_per_token"] for r in runs),
            "tokens_per_second": statistics.median(r["tokens_per_second"] for r in runs),
            "runs": runs,
        }
        rows.append(row)
        print(
            f"{size} sequence(s): step {row['step_ms']} ms, {row['ms_per_token']} ms per token, "
            f"{row['tokens_per_second']} tokens/s in all",
            flush=True,
        )
    context.close()
    result = {
        "benchmark": "bench/llm_batch_step.py",
        "command": " ".join(sys.argv),
        "machine": machine_info(),
        "model": args.model,
        "threads": args.threads,
        "tokens": args.tokens,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
