"""What a hop to a remote engine adds: a second openrealtime's audio endpoints for
transcription and speech, and an OpenAI-compatible LLM server for the first token.

Measured at the engine seam the sessions use: the embedded Whisper and Piper in this process,
against ``RemoteTranscriber`` / ``RemoteSynthesizer`` (the classes ``ASR_BASE_URL`` and
``TTS_BASE_URL`` install) talking to a second ``openrealtime serve`` on loopback that runs the
same models. Stages: transcription of a short turn (the shared clips of at most 5 s, whole-turn
pass, as a session with remote ASR does at end of speech) and the first chunk of a short reply.
Local and remote runs alternate, one at a time, so they never compete for the cores and load
drift hits both alike; the added latency is reported as the median of the paired differences.
With ``--llm`` (default) the same is done for the LLM's first token: the embedded llama.cpp
model in this process against ``OpenAICompatibleModel`` (what ``LLM_BASE_URL`` installs) on
llama.cpp's own OpenAI-compatible server (``python -m llama_cpp.server``) with the same GGUF,
a new question after the default instructions each run, as in a live session.

    python bench/remote_speech_latency.py [--rounds 3] [--no-llm]

Writes bench/results/remote_speech_latency.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import wave
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from machine import machine_info

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from openrealtime.benchmark.server import start_server
from openrealtime.engines.asr.remote import RemoteTranscriber
from openrealtime.engines.asr.whisper import WhisperTranscriber
from openrealtime.engines.base import (
    CancelToken,
    ChatMessage,
    ChatRequest,
    LanguageModel,
    Synthesizer,
    TextDelta,
    ToolCallDelta,
    Transcriber,
)
from openrealtime.engines.remote import RemoteEndpoint
from openrealtime.engines.tts.remote import RemoteSynthesizer
from openrealtime.engines.tts.voices import VoiceTable, default_engines
from openrealtime.protocol.session import DEFAULT_INSTRUCTIONS

RESULTS = Path(__file__).resolve().parent / "results"
AUDIO = Path(__file__).resolve().parents[2] / "shared" / "audio"
SHORT_TURN_SECONDS = 5.0
CONTEXT = 4096
REPLIES = (
    "Sure, I can help with that.",
    "Your order shipped yesterday and should arrive on Friday.",
    "The ten of clubs is on the table.",
    "Let me check that for you.",
)


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(p95 * 1000, 1),
        "min_ms": round(ordered[0] * 1000, 1),
        "runs": len(ordered),
    }


def short_turns() -> dict[str, np.ndarray[Any, np.dtype[np.float32]]]:
    clips = {}
    for path in sorted(AUDIO.glob("*.wav")):
        with wave.open(str(path)) as handle:
            pcm = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2")
        if pcm.size / 16_000 <= SHORT_TURN_SECONDS:
            clips[path.stem] = (pcm.astype(np.float32) / 32768.0).astype(np.float32)
    return clips


def transcription(engine: Transcriber, audio: np.ndarray[Any, np.dtype[np.float32]]) -> float:
    start = time.perf_counter()
    engine.transcribe(audio, language="en")
    return time.perf_counter() - start


def first_chunk(engine: Synthesizer, voice: str, text: str) -> float:
    start = time.perf_counter()
    first = None
    for _chunk in engine.synthesize(text, voice=voice):
        first = first or time.perf_counter() - start
    return first or time.perf_counter() - start


_question = iter(range(1_000_000))


def llm_first_token(llm: LanguageModel) -> float:
    request = ChatRequest(
        messages=(
            ChatMessage(role="system", content=DEFAULT_INSTRUCTIONS),
            ChatMessage(role="user", content=f"Question {next(_question)}: what is the capital of France?"),
        ),
        max_output_tokens=8,
        temperature=0.0,
    )
    start = time.perf_counter()
    first = None
    for event in llm.generate(request, CancelToken()):
        if isinstance(event, TextDelta | ToolCallDelta):
            first = first or time.perf_counter() - start
    return first or time.perf_counter() - start


@contextlib.contextmanager
def llama_cpp_server(model: Path, threads: int, context: int) -> Iterator[str]:
    """``python -m llama_cpp.server`` on ``model`` on a free loopback port; yields its /v1 URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--n_threads", str(threads), "--n_ctx", str(context)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                raise RuntimeError("llama_cpp.server exited during start-up")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/models", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("llama_cpp.server did not come up")
            time.sleep(0.25)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def llm_hop(rounds: int) -> dict[str, Any]:
    from openrealtime.engines.assets import resolve
    from openrealtime.engines.llm.llamacpp import LlamaCppModel
    from openrealtime.engines.llm.openai_compatible import OpenAICompatibleModel

    local = LlamaCppModel("qwen2.5-0.5b", n_threads=1, n_ctx=CONTEXT, seed=7)
    with llama_cpp_server(resolve("qwen2.5-0.5b"), threads=1, context=CONTEXT) as url:
        remote = OpenAICompatibleModel(url, "qwen2.5-0.5b")
        print(f"llm first token x {rounds * 8}", flush=True)
        return paired(rounds * 8, [partial(llm_first_token, local)], [partial(llm_first_token, remote)])


