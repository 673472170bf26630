"""MCP tools run by the server: a real MCP server (the official SDK's ``MCPServer``, formerly
FastMCP, over streamable HTTP) on loopback in a thread, the real openrealtime server and the
real 0.5B model. Every event the client receives is validated against the openai SDK union.

The first tests drive ``runtime/mcp.py`` alone against the same MCP server (fast, no model):
listing, calling, headers, tool errors, timeouts and the SSRF guard.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations
from openai import AsyncOpenAI

from openrealtime.runtime import mcp as mcp_client
from tests.integration.conftest import Client
from tests.support import ServerProcess, run_server

TEXT_SESSION = {
    "type": "realtime",
    "output_modalities": ["text"],
    "instructions": "You are a shop assistant. Answer in one short sentence.",
}


# --------------------------------------------------------------------------- the MCP server


class McpShop:
    """A small MCP server on a free loopback port; records the Authorization headers it saw."""

    def __init__(self) -> None:
        self.authorizations: list[str | None] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        server = MCPServer("shop")

        @server.tool(annotations=ToolAnnotations(read_only_hint=True))
        def get_order_status(order_id: str) -> str:
            """Look up the delivery status of a customer's order by its order id."""
            self.calls.append(("get_order_status", {"order_id": order_id}))
            return f"Order {order_id} is packed and ships on Friday."

        @server.tool()
        def cancel_order(order_id: str) -> str:
            """Cancel a customer's order by its order id."""
            self.calls.append(("cancel_order", {"order_id": order_id}))
            return f"Order {order_id} is cancelled."

        @server.tool()
        async def slow_lookup(seconds: float) -> str:
            """Wait, then answer (for timeouts)."""
            await asyncio.sleep(seconds)
            return "done"

        @server.tool()
        def broken_tool() -> str:
            """Always fails."""
            raise ValueError("the warehouse database is down")

        app = server.streamable_http_app()

        async def recording(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope.get("method") == "POST":
                headers = dict(scope.get("headers") or [])
                value = headers.get(b"authorization")
                self.authorizations.append(value.decode() if value else None)
            await app(scope, receive, send)

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self._server = uvicorn.Server(
            uvicorn.Config(recording, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> McpShop:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the MCP test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def shop() -> Iterator[McpShop]:
    with McpShop() as server:
        yield server


LOOPBACK = mcp_client.McpPolicy(allowed_hosts=("127.0.0.1",), timeout_s=10)


# --------------------------------------------------------------------------- runtime/mcp.py alone


async def test_list_and_call_with_headers(shop: McpShop) -> None:
    tools = await mcp_client.list_tools(shop.url, {"Authorization": "Bearer s3cret"}, LOOPBACK)
    by_name = {t["name"]: t for t in tools}
    assert set(by_name) == {"get_order_status", "cancel_order", "slow_lookup", "broken_tool"}
    status = by_name["get_order_status"]
    assert status["input_schema"]["required"] == ["order_id"]
    assert status["description"].startswith("Look up the delivery status")
    assert status["annotations"]["readOnlyHint"] is True
    output = await mcp_client.call_tool(shop.url, {}, "get_order_status", '{"order_id": "A12"}', LOOPBACK)
    assert output == "Order A12 is packed and ships on Friday."
    assert "Bearer s3cret" in shop.authorizations


async def test_tool_error_timeout_and_unreachable_fail_clearly(shop: McpShop) -> None:
    with pytest.raises(mcp_client.McpFailure) as broken:
        await mcp_client.call_tool(shop.url, {}, "broken_tool", "{}", LOOPBACK)
    assert broken.value.error["type"] == "tool_execution_error"

    quick = mcp_client.McpPolicy(allowed_hosts=("127.0.0.1",), timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(mcp_client.McpFailure) as slow:
        await mcp_client.call_tool(shop.url, {}, "slow_lookup", '{"seconds": 20}', quick)
    assert time.monotonic() - started < 10
    assert slow.value.code == "mcp_server_timeout"
    assert "did not answer within 0.5 s" in slow.value.message

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    with pytest.raises(mcp_client.McpFailure) as down:
        await mcp_client.list_tools(f"http://127.0.0.1:{closed_port}/mcp", {}, LOOPBACK)
    assert down.value.code in ("mcp_server_unreachable", "mcp_server_error")

    with pytest.raises(mcp_client.McpFailure) as bad_args:
        await mcp_client.call_tool(shop.url, {}, "get_order_status", "[1]", LOOPBACK)
    assert bad_args.value.code == "mcp_bad_arguments"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:9/mcp", "loopback"),
        ("http://localhost:9/mcp", "loopback"),
        ("http://[::1]:9/mcp", "loopback"),
        ("http://10.1.2.3/mcp", "private"),
        ("http://192.168.0.10/mcp", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::ffff:127.0.0.1]/mcp", "loopback"),
        ("http://0.0.0.0/mcp", "unspecified"),
    ],
)
async def test_non_public_urls_are_refused_by_default(url: str, why: str) -> None:
    with pytest.raises(mcp_client.McpFailure) as refused:
        await mcp_client.check_url(url, mcp_client.McpPolicy())
    assert refused.value.code == "mcp_server_url_not_allowed"
    assert why in refused.value.message and "OPENREALTIME_MCP_ALLOWED_HOSTS" in refused.value.message


async def test_allowlist_and_schemes() -> None:
    await mcp_client.check_url("http://8.8.8.8/mcp", mcp_client.McpPolicy())
    await mcp_client.check_url("http://10.1.2.3/mcp", mcp_client.McpPolicy(allowed_hosts=("10.0.0.0/8",)))
    await mcp_client.check_url(
        "http://intranet.local/mcp", mcp_client.McpPolicy(allowed_hosts=("intranet.local",))
    )
    for url in ("file:///etc/passwd", "ftp://8.8.8.8/x", "http:///nohost"):
        with pytest.raises(mcp_client.McpFailure):
            await mcp_client.check_url(url, mcp_client.McpPolicy())


# --------------------------------------------------------------------------- through the server


@pytest.fixture(scope="module")
def mcp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The real server (0.5B model, no speech) allowed to reach MCP servers on loopback."""
    tmp: Path = tmp_path_factory.mktemp("mcp-server")
    with run_server(
        tmp,
        args=["--text-only"],
        env={"OPENREALTIME_MCP_ALLOWED_HOSTS": "127.0.0.1", "OPENREALTIME_MCP_TIMEOUT_SECONDS": "20"},
    ) as server:
        yield server


@pytest.fixture
async def mcp_client_conn(mcp_server: ServerProcess) -> AsyncIterator[Client]:
    openai = AsyncOpenAI(base_url=mcp_server.base_url, api_key=mcp_server.api_key)
    async with openai.realtime.connect(model="gpt-realtime") as connection:
        wrapped = Client(connection)
        assert (await wrapped.recv())["type"] == "session.created"
        yield wrapped


def shop_tool(shop: McpShop, **extra: Any) -> dict[str, Any]:
    return {
        "type": "mcp",
        "server_label": "shop",
        "server_url": shop.url,
        "authorization": "tok-123",
        "allowed_tools": ["get_order_status", "cancel_order"],
        **extra,
    }


async def configure_shop(client: Client, shop: McpShop, **extra: Any) -> dict[str, Any]:
    """session.update with the shop server; returns the completed ``mcp_list_tools`` item."""
    await client.send(
        {"type": "session.update", "session": {**TEXT_SESSION, "tools": [shop_tool(shop, **extra)]}}
    )
    events = await client.until("mcp_list_tools.completed")
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["session.updated", "conversation.item.added", "mcp_list_tools.in_progress"], kinds
    added = events[1]["item"]
    assert added["type"] == "mcp_list_tools" and added["server_label"] == "shop"
    done = await client.until("conversation.item.done")
    item: dict[str, Any] = done[-1]["item"]
    assert item["id"] == added["id"]
    return item


async def ask(client: Client, text: str) -> None:
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    await client.send({"type": "conversation.item.create", "item": item})
    await client.until("conversation.item.done")


def output_items(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["item"] for e in events if e["type"] == "response.output_item.done"]


def answer_text(events: list[dict[str, Any]]) -> str:
    return " ".join(e["text"] for e in events if e["type"] == "response.output_text.done")


FORCE_STATUS = {"type": "mcp", "server_label": "shop", "name": "get_order_status"}


@pytest.mark.slow
async def test_mcp_call_without_approval(mcp_client_conn: Client, shop: McpShop) -> None:
    client = mcp_client_conn
    listed = await configure_shop(client, shop, require_approval="never")
    assert sorted(t["name"] for t in listed["tools"]) == ["cancel_order", "get_order_status"]  # allowed_tools

    await ask(client, "Where is my order A12?")
    await client.send({"type": "response.create", "response": {"tool_choice": FORCE_STATUS}})
    events = await client.until("response.done")
    kinds = [e["type"] for e in events]
    call = next(item for item in output_items(events) if item["type"] == "mcp_call")
    assert call["name"] == "get_order_status" and call["server_label"] == "shop"
    assert json.loads(call["arguments"]) == {"order_id": "A12"}
    assert call["output"] == "Order A12 is packed and ships on Friday." and call["error"] is None
    start = kinds.index("response.output_item.added")
    assert kinds[start : start + 2] == ["response.output_item.added", "conversation.item.added"]
    sequence = [k for k in kinds if k.startswith("response.mcp_call")]
    assert sequence[-3:] == [
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
    ]
    # the response continued with the result: the model's answer follows the call
    assert kinds.index("response.mcp_call.completed") < kinds.index("response.output_text.done")
    text = answer_text(events).lower()
    assert "friday" in text or "packed" in text, text
    assert events[-1]["response"]["status"] == "completed"
    assert [o["type"] for o in events[-1]["response"]["output"]][:1] == ["mcp_call"]
    assert "Bearer tok-123" in shop.authorizations

    # the conversation keeps the call with its output
    await client.send({"type": "conversation.item.retrieve", "item_id": call["id"]})
    retrieved = (await client.until("conversation.item.retrieved"))[-1]["item"]
    assert retrieved["output"] == call["output"]


@pytest.mark.slow
async def test_mcp_approval_approve_then_deny(mcp_client_conn: Client, shop: McpShop) -> None:
    client = mcp_client_conn
    await configure_shop(client, shop, require_approval="always")
    calls_before = len(shop.calls)

    await ask(client, "Where is my order B7?")
    await client.send({"type": "response.create", "response": {"tool_choice": FORCE_STATUS}})
    first = await client.until("response.done")
    request = next(item for item in output_items(first) if item["type"] == "mcp_approval_request")
    assert request["name"] == "get_order_status" and json.loads(request["arguments"]) == {"order_id": "B7"}
    assert not [e for e in first if e["type"].startswith("response.mcp_call")]
    assert len(shop.calls) == calls_before  # nothing ran without approval

    # an answer to an unknown request is refused clearly
    await client.send(
        {
            "type": "conversation.item.create",
            "event_id": "evt_bad_approval",
            "item": {"type": "mcp_approval_response", "approval_request_id": "mcpr_nope", "approve": True},
        }
    )
    error = (await client.until("error"))[-1]["error"]
    assert (
        error["code"] == "item_create_invalid_approval_request_id" and error["event_id"] == "evt_bad_approval"
    )

    await client.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "mcp_approval_response", "approval_request_id": request["id"], "approve": True},
        }
    )
    await client.until("conversation.item.done")
    await client.send({"type": "response.create"})
    second = await client.until("response.done")
    call = output_items(second)[0]
    assert call["type"] == "mcp_call" and call["approval_request_id"] == request["id"]
    assert call["output"] == "Order B7 is packed and ships on Friday."
    assert shop.calls[-1] == ("get_order_status", {"order_id": "B7"})
    text = answer_text(second).lower()
    assert "friday" in text or "packed" in text, text

    # deny: the tool does not run and the model is told
    await ask(client, "Please cancel my order C3.")
    force_cancel = {"type": "mcp", "server_label": "shop", "name": "cancel_order"}
    await client.send({"type": "response.create", "response": {"tool_choice": force_cancel}})
    third = await client.until("response.done")
    denied = next(item for item in output_items(third) if item["type"] == "mcp_approval_request")
    await client.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "mcp_approval_response",
                "approval_request_id": denied["id"],
                "approve": False,
                "reason": "I changed my mind",
            },
        }
    )
    await client.until("conversation.item.done")
    calls_now = len(shop.calls)
    await client.send({"type": "response.create"})
    fourth = await client.until("response.done")
    assert not [item for item in output_items(fourth) if item["type"] == "mcp_call"]
    assert len(shop.calls) == calls_now
    assert fourth[-1]["response"]["status"] == "completed" and answer_text(fourth).strip()


@pytest.mark.slow
async def test_disallowed_mcp_url_is_refused(client: Client) -> None:
    """The shared server has no allowlist: a loopback MCP URL fails listing with a clear error,
    and the session goes on."""
    tool = {"type": "mcp", "server_label": "internal", "server_url": "http://127.0.0.1:9/mcp"}
    await client.send({"type": "session.update", "session": {**TEXT_SESSION, "tools": [tool]}})
    events = await client.until("error")
    kinds = [e["type"] for e in events]
    assert kinds == [
        "session.updated",
        "conversation.item.added",
        "mcp_list_tools.in_progress",
        "mcp_list_tools.failed",
        "conversation.item.done",
        "error",
    ], kinds
    error = events[-1]["error"]
    assert error["code"] == "mcp_server_url_not_allowed"
    assert "loopback" in error["message"] and "OPENREALTIME_MCP_ALLOWED_HOSTS" in error["message"]
    assert events[-2]["item"]["tools"] == []

    await ask(client, "Say hello.")
    await client.send({"type": "response.create"})
    done = (await client.until("response.done"))[-1]["response"]
    assert done["status"] == "completed"


def test_urls_in_errors_and_logs_carry_no_credentials() -> None:
    shown = mcp_client.display_url("https://user:pw@mcp.example.com:8443/mcp?token=abc#x")
    assert shown == "https://mcp.example.com:8443/mcp"
