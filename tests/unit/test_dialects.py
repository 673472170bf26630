"""Azure's and OpenAI's URL families reduced to one request (``server.dialects``): which shape
an api-version speaks, what a ``/realtime`` URL asks for, and Azure's key handling in front of
every route (the query key becomes a header and leaves the query; ``api-key`` wins)."""

from __future__ import annotations

from typing import Any

import pytest

from openrealtime.protocol.errors import RealtimeError
from openrealtime.server.dialects import AzureCredentials, api_version_shape, azure_request, openai_request


@pytest.mark.parametrize(
    ("version", "shape"),
    [
        ("2024-10-01-preview", "beta"),
        ("2024-12-17-preview", "beta"),
        ("2025-04-01-preview", "beta"),
        ("2025-08-28", "ga"),
        ("2025-10-01", "ga"),
        ("2026-03-01-preview", "ga"),
    ],
)
def test_api_versions_pick_the_shape(version: str, shape: str) -> None:
    assert api_version_shape(version) == shape


@pytest.mark.parametrize(
    "version",
    [
        "2024-06-01-preview",
        "2025-05-01-preview",
        "2025-08-27",
        "2024-10-21",
        "latest",
        "preview",
        "v1",
        "2025-13-40",
        "x" * 500,
    ],
)
def test_versions_without_realtime_are_refused_clearly(version: str) -> None:
    with pytest.raises(RealtimeError) as caught:
        api_version_shape(version)
    assert caught.value.code == "unsupported_api_version" and caught.value.param == "api-version"
    assert "2025-04-01-preview" in caught.value.message and len(caught.value.message) < 400


def test_a_missing_api_version_is_named() -> None:
    with pytest.raises(RealtimeError) as caught:
        api_version_shape(None)
    assert caught.value.code == "missing_required_parameter"


def test_requests_from_each_url_family() -> None:
    azure = azure_request({"api-version": "2025-04-01-preview", "deployment": "dep"}, {}, [])
    assert (azure.model, azure.shape, azure.problem) == ("dep", "beta", None)
    ga = azure_request({"api-version": "2025-08-28", "deployment": "dep"}, {}, [])
    assert (ga.shape, ga.problem) == ("ga", None)
    forced = azure_request(
        {"api-version": "2025-08-28", "deployment": "dep"}, {"openai-beta": "realtime=v1"}, []
    )
    assert forced.shape == "beta"
    transcription = azure_request({"api-version": "2025-04-01-preview", "intent": "transcription"}, {}, [])
    assert transcription.problem is None and transcription.intent == "transcription"
    named = azure_request(
        {"api-version": "2025-04-01-preview", "intent": "transcription", "deployment": "gpt-4o-transcribe"},
        {},
        [],
    )
    assert named.model is None and named.problem is None  # a transcription deployment, not a model
    missing = azure_request({"api-version": "2025-08-28"}, {}, [])
    assert missing.problem is not None and missing.problem.param == "deployment" and missing.problem.fatal
    unknown = azure_request({"api-version": "2023-05-15", "deployment": "dep"}, {}, [])
    assert unknown.problem is not None and unknown.problem.code == "unsupported_api_version"
    openai = openai_request({"model": "gpt-realtime"}, {}, ["realtime", "openai-beta.realtime-v1"])
    assert (openai.model, openai.shape) == ("gpt-realtime", "beta")
    assert openai_request({"call_id": "rtc_1"}, {}, []).call_id == "rtc_1"


async def through(
    path: str, query: bytes, headers: list[tuple[bytes, bytes]], kind: str = "http"
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope)

    scope = {"type": kind, "path": path, "query_string": query, "headers": headers}
    await AzureCredentials(app)(scope, None, None)  # type: ignore[arg-type]
    return seen


async def test_query_keys_become_headers_on_azure_routes_only() -> None:
    seen = await through(
        "/openai/realtime", b"api-version=2025-08-28&api-key=k1&deployment=d", [], "websocket"
    )
    assert seen["query_string"] == b"api-version=2025-08-28&deployment=d"
    assert (b"api-key", b"k1") in seen["headers"]
    rtc = await through("/v1/realtimertc", b"model=d&api-key=k2", [])
    assert (b"api-key", b"k2") in rtc["headers"] and b"api-key" not in rtc["query_string"]
    # OpenAI's routes: untouched (no keys in query strings there)
    plain = await through("/v1/realtime", b"model=x&api-key=k3", [], "websocket")
    assert plain["query_string"] == b"model=x&api-key=k3" and plain["headers"] == []
    # a header key wins over the query one, and the query one still leaves the query string
    both = await through("/openai/v1/realtime", b"api-key=q", [(b"api-key", b"h")], "websocket")
    assert both["headers"] == [(b"api-key", b"h")] and both["query_string"] == b""


async def test_the_api_key_header_wins_over_a_bearer_on_azure_routes() -> None:
    seen = await through(
        "/openai/v1/realtime", b"model=d", [(b"authorization", b"Bearer placeholder"), (b"api-key", b"real")]
    )
    assert seen["headers"] == [(b"api-key", b"real")]
    bearer_only = await through("/openai/v1/realtime/calls", b"", [(b"authorization", b"Bearer ek_1")])
    assert bearer_only["headers"] == [(b"authorization", b"Bearer ek_1")]
    openai = await through("/v1/realtime", b"", [(b"authorization", b"Bearer a"), (b"api-key", b"b")])
    assert len(openai["headers"]) == 2