def paired(rounds: int, jobs: list[Callable[[], float]], other: list[Callable[[], float]]) -> dict[str, Any]:
    """Run each job and its counterpart back to back (order alternating), ``rounds`` times."""
    for job in (jobs[0], other[0]):
        job()  # warm-up: lazy loads, connection pool
    local: list[float] = []
    remote: list[float] = []
    for index in range(rounds * len(jobs)):
        first, second = jobs[index % len(jobs)], other[index % len(jobs)]
        if index % 2:
            remote.append(second())
            local.append(first())
        else:
            local.append(first())
            remote.append(second())
    added = [r - lo for lo, r in zip(local, remote, strict=True)]
    return {
        "local": summary(local),
        "remote": summary(remote),
        "added_median_ms": round(statistics.median(added) * 1000, 1),
        "added_p95_ms": round(sorted(added)[min(len(added) - 1, round(0.95 * (len(added) - 1)))] * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="passes over the clips and replies")
    parser.add_argument("--llm", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    clips = short_turns()
    local_asr = WhisperTranscriber("whisper-base", cpu_threads=1)
    local_tts, voice = VoiceTable(default_engines()).resolve("marin")
    with start_server(["--llm", "smollm2-135m"]) as server:
        endpoint = RemoteEndpoint(server.url + "/v1", "whisper-1", server.api_key, timeout_s=60)
        remote_asr = RemoteTranscriber(endpoint)
        remote_tts = RemoteSynthesizer(RemoteEndpoint(server.url + "/v1", "tts-1", server.api_key, 60))
        print(f"transcription of {len(clips)} short turns x {args.rounds}", flush=True)
        asr = paired(
            args.rounds,
            [partial(transcription, local_asr, audio) for audio in clips.values()],
            [partial(transcription, remote_asr, audio) for audio in clips.values()],
        )
        print(f"speech first chunk of {len(REPLIES)} replies x {args.rounds * 3}", flush=True)
        tts = paired(
            args.rounds * 3,
            [partial(first_chunk, local_tts, voice, text) for text in REPLIES],
            [partial(first_chunk, remote_tts, "marin", text) for text in REPLIES],
        )
    report: dict[str, Any] = {
        "machine": machine_info(),
        "models": {"asr": "whisper-base (1 thread)", "tts": "piper joe (marin)"},
        "remote": "a second openrealtime serve on loopback (same models), over HTTP/1.1 with httpx",
        "short_turn_seconds": {name: round(a.size / 16_000, 2) for name, a in clips.items()},
        "transcription_short_turn": asr,
        "tts_first_chunk": tts,
    }
    if args.llm:
        report["llm_first_token"] = llm_hop(args.rounds)
        report["llm"] = f"qwen2.5-0.5b, 1 thread, n_ctx {CONTEXT}; remote: llama_cpp.server on loopback"
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "remote_speech_latency.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
