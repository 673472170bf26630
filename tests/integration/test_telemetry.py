"""Telemetry of the real server: Prometheus metrics after a real voice turn, OTLP traces
received by a real OTLP/HTTP endpoint, JSON log lines without secrets."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import websockets
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from tests.speech_audio import caller_audio
from tests.support import ServerProcess, free_port, run_server, validate_server_event
from tests.voice_client import CallerRun, collect, stream_audio

pytestmark = pytest.mark.slow

FIXED_REPLY = "Whatever the user says, reply with exactly this sentence: Thank you, I heard you clearly."
STAGES = ("transcript", "llm_first_token", "tts_first_chunk", "first_audio")
SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


# --------------------------------------------------------------------------- an OTLP receiver


class OtlpReceiver:
    """A minimal OTLP/HTTP (protobuf) trace endpoint on loopback that keeps every span."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.add(request)
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, request: Any) -> None:
        with self.lock:
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        attributes = {}
                        for kv in span.attributes:
                            kind = kv.value.WhichOneof("value")
                            attributes[kv.key] = getattr(kv.value, kind) if kind else None
                        self.spans.append(
                            {
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent": span.parent_span_id.hex(),
                                "start": span.start_time_unix_nano,
                                "end": span.end_time_unix_nano,
                                "attributes": attributes,
                            }
                        )

    def trace_of(self, response_id: str, names: set[str], timeout: float = 30.0) -> list[dict[str, Any]]:
        """The spans of the trace whose root is ``response_id``'s turn, once all of ``names`` arrived."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                roots = [
                    s
                    for s in self.spans
                    if s["name"] == "realtime.turn" and s["attributes"].get("response.id") == response_id
                ]
                spans = [s for s in self.spans if roots and s["trace_id"] == roots[0]["trace_id"]]
            if names <= {s["name"] for s in spans}:
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"no trace with {names} for {response_id}; got {spans}")
            time.sleep(0.1)


@pytest.fixture(scope="module")
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, otlp: OtlpReceiver) -> Iterator[ServerProcess]:
    env = {
        "OPENREALTIME_OTLP_ENDPOINT": otlp.url,
        "OPENREALTIME_LOG_FORMAT": "json",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    with run_server(tmp_path_factory.mktemp("telemetry-server"), env=env) as process:
        yield process


# --------------------------------------------------------------------------- helpers


def scrape(server: ServerProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``/metrics`` parsed into {(name, labels): value}."""
    response = httpx.get(
        server.url + "/metrics", headers={"Authorization": f"Bearer {server.api_key}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for line in response.text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, line
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
        samples[(match["name"], labels)] = float(match["value"])
    return samples


def sample(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def update(ws: Any, **session: Any) -> None:
    await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", **session}}))
    await collect(ws, CallerRun(), "session.updated")


# --------------------------------------------------------------------------- tests


def test_metrics_needs_an_api_key_and_refuses_ephemeral_keys(server: ServerProcess) -> None:
    assert httpx.get(server.url + "/metrics").status_code == 401
    wrong = httpx.get(server.url + "/metrics", headers={"Authorization": "Bearer sk-wrong-key-000000"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    minted = httpx.post(
        server.url + "/v1/realtime/client_secrets",
        headers={"Authorization": f"Bearer {server.api_key}"},
        json={"session": {"type": "realtime", "model": "gpt-realtime"}},
    )
    assert minted.status_code == 200, minted.text
    ephemeral = minted.json()["value"]
    assert ephemeral.startswith("ek_")
    refused = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {ephemeral}"})
    assert refused.status_code == 401


async def test_a_voice_turn_moves_the_stage_histograms_and_counters(
    server: ServerProcess, otlp: OtlpReceiver, ws: Any
) -> None:
    before = scrape(server)
    assert sample(before, "openrealtime_active_sessions", transport="websocket") >= 1
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
    receiver = asyncio.create_task(collect(ws, run, "response.done"))
    await stream_audio(ws, caller_audio("cards-005"))
    await asyncio.wait_for(receiver, 120)
    done = run.of("response.done")[0]["response"]
    assert done["status"] == "completed", done
    deltas = len(run.of("response.output_audio.delta"))
    assert deltas > 0

    # turn timings are recorded just after response.done: poll until the histogram moved
    deadline = time.monotonic() + 10
    while True:
        after = scrape(server)
        moved = sample(
            after, "openrealtime_turn_latency_seconds_count", stage="first_audio", origin="speech_stopped"
        ) > sample(
            before, "openrealtime_turn_latency_seconds_count", stage="first_audio", origin="speech_stopped"
        )
        if moved or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    for stage in STAGES:
        labels = {"stage": stage, "origin": "speech_stopped"}
        assert delta("openrealtime_turn_latency_seconds_count", **labels) == 1, stage
        assert delta("openrealtime_turn_latency_seconds_sum", **labels) > 0, stage
        assert delta("openrealtime_turn_latency_seconds_bucket", le="+Inf", **labels) == 1, stage
    usage = done["usage"]
    assert (
        delta("openrealtime_tokens_total", type="input_audio") == usage["input_token_details"]["audio_tokens"]
    )
    assert (
        delta("openrealtime_tokens_total", type="output_audio")
        == usage["output_token_details"]["audio_tokens"]
    )
    assert (
        delta("openrealtime_tokens_total", type="output_text") == usage["output_token_details"]["text_tokens"]
    )
    assert (
        delta("openrealtime_tokens_total", type="input_text") == usage["input_token_details"]["text_tokens"]
    )
    assert delta("openrealtime_cost_usd_total") > 0
    assert delta("openrealtime_client_events_total", type="session.update") == 1
    assert delta("openrealtime_client_events_total", type="input_audio_buffer.append") > 10
    assert delta("openrealtime_server_events_total", type="response.output_audio.delta") == deltas
    assert delta("openrealtime_server_events_total", type="response.done") == 1
    assert delta("openrealtime_responses_total", status="completed") == 1
    for engine in ("vad", "asr", "llm", "tts"):
        assert delta("openrealtime_engine_queue_wait_seconds_count", engine=engine) > 0, engine
    late = delta("openrealtime_audio_late_chunks_total")
    assert 0 <= late < deltas
    print(f"late chunks: {late:.0f} of {deltas} audio deltas")

    spans = otlp.trace_of(
        done["id"], {"realtime.turn", "listen", "transcribe", "llm.first_token", "tts.first_chunk"}
    )
    root = next(s for s in spans if s["name"] == "realtime.turn")
    listen = next(s for s in spans if s["name"] == "listen")
    transcribe = next(s for s in spans if s["name"] == "transcribe")
    assert root["start"] == listen["start"] and listen["end"] == transcribe["start"]
    assert root["attributes"]["turn.origin"] == "speech_stopped"


async def text_turn(ws: Any) -> dict[str, Any]:
    await update(ws, output_modalities=["text"], instructions="Answer in one short sentence.")
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello."}]}
    await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
    await ws.send(json.dumps({"type": "response.create"}))
    run = CallerRun()
    await collect(ws, run, "response.done")
    response: dict[str, Any] = run.of("response.done")[0]["response"]
    return response


async def test_a_text_turn_is_exported_as_a_trace(server: ServerProcess, otlp: OtlpReceiver, ws: Any) -> None:
    response = await text_turn(ws)
    spans = otlp.trace_of(response["id"], {"realtime.turn", "llm.first_token"})
    root = next(s for s in spans if s["name"] == "realtime.turn")
    llm = next(s for s in spans if s["name"] == "llm.first_token")
    assert root["parent"] == "" and llm["parent"] == root["span_id"]
    assert root["start"] <= llm["start"] < llm["end"] <= root["end"]
    assert root["attributes"]["response.id"] == response["id"]
    assert root["attributes"]["session.id"].startswith("sess_")
    assert root["attributes"]["transport"] == "websocket"
    assert root["attributes"]["model"] == "gpt-realtime"
    assert root["attributes"]["response.status"] == "completed"
    assert not {"listen", "transcribe"} & {s["name"] for s in spans}
    text = json.dumps(spans)
    assert server.api_key not in text and "Say hello" not in text


async def test_json_log_lines_parse_and_hold_no_key(server: ServerProcess) -> None:
    """Even a key a client put in the URL (logged by uvicorn) never reaches the log."""
    key = server.api_key
    httpx.get(server.url + f"/metrics?api_key={key}", headers={"Authorization": f"Bearer {key}"})
    url = server.ws_url + f"/v1/realtime?model=gpt-realtime&api_key={key}"
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as socket:
        assert validate_server_event(await socket.recv())["type"] == "session.created"
        response = await text_turn(socket)
    log = server.log()
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert records and all({"timestamp", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["logger"].startswith("uvicorn") and "api_key=" in r["message"] for r in records)
    turn = [r for r in records if r["message"].startswith("turn timings") and response["id"] in r["message"]]
    assert len(turn) == 1 and turn[0]["session_id"].startswith("sess_")
    assert turn[0]["response_id"] == response["id"]
    assert key not in log


async def test_open_metrics_text_logs_and_traces_flushed_at_shutdown(
    tmp_path_factory: pytest.TempPathFactory, otlp: OtlpReceiver
) -> None:
    """``metrics_auth=false`` opens /metrics; buffered spans are exported when the server stops."""
    env = {
        "OPENREALTIME_METRICS_AUTH": "false",
        "OPENREALTIME_WARM_UP": "false",
        "OPENREALTIME_OTLP_ENDPOINT": otlp.url,
        "OTEL_BSP_SCHEDULE_DELAY": "600000",  # nothing is exported before shutdown
    }
    with run_server(tmp_path_factory.mktemp("open-metrics"), args=["--text-only"], env=env) as server:
        opened = httpx.get(server.url + "/metrics")
        assert opened.status_code == 200 and "openrealtime_active_sessions" in opened.text
        url = server.ws_url + f"/v1/realtime?model=gpt-realtime&api_key={server.api_key}"
        headers = {"Authorization": f"Bearer {server.api_key}"}
        async with websockets.connect(url, additional_headers=headers) as socket:
            assert validate_server_event(await socket.recv())["type"] == "session.created"
            response = await text_turn(socket)
        with otlp.lock:
            assert not [s for s in otlp.spans if s["attributes"].get("response.id") == response["id"]]
    otlp.trace_of(response["id"], {"realtime.turn", "llm.first_token"}, timeout=5)
    log = server.log()
    assert "turn timings" in log and "[REDACTED]" in log and server.api_key not in log
    assert not log.lstrip().startswith("{")  # text format
