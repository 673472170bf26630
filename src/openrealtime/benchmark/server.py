"""A server for the benchmark to measure: either one already running, or one it starts itself.

A self-started server runs ``openrealtime serve`` in its own process on a free loopback port,
with a throw-away API key and data dir, and logs to a file: its ``turn timings`` lines give
the per-stage breakdown that a client cannot see.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = ["BenchServer", "parse_turn_timings", "start_server"]

TURN_TIMINGS_MARKER = "turn timings "


@dataclass(frozen=True)
class BenchServer:
    """Where to connect; ``log_path`` only for a server this process started."""

    url: str
    api_key: str
    log_path: Path | None = None

    @property
    def realtime_url(self) -> str:
        base = self.url.rstrip("/")
        if base.startswith("http"):
            base = "ws" + base.removeprefix("http")
        if not base.endswith("/v1"):
            base += "/v1"
        return base + "/realtime?model=gpt-realtime"

    def turn_timings(self) -> dict[str, dict[str, Any]]:
        """The server's per-response stage timings so far, by response id (empty if unknown)."""
        if self.log_path is None or not self.log_path.exists():
            return {}
        return parse_turn_timings(self.log_path.read_text(errors="replace"))


def parse_turn_timings(log_text: str) -> dict[str, dict[str, Any]]:
    """Every ``turn timings {json}`` record in a server log, by response id."""
    records: dict[str, dict[str, Any]] = {}
    for line in log_text.splitlines():
        if TURN_TIMINGS_MARKER not in line:
            continue
        with contextlib.suppress(ValueError):
            record = json.loads(line.split(TURN_TIMINGS_MARKER, 1)[1])
            if isinstance(record, dict) and isinstance(record.get("response_id"), str):
                records[record["response_id"]] = record
    return records


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def start_server(
    serve_args: list[str], *, timeout_s: float = 600.0, env: dict[str, str] | None = None
) -> Iterator[BenchServer]:
    """``openrealtime serve`` on a free loopback port until the block ends; waits for health.
    ``env`` adds settings (``OPENREALTIME_*``) to the server's environment."""
    port = _free_port()
    api_key = "sk-bench-" + secrets.token_hex(12)
    with tempfile.TemporaryDirectory(prefix="openrealtime-bench-") as tmp:
        log_path = Path(tmp) / "server.log"
        env = {
            **os.environ,
            "OPENREALTIME_API_KEYS": api_key,
            "OPENREALTIME_DATA_DIR": str(Path(tmp) / "data"),
            "OPENREALTIME_LOG_LEVEL": "info",
            "HF_HUB_OFFLINE": "1",
            **(env or {}),
        }
        command = [sys.executable, "-m", "openrealtime.cli", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(port), *serve_args]
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        server = BenchServer(f"http://127.0.0.1:{port}", api_key, log_path)
        try:
            _wait_healthy(server, process, timeout_s)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_healthy(server: BenchServer, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            tail = server.log_path.read_text(errors="replace")[-3000:] if server.log_path else ""
            raise RuntimeError(f"the server exited during start-up:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url + "/healthz", timeout=2.0).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server was not healthy after {timeout_s:.0f} s")
        time.sleep(0.25)
