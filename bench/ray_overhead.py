"""What moving the engines onto Ray Serve costs per stage, against the same engines in-process.

Stages: LLM first token (default instructions + a short question, prompt cache warm as in a
live session), ASR of one real clip (whole-turn Whisper pass), TTS first chunk of a short
reply, and token counting for the LLM (local tokenizer vs a round trip). Each is run
``--runs`` times after one uncounted warm-up, in-process first, then through the Ray adapters
(the same code the server uses), one at a time so the two never compete for the cores.

    python bench/ray_overhead.py [--runs 7] [--address HOST:PORT]

Without ``--address`` a one-node Ray cluster is started here (token auth, torn down at the
end) and the engines are deployed with ``openrealtime engines up``. Writes
bench/results/ray_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from machine import machine_info

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from openrealtime.engines.base import (
    CancelToken,
    ChatMessage,
    ChatRequest,
    GenerationDone,
    LanguageModel,
    Synthesizer,
    Transcriber,
)
from openrealtime.protocol.session import DEFAULT_INSTRUCTIONS

RESULTS = Path(__file__).resolve().parent / "results"
AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"
CLIP = "librivox-0870"
REPLY = "Sure, I can help with that. Your order shipped yesterday."
QUESTION = "What is the capital of France? Answer in one sentence."
APP = "orbench"

_HEAD = """
import sys, ray
ray.init(address="local", num_cpus=4, include_dashboard=False, _temp_dir=sys.argv[1], configure_logging=False)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()
ray.shutdown()
"""


@contextmanager
def local_cluster() -> Iterator[str]:
    """A one-node Ray cluster owned by a child process, with a random auth token."""
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=os.urandom(32).hex(), RAY_USAGE_STATS_ENABLED="0")
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    head = subprocess.Popen(
        [sys.executable, "-c", _HEAD, temp], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert head.stdout is not None
        yield head.stdout.readline().strip()
    finally:
        if head.stdin is not None:
            head.stdin.close()
        head.wait(timeout=120)
        subprocess.run(["rm", "-rf", temp], check=False)


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(p95 * 1000, 1),
        "min_ms": round(ordered[0] * 1000, 1),
        "runs": len(ordered),
    }


def timed(runs: int, once: Callable[[], float]) -> list[float]:
    once()  # warm-up: lazy loads, prompt cache
    return [once() for _ in range(runs)]


_turn = iter(range(1_000_000))


def llm_first_token(llm: LanguageModel) -> float:
    """A new question each run: the instructions are in the prompt cache, the turn is not."""
    request = ChatRequest(
        messages=(
            ChatMessage(role="system", content=DEFAULT_INSTRUCTIONS),
            ChatMessage(role="user", content=f"Question {next(_turn)}: {QUESTION}"),
        ),
        max_output_tokens=8,
        temperature=0.0,
    )
    start = time.perf_counter()
    first = None
    for _event in llm.generate(request, CancelToken()):
        first = first or time.perf_counter() - start
    return first or time.perf_counter() - start


def llm_decode_seconds_per_token(llm: LanguageModel) -> float:
    """Seconds per generated token after the first (the CPU a spoken answer costs)."""
    request = ChatRequest(
        messages=(ChatMessage(role="user", content="Describe Paris in five long sentences."),),
        max_output_tokens=64,
        temperature=0.0,
    )
    start = time.perf_counter()
    first = 0.0
    tokens = 0
    for event in llm.generate(request, CancelToken()):
        first = first or time.perf_counter() - start
        if isinstance(event, GenerationDone):
            tokens = event.completion_tokens
    return (time.perf_counter() - start - first) / max(1, tokens - 1)


def tts_real_time_factor(synthesizer: Synthesizer, voice: str) -> float:
    """Synthesis seconds per second of audio, times 1000 (so the summary's ms fields read as it)."""
    start = time.perf_counter()
    samples = sum(len(chunk) for chunk in synthesizer.synthesize(REPLY, voice=voice))
    return (time.perf_counter() - start) / (samples / synthesizer.sample_rate)


def asr_clip(transcriber: Transcriber, audio: np.ndarray[Any, np.dtype[np.float32]]) -> float:
    start = time.perf_counter()
    transcriber.transcribe(audio, language="en")
    return time.perf_counter() - start


def tts_first_chunk(synthesizer: Synthesizer, voice: str) -> float:
    start = time.perf_counter()
    first = None
    for _chunk in synthesizer.synthesize(REPLY, voice=voice):
        first = first or time.perf_counter() - start
    return first or time.perf_counter() - start


def count_tokens(count: Callable[[str], int], runs: int) -> list[float]:
    samples = []
    for index in range(runs):
        text = f"{DEFAULT_INSTRUCTIONS} {index}"  # distinct texts: no cache hit
        start = time.perf_counter()
        count(text)
        samples.append(time.perf_counter() - start)
    return samples


def load_clip() -> np.ndarray[Any, np.dtype[np.float32]]:
    with wave.open(str(AUDIO / f"{CLIP}.wav")) as handle:
        pcm = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2")
    return (pcm.astype(np.float32) / 32768.0).astype(np.float32)


def measure(
    label: str, llm: LanguageModel, asr: Transcriber, tts: Synthesizer, voice: str, runs: int
) -> dict[str, Any]:
    audio = load_clip()
    print(f"{label}: llm", flush=True)
    result = {"llm_first_token": summary(timed(runs, lambda: llm_first_token(llm)))}
    print(f"{label}: asr", flush=True)
    result["asr_clip"] = summary(timed(runs, lambda: asr_clip(asr, audio)))
    result["asr_clip"]["audio_seconds"] = round(audio.size / 16000, 2)
    print(f"{label}: tts", flush=True)
    result["tts_first_chunk"] = summary(timed(runs, lambda: tts_first_chunk(tts, voice)))
    print(f"{label}: rates", flush=True)
    result["llm_ms_per_token"] = summary(timed(3, lambda: llm_decode_seconds_per_token(llm)))
    result["tts_real_time_factor_x1000"] = summary(timed(3, lambda: tts_real_time_factor(tts, voice)))
    result["llm_count_tokens"] = summary(count_tokens(llm.count_tokens, runs * 5))
    return result


def in_process(runs: int) -> dict[str, Any]:
    from openrealtime.engines.asr.whisper import WhisperTranscriber
    from openrealtime.engines.llm.llamacpp import LlamaCppModel
    from openrealtime.engines.tts.voices import VoiceTable, default_engines

    llm = LlamaCppModel("qwen2.5-0.5b", n_threads=1, seed=7)
    asr = WhisperTranscriber("whisper-base", cpu_threads=1)
    tts, voice = VoiceTable(default_engines()).resolve("marin")
    try:
        return measure("in-process", llm, asr, tts, voice, runs)
    finally:
        del llm, asr, tts


def on_ray(address: str, runs: int, deploy: bool) -> dict[str, Any]:
    from openrealtime.config import Settings
    from openrealtime.engines.ray import adapters
    from openrealtime.engines.registry import build_engines

    env = {**os.environ, "OPENREALTIME_RAY_APP": APP, "OPENREALTIME_LLM_SEED": "7"}
    if deploy:
        started = time.perf_counter()
        up = [sys.executable, "-m", "openrealtime.cli", "engines", "up", "--address", address]
        subprocess.run([*up, "--engines", "llm,asr,tts", "--cpus", "0.5"], env=env, check=True)
        print(f"engines up: {time.perf_counter() - started:.1f}s", flush=True)
    settings = Settings(
        ray_address=address, ray_engines=["llm", "asr", "tts"], ray_app=APP, vision="none", warm_up=False
    )
    engines = build_engines(settings, speech=True)
    assert engines.transcriber is not None and engines.voices is not None
    tts, voice = engines.voices.resolve("marin")
    result = measure("ray", engines.llm, engines.transcriber, tts, voice, runs)
    remote = adapters.RayLanguageModel(adapters._handle(APP, "llm"), local_tokenizer=False)
    result["llm_count_tokens_round_trip"] = summary(count_tokens(remote.count_tokens, runs * 5))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--address", help="an existing cluster with the engines deployed (app 'orbench')")
    args = parser.parse_args()
    local = in_process(args.runs)
    if args.address:
        ray = on_ray(args.address, args.runs, deploy=False)
    else:
        with local_cluster() as address:
            ray = on_ray(address, args.runs, deploy=True)
            import ray as ray_module

            ray_module.shutdown()
    overhead = {
        stage: {
            "added_ms": round(ray[stage]["median_ms"] - local[stage]["median_ms"], 1),
            "ratio": round(ray[stage]["median_ms"] / max(local[stage]["median_ms"], 0.001), 2),
        }
        for stage in (
            "llm_first_token",
            "asr_clip",
            "tts_first_chunk",
            "llm_ms_per_token",
            "tts_real_time_factor_x1000",
            "llm_count_tokens",
        )
    }
    report = {
        "machine": machine_info(),
        "models": {"llm": "qwen2.5-0.5b (1 thread)", "asr": "whisper-base (1 thread)", "tts": "piper joe"},
        "ray": "2.60.0, one node on this machine, one replica per engine (0.5 CPU reserved each)",
        "in_process": local,
        "on_ray": ray,
        "overhead": overhead,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ray_overhead.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"in_process": local, "on_ray": ray, "overhead": overhead}, indent=2))


if __name__ == "__main__":
    main()
