"""``moderation=endpoint`` against a small OpenAI-shaped ``/v1/moderations`` server on loopback."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, generate_latest

from openrealtime.config import Settings
from openrealtime.engines.tts.chunker import ClauseChunker
from openrealtime.safety import Moderation, build_moderation
from openrealtime.telemetry.metrics import ModerationMetrics
from tests.support import free_port

API_KEY = "mod-test-key"
CATEGORIES = ("harassment", "hate", "self-harm", "sexual", "violence", "violence/graphic")


@dataclass
class ModerationServer:
    url: str
    inputs: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)


def moderation_app(seen: ModerationServer) -> FastAPI:
    app = FastAPI()

    def result(text: str) -> dict[str, Any]:
        lowered = text.lower()
        flags = {name: False for name in CATEGORIES}
        flags["violence"] = "bomb" in lowered
        flags["harassment"] = "hate you" in lowered
        scores = {name: (0.97 if on else 0.001) for name, on in flags.items()}
        return {
            "flagged": any(flags.values()),
            "categories": flags,
            "category_scores": scores,
            "category_applied_input_types": {name: ["text"] for name in CATEGORIES},
        }

    @app.post("/v1/moderations")
    async def moderate(request: Request) -> JSONResponse:
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return JSONResponse({"error": {"message": "Incorrect API key provided."}}, status_code=401)
        body = await request.json()
        seen.models.append(body["model"])
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        seen.inputs.extend(texts)
        return JSONResponse(
            {"id": f"modr-{len(seen.inputs)}", "model": body["model"], "results": [result(t) for t in texts]}
        )

    @app.post("/slow/v1/moderations")
    async def slow() -> JSONResponse:
        await asyncio.sleep(3)
        return JSONResponse({"results": [{"flagged": False, "categories": {}}]})

    @app.post("/broken/v1/moderations")
    async def broken() -> JSONResponse:
        return JSONResponse({"error": {"message": "overloaded"}}, status_code=500)

    return app


@pytest.fixture(scope="module")
def endpoint() -> Iterator[ModerationServer]:
    port = free_port()
    seen = ModerationServer(f"http://127.0.0.1:{port}")
    server = uvicorn.Server(
        uvicorn.Config(moderation_app(seen), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "moderation server did not start"
        time.sleep(0.05)
    yield seen
    server.should_exit = True
    thread.join(10)


def moderation_for(url: str, registry: CollectorRegistry | None, **overrides: Any) -> Moderation:
    settings = Settings(
        moderation="endpoint",
        moderation_url=url,
        moderation_api_key=API_KEY,
        moderation_model="omni-moderation-latest",
        **overrides,
    )
    moderation = build_moderation(settings, ModerationMetrics(registry) if registry is not None else None)
    assert moderation is not None
    return moderation


async def test_output_is_cut_where_the_endpoint_flags_it(endpoint: ModerationServer) -> None:
    registry = CollectorRegistry()
    moderation = moderation_for(endpoint.url + "/v1/moderations", registry)
    output = moderation.output(ClauseChunker(min_first_words=3), session_id="sess_e")
    decisions = await output.push("Here is the plan for tonight. Then we build a bomb in the shed. ")
    decisions += await output.push("And then we leave.")
    decisions += await output.flush()
    assert [(d.action, d.text) for d in decisions] == [
        ("pass", "Here is the plan for tonight."),
        ("block", ""),
    ]
    assert output.blocked is not None and output.blocked.rules == ("endpoint:violence",)
    # each clause is judged with the text before it; nothing after the cut is sent
    assert endpoint.inputs[-2:] == [
        "Here is the plan for tonight.",
        "Here is the plan for tonight. Then we build a bomb in the shed.",
    ]
    assert set(endpoint.models) == {"omni-moderation-latest"}

    refused = await moderation.check_input("I hate you so much")
    assert refused.blocked and refused.refusal == Settings().moderation_refusal
    assert refused.rules == ("endpoint:harassment",)
    assert (await moderation.check_input("What is the weather like?")).action == "pass"
    text = generate_latest(registry).decode()
    assert 'openrealtime_moderation_blocks_total{direction="output",rule="endpoint:violence"} 1.0' in text
    assert 'openrealtime_moderation_blocks_total{direction="input",rule="endpoint:harassment"} 1.0' in text
    assert "bomb" not in text and "hate you" not in text
    await moderation.close()


@pytest.mark.parametrize("path", ["/slow/v1/moderations", "/broken/v1/moderations", "/v1/moderations"])
async def test_a_failing_endpoint_blocks_unless_configured_to_fail_open(
    endpoint: ModerationServer, path: str
) -> None:
    key = "wrong-key" if path == "/v1/moderations" else API_KEY  # 401 is a failure too
    registry = CollectorRegistry()
    closed = moderation_for(endpoint.url + path, registry, moderation_timeout_seconds=0.5)
    closed.moderator._client.headers["Authorization"] = f"Bearer {key}"  # type: ignore[attr-defined]
    started = time.monotonic()
    verdict = await closed.check_input("Hello there")
    assert time.monotonic() - started < 2.5  # the timeout, not the slow answer
    assert verdict.blocked and verdict.rules == ("endpoint_error",)
    assert 'openrealtime_moderation_errors_total{direction="input"} 1.0' in generate_latest(registry).decode()
    opened = moderation_for(
        endpoint.url + path, None, moderation_timeout_seconds=0.5, moderation_fail_closed=False
    )
    opened.moderator._client.headers["Authorization"] = f"Bearer {key}"  # type: ignore[attr-defined]
    output = opened.output()
    decisions = await output.push("Fine words only. ") + await output.flush()
    assert [(d.action, d.text, d.error) for d in decisions] == [("pass", "Fine words only.", True)]
    await closed.close()
    await opened.close()
