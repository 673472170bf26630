"""Engine faults against the real server: an OpenAI-compatible LLM endpoint that is down, or
dies half way through an answer, with and without the embedded model as a fallback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI

from openrealtime.engines.assets import resolve
from openrealtime.runtime.responding import UNAVAILABLE_APOLOGY
from tests.support import (
    ServerProcess,
    free_port,
    llama_cpp_server_process,
    run_server,
    validate_server_event,
)

pytestmark = pytest.mark.slow


class Session:
    def __init__(self, connection: Any) -> None:
        self.connection = connection

    async def until(self, kind: str) -> list[dict[str, Any]]:
        events = []
        while True:
            event = validate_server_event(await self.connection.recv_bytes())
            events.append(event)
            if event["type"] == kind:
                return events

    async def turn(self, text: str, max_tokens: int = 40) -> tuple[dict[str, Any], str]:
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
        await self.connection.send({"type": "conversation.item.create", "item": item})
        await self.connection.send({"type": "response.create", "response": {"max_output_tokens": max_tokens}})
        events = await self.until("response.done")
        answer = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        return events[-1]["response"], answer


async def open_session(server: ServerProcess) -> tuple[Any, Session]:
    sdk = AsyncOpenAI(base_url=server.base_url, api_key=server.api_key)
    manager = sdk.realtime.connect(model="gpt-realtime")
    connection = await manager.__aenter__()
    session = Session(connection)
    await session.until("session.created")
    await connection.send(
        {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}}
    )
    await session.until("session.updated")
    return manager, session


@pytest.fixture(scope="module")
def dead_endpoint_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"OPENREALTIME_LLM_BASE_URL": f"http://127.0.0.1:{free_port()}/v1"}  # nothing listens there
    with run_server(tmp_path_factory.mktemp("dead-llm"), args=["--text-only"], env=env) as server:
        yield server


async def test_an_unreachable_llm_gets_an_apology_and_the_session_goes_on(
    dead_endpoint_server: ServerProcess,
) -> None:
    manager, session = await open_session(dead_endpoint_server)
    try:
        for question in ("Hello?", "Are you there?"):
            response, answer = await session.turn(question)
            assert response["status"] == "completed"
            assert answer == UNAVAILABLE_APOLOGY
            assert response["output"][0]["content"][0]["text"] == UNAVAILABLE_APOLOGY
    finally:
        await manager.__aexit__(None, None, None)
    assert "language model is unavailable" in dead_endpoint_server.log()


async def test_the_embedded_model_answers_when_the_endpoint_is_down(tmp_path: Path) -> None:
    env = {
        "OPENREALTIME_LLM_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
        "OPENREALTIME_LLM_FALLBACK": "smollm2-135m",
    }
    with run_server(tmp_path, args=["--text-only"], env=env) as server:
        manager, session = await open_session(server)
        try:
            response, answer = await session.turn("Say hello.")
        finally:
            await manager.__aexit__(None, None, None)
        assert response["status"] in ("completed", "incomplete")
        assert answer.strip() and answer != UNAVAILABLE_APOLOGY
        assert "answering with smollm2-135m" in server.log()


async def test_an_endpoint_dying_mid_answer_fails_that_response_only(tmp_path: Path) -> None:
    with llama_cpp_server_process(tmp_path, resolve("smollm2-135m")) as (base_url, llama):
        env = {"OPENREALTIME_LLM_BASE_URL": base_url, "OPENREALTIME_LLM_FALLBACK": "smollm2-135m"}
        with run_server(tmp_path, args=["--text-only"], env=env) as server:
            manager, session = await open_session(server)
            try:
                item = {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "Write a long story about a lighthouse keeper."}
                    ],
                }
                await session.connection.send({"type": "conversation.item.create", "item": item})
                await session.connection.send(
                    {"type": "response.create", "response": {"max_output_tokens": 1000}}
                )
                await session.until("response.output_text.delta")
                llama.kill()  # the endpoint dies while it streams
                llama.wait()
                done = (await session.until("response.done"))[-1]["response"]
                assert done["status"] == "failed", done
                assert done["status_details"]["error"]["code"] == "engine_error"
                # the next turn is answered (by the fallback) in the same session
                response, answer = await session.turn("Say hello.")
                assert response["status"] in ("completed", "incomplete") and answer.strip()
                assert answer != UNAVAILABLE_APOLOGY
            finally:
                await manager.__aexit__(None, None, None)
