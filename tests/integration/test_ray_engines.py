"""Engines on Ray Serve: a real local Ray cluster on loopback, the engines deployed with
``openrealtime engines up``, the real server calling them through the Ray adapters; a real
voice turn, then an LLM replica that batches two sessions' answers (``LLM_PARALLEL`` 2) killed
while both stream."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import websockets

from openrealtime.engines.asr.wer import corpus_wer
from tests.speech_audio import caller_audio, transcripts
from tests.support import ServerProcess, run_server, validate_server_event
from tests.voice_client import CallerRun, collect, output_audio, stream_audio

pytest.importorskip("ray.serve")

pytestmark = pytest.mark.slow

APP = "ortest"
LLM_REPLICA_PREFIX = f"SERVE_REPLICA::{APP}-llm#"
FIXED_REPLY = (
    "Whatever the user says, reply with exactly this sentence: "
    "Thank you for calling, I heard you clearly and I will help you right away."
)

_HEAD = """
import sys, ray
ray.init(address="local", num_cpus=4, include_dashboard=False, _temp_dir=sys.argv[1],
         _node_ip_address="127.0.0.1", configure_logging=False)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the test closes stdin
ray.shutdown()
"""


@pytest.fixture(scope="module")
def ray_env() -> dict[str, str]:
    """Token authentication for the test cluster (Ray's GCS listens beyond loopback)."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": os.urandom(32).hex(), "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture(scope="module")
def ray_address(ray_env: dict[str, str]) -> Iterator[str]:
    """A one-node Ray cluster owned by a child process; closing its stdin shuts the whole
    cluster (GCS, raylet, Serve actors) down."""
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths have a limit
    head = subprocess.Popen(
        [sys.executable, "-c", _HEAD, temp],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **ray_env},
    )
    try:
        assert head.stdout is not None
        address = head.stdout.readline().strip()
        assert address, "the Ray head did not start"
        yield address
    finally:
        if head.stdin is not None:
            head.stdin.close()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_server(
    ray_address: str, ray_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    env = {
        "OPENREALTIME_RAY_APP": APP,
        "OPENREALTIME_LLM_SEED": "7",
        "OPENREALTIME_LLM_PARALLEL": "2",  # the replica batches two generations
        **ray_env,
    }
    up = subprocess.run(
        [
            *(sys.executable, "-m", "openrealtime.cli", "engines", "up", "--address", ray_address),
            *("--engines", "llm,asr,tts", "--cpus", "0.5", "--timeout", "300"),
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"{APP}-llm: RUNNING" in up.stdout, up.stdout
    server_env = {
        **env,
        "OPENREALTIME_RAY_ADDRESS": ray_address,
        "OPENREALTIME_RAY_ENGINES": "llm,asr,tts",
        "OPENREALTIME_VISION": "none",
    }
    with run_server(tmp_path_factory.mktemp("ray-server"), env=server_env) as server:
        yield server
    down = subprocess.run(
        [sys.executable, "-m", "openrealtime.cli", "engines", "down", "--address", ray_address],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert down.returncode == 0 and f"{APP}-llm: deleted" in down.stdout, down.stdout + down.stderr


_DRIVER = """
import sys, ray
ray.init(address=sys.argv[1], namespace="ortest-driver", log_to_driver=False, configure_logging=False)
def replicas():
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                  if a["name"].startswith(sys.argv[2]))
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "kill":
        [name] = replicas()
        ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
        print(name, flush=True)
    else:
        print(",".join(replicas()), flush=True)
"""


class RayDriver:
    """A child process joined to the cluster that lists and kills LLM replicas on request
    (so this test process never becomes a Ray driver itself)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process

    def ask(self, command: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def replicas(self) -> set[str]:
        return {name for name in self.ask("list").split(",") if name}

    def kill_the_replica(self) -> str:
        return self.ask("kill")


@pytest.fixture
def ray_driver(ray_address: str, ray_env: dict[str, str]) -> Iterator[RayDriver]:
    process = subprocess.Popen(
        [sys.executable, "-c", _DRIVER, ray_address, LLM_REPLICA_PREFIX],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **ray_env},
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        yield RayDriver(process)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
async def ws(ray_server: ServerProcess) -> AsyncIterator[Any]:
    url = ray_server.ws_url + "/v1/realtime?model=gpt-realtime"
    headers = {"Authorization": f"Bearer {ray_server.api_key}"}
    async with websockets.connect(url, additional_headers=headers, max_size=None) as socket:
        assert validate_server_event(await socket.recv())["type"] == "session.created"
        yield socket


async def update(ws: Any, **session: Any) -> None:
    await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", **session}}))
    await collect(ws, CallerRun(), "session.updated")


async def text_turn(ws: Any, text: str, max_tokens: int) -> CallerRun:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
    await ws.send(json.dumps({"type": "response.create", "response": {"max_output_tokens": max_tokens}}))
    run = CallerRun()
    await collect(ws, run, "response.done", timeout=120)
    return run


async def test_a_voice_turn_runs_on_the_ray_engines(ray_server: ServerProcess, ws: Any) -> None:
    """Speech in → ASR, LLM and TTS on Ray Serve → a spoken answer that says the reply."""
    assert "llm on Ray" in ray_server.log()
    await update(
        ws,
        instructions=FIXED_REPLY,
        audio={
            "input": {
                "transcription": {"model": "whisper-1", "language": "en"},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 300},
            }
        },
    )
    run = CallerRun()
    receiver = asyncio.create_task(collect(ws, run, "response.done", timeout=120))
    await stream_audio(ws, caller_audio("cards-005"))
    await asyncio.wait_for(receiver, 150)
    heard = run.of("conversation.item.input_audio_transcription.completed")
    assert heard, [r.event["type"] for r in run.events]
    assert corpus_wer([(transcripts()["cards-005"], heard[0]["transcript"])]) <= 0.2, heard[0]
    done = run.of("response.done")[0]["response"]
    assert done["status"] == "completed", done
    said = run.of("response.output_audio_transcript.done")[0]["transcript"]
    assert "thank you for calling" in said.lower(), said
    audio = output_audio(run)
    assert len(audio) > 24_000 * 2, "less than a second of answer audio"
    assert done["usage"]["output_token_details"]["audio_tokens"] > 0


async def test_a_killed_batching_replica_fails_only_the_responses_in_flight_and_is_replaced(
    ray_server: ServerProcess, ws: Any, ray_driver: RayDriver
) -> None:
    """Two sessions' answers decode together in one replica; killing it fails both with
    ``engine_error``, a third session with nothing in flight is untouched, Serve starts a new
    replica and all three sessions are answered by it."""
    url = ray_server.ws_url + "/v1/realtime?model=gpt-realtime"
    headers = {"Authorization": f"Bearer {ray_server.api_key}"}
    async with (
        websockets.connect(url, additional_headers=headers, max_size=None) as second,
        websockets.connect(url, additional_headers=headers, max_size=None) as idle,
    ):
        sessions = [ws, second, idle]
        for socket in sessions:
            if socket is not ws:
                assert validate_server_event(await socket.recv())["type"] == "session.created"
            await update(socket, output_modalities=["text"])
        [replica] = ray_driver.replicas()
        counting = [ws, second]
        for socket in counting:
            item = {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Count from 1 to 300, one number per line."}],
            }
            await socket.send(json.dumps({"type": "conversation.item.create", "item": item}))
            await socket.send(
                json.dumps({"type": "response.create", "response": {"max_output_tokens": 1500}})
            )
        runs = [CallerRun(), CallerRun()]
        await asyncio.gather(
            *(
                collect(socket, run, "response.output_text.delta", timeout=120)
                for socket, run in zip(counting, runs, strict=True)
            )
        )
        assert ray_driver.kill_the_replica() == replica  # while both answers stream
        await asyncio.gather(
            *(
                collect(socket, run, "response.done", timeout=120)
                for socket, run in zip(counting, runs, strict=True)
            )
        )
        for run in runs:
            done = run.of("response.done")[0]["response"]
            assert done["status"] == "failed", done
            assert done["status_details"]["error"]["code"] == "engine_error", done
            assert "Ray" in done["status_details"]["error"]["message"], done
            assert not run.of("error"), run.of("error")  # the session goes on

        deadline = time.monotonic() + 180  # Serve starts a replacement replica (it loads the model)
        while not (ray_driver.replicas() - {replica}):
            assert time.monotonic() < deadline, "Serve did not replace the killed replica"
            await asyncio.sleep(0.5)
        answers = await asyncio.gather(
            *(text_turn(socket, "Say hello.", max_tokens=30) for socket in sessions)
        )
        for after in answers:
            response = after.of("response.done")[0]["response"]
            assert response["status"] in ("completed", "incomplete"), response
            answer = "".join(e["delta"] for e in after.of("response.output_text.delta"))
            assert answer.strip()
