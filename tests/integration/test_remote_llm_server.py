"""The whole server on an OpenAI-compatible LLM endpoint: a real ``llama_cpp.server`` process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import AsyncOpenAI

from openrealtime.engines.assets import resolve
from tests.support import ServerProcess, run_llama_cpp_server, run_server, validate_server_event

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def remote_llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp: Path = tmp_path_factory.mktemp("remote-llm")
    with run_llama_cpp_server(tmp, resolve("smollm2-135m")) as base_url:
        env = {"OPENREALTIME_LLM_BASE_URL": base_url, "OPENREALTIME_LLM_MODEL": "smollm2"}
        with run_server(tmp, args=["--text-only"], env=env) as server:
            yield server


async def test_text_turn_through_an_openai_compatible_endpoint(remote_llm_server: ServerProcess) -> None:
    client = AsyncOpenAI(base_url=remote_llm_server.base_url, api_key=remote_llm_server.api_key)
    async with client.realtime.connect(model="gpt-realtime") as connection:
        events = []

        async def until(kind: str) -> dict[str, object]:
            while True:
                event = validate_server_event(await connection.recv_bytes())
                events.append(event)
                if event["type"] == kind:
                    return event

        await until("session.created")
        await connection.send(
            {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}}
        )
        await until("session.updated")
        await connection.send(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Say hello."}],
                },
            }
        )
        await connection.send({"type": "response.create", "response": {"max_output_tokens": 40}})
        done = await until("response.done")
        response = done["response"]
        assert isinstance(response, dict) and response["status"] in ("completed", "incomplete")
        text = "".join(str(e["delta"]) for e in events if e["type"] == "response.output_text.delta")
        assert text.strip()
        assert response["usage"]["input_tokens"] > 0 and response["usage"]["output_tokens"] > 0
