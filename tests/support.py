"""Helpers shared by the tests: a real server process and strict event validation."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from openai.types.beta.realtime.realtime_server_event import RealtimeServerEvent as BetaServerEvent
from openai.types.beta.realtime.transcription_session import ClientSecret, TranscriptionSession
from openai.types.realtime.realtime_server_event import RealtimeServerEvent
from pydantic import TypeAdapter, create_model

SERVER_EVENT = TypeAdapter(RealtimeServerEvent)
BETA_SERVER_EVENT = TypeAdapter(BetaServerEvent)
BETA_TRANSCRIPTION_SESSION = create_model(
    "BetaTranscriptionSessionOnSocket",
    __base__=TranscriptionSession,
    client_secret=(ClientSecret | None, ...),
)
"""The SDK's beta transcription session, whose ``client_secret`` its own docstring says is
absent on the socket (it exists only in REST answers): here it must be present, as ``null``."""
SHARED = Path(__file__).resolve().parents[2] / "shared"
if not SHARED.exists():
    SHARED = Path(__file__).resolve().parents[1].parent / "shared"
AUDIO_DIR = SHARED / "audio"


def validate_server_event(raw: str | bytes) -> dict[str, Any]:
    """Validate one server frame against the openai SDK's union; any violation fails."""
    data: dict[str, Any] = json.loads(raw)
    SERVER_EVENT.validate_python(data)
    if data["type"] != "input_audio_buffer.dtmf_event_received":
        assert data.get("event_id", "").startswith("event_"), data
    return data


def validate_beta_server_event(raw: str | bytes) -> dict[str, Any]:
    """Validate one server frame against the openai SDK's beta union
    (``openai.types.beta.realtime``); any violation fails.

    ``transcription_session.created`` is not in that union (the beta service sent it first on
    ``?intent=transcription`` sockets); its session is held to the same type as
    ``transcription_session.updated``'s, as is that one's (``client_secret`` ``null``)."""
    data: dict[str, Any] = json.loads(raw)
    assert data.get("event_id", "").startswith("event_"), data
    if data.get("type") in ("transcription_session.created", "transcription_session.updated"):
        assert set(data) == {"type", "event_id", "session"}, data
        session = BETA_TRANSCRIPTION_SESSION.model_validate(data["session"])
        assert session.client_secret is None
        return data
    BETA_SERVER_EVENT.validate_python(data)
    return data


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    url: str
    ws_url: str
    api_key: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def run_server(
    tmp: Path,
    *,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300.0,
    scheme: str = "http",
) -> Iterator[ServerProcess]:
    """Start ``openrealtime serve`` on a free loopback port and wait until it is healthy
    (``scheme="https"`` when ``args`` give it a TLS certificate)."""
    port = free_port()
    key = "sk-test-" + os.urandom(8).hex()
    log_path = tmp / f"server-{port}.log"
    full_env = {
        **os.environ,
        "OPENREALTIME_API_KEYS": key,
        "OPENREALTIME_DATA_DIR": str(tmp / "data"),
        "OPENREALTIME_LLM_SEED": "7",
        "HF_HUB_OFFLINE": "1",
        **(env or {}),
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "openrealtime.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *(args or []),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
    ws_scheme = "wss" if scheme == "https" else "ws"
    server = ServerProcess(
        f"{scheme}://127.0.0.1:{port}", f"{ws_scheme}://127.0.0.1:{port}", key, process, log_path
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{server.log()[-4000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(server.url + "/healthz", timeout=1.0, verify=False).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not become healthy:\n{server.log()[-4000:]}")
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def run_llama_cpp_server(tmp: Path, model: Path, *, timeout: float = 120.0) -> Iterator[str]:
    """``python -m llama_cpp.server`` on ``model`` in its own process; yields its ``/v1`` URL."""
    with llama_cpp_server_process(tmp, model, timeout=timeout) as (base_url, _):
        yield base_url


@contextlib.contextmanager
def llama_cpp_server_process(
    tmp: Path, model: Path, *, timeout: float = 120.0
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Like ``run_llama_cpp_server`` but also yields the process (to make it fail on purpose)."""
    port = free_port()
    log_path = tmp / f"llama-server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "llama_cpp.server",
                "--model", str(model),
                "--host", "127.0.0.1", "--port", str(port),
                "--n_threads", "1", "--n_ctx", "2048",
                "--chat_format", "chatml-function-calling",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + timeout
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {log_path.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server did not come up: {log_path.read_text()[-2000:]}")
            time.sleep(0.25)
        yield base_url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
