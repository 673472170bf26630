"""Ephemeral keys end to end: minted with the openai SDK, used on the WebSocket, bound config
applied, refused where only API keys may act, and refused once expired."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from tests.support import ServerProcess, validate_server_event

pytestmark = pytest.mark.slow

BOUND = {
    "type": "realtime",
    "instructions": "You are a pirate.",
    "output_modalities": ["text"],
    "audio": {"output": {"voice": "marin"}},
}


async def mint(server: ServerProcess, **body: object) -> dict[str, object]:
    sdk = AsyncOpenAI(base_url=server.base_url, api_key=server.api_key)
    created = await sdk.realtime.client_secrets.create(**body)  # type: ignore[arg-type]
    return created.model_dump()


async def first_event(server: ServerProcess, key: str) -> dict[str, object]:
    sdk = AsyncOpenAI(base_url=server.base_url, api_key=key)
    async with sdk.realtime.connect(model="gpt-realtime") as connection:
        return validate_server_event(await connection.recv_bytes())


async def test_minted_key_opens_a_session_with_the_bound_config(text_server: ServerProcess) -> None:
    before = int(time.time())
    secret = await mint(text_server, session=BOUND, expires_after={"anchor": "created_at", "seconds": 120})
    value = str(secret["value"])
    assert value.startswith("ek_") and len(value) > 20
    assert before + 120 <= int(secret["expires_at"]) <= int(time.time()) + 120  # type: ignore[call-overload]
    session = secret["session"]
    assert isinstance(session, dict)
    assert session["instructions"] == "You are a pirate." and session["output_modalities"] == ["text"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}  # defaults filled

    created = await first_event(text_server, value)
    assert created["type"] == "session.created"
    live = created["session"]
    assert isinstance(live, dict)
    assert live["instructions"] == "You are a pirate." and live["output_modalities"] == ["text"]
    assert live["id"].startswith("sess_") and live["model"] == "gpt-realtime"
    # a key opens several sessions until it expires
    assert (await first_event(text_server, value))["type"] == "session.created"
    assert value not in text_server.log()


async def test_default_ttl_and_config(text_server: ServerProcess) -> None:
    secret = await mint(text_server)
    assert abs(int(secret["expires_at"]) - (int(time.time()) + 600)) <= 5  # type: ignore[call-overload]
    assert secret["session"]["type"] == "realtime"  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        (
            {"expires_after": {"anchor": "created_at", "seconds": 9}},
            "integer_below_min_value",
            "expires_after.seconds",
        ),
        (
            {"expires_after": {"anchor": "created_at", "seconds": 7201}},
            "integer_above_max_value",
            "expires_after.seconds",
        ),
        ({"expires_after": {"anchor": "now", "seconds": 60}}, "invalid_value", "expires_after.anchor"),
        ({"expires_after": {"seconds": "60"}}, "invalid_type", "expires_after.seconds"),
        ({"session": {"type": "realtime", "voice": "marin"}}, "unknown_parameter", "session.voice"),
        ({"session": {"type": "realtime", "output_modalities": ["video"]}}, "invalid_value", None),
        ({"session": {"type": "chat"}}, "invalid_value", "session.type"),
        ({"surprise": 1}, "unknown_parameter", "surprise"),
    ],
)
def test_bad_requests_are_rejected_with_the_field(
    text_server: ServerProcess, body: dict[str, object], code: str, param: str | None
) -> None:
    response = httpx.post(
        text_server.base_url + "/realtime/client_secrets",
        json=body,
        headers={"Authorization": f"Bearer {text_server.api_key}"},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
    else:
        assert str(error["param"]).startswith("session.output_modalities")


def test_invalid_json_and_missing_auth(text_server: ServerProcess) -> None:
    url = text_server.base_url + "/realtime/client_secrets"
    bad = httpx.post(url, content=b"{nope", headers={"Authorization": f"Bearer {text_server.api_key}"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    anonymous = httpx.post(url, json={})
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_api_key"


async def test_an_ephemeral_key_cannot_mint(text_server: ServerProcess) -> None:
    value = str((await mint(text_server))["value"])
    sdk = AsyncOpenAI(base_url=text_server.base_url, api_key=value)
    with pytest.raises(openai.AuthenticationError) as caught:
        await sdk.realtime.client_secrets.create()
    assert "Ephemeral keys cannot mint" in str(caught.value)


async def test_the_key_is_refused_after_it_expires(text_server: ServerProcess) -> None:
    secret = await mint(text_server, expires_after={"anchor": "created_at", "seconds": 10})
    value, expires_at = str(secret["value"]), int(secret["expires_at"])  # type: ignore[call-overload]
    assert (await first_event(text_server, value))["type"] == "session.created"
    while True:  # poll (bounded) until the server stops accepting it
        event = await first_event(text_server, value)
        if event["type"] == "error":
            break
        assert time.time() < expires_at + 5, "the key outlived its expiry"
        await asyncio.sleep(0.5)
    assert time.time() >= expires_at - 1
    assert event["error"]["code"] == "invalid_api_key"  # type: ignore[index]
