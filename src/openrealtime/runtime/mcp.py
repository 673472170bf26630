"""Talking to remote MCP servers (streamable HTTP) for a session's ``type: "mcp"`` tools.

The session core decides *what* to list or call (``ListMcpTools`` / ``CallMcpTool``
commands); this module does the I/O with the official ``mcp`` SDK, on the event loop as
plain async HTTP, so a slow MCP server delays only the response waiting for it.

Outbound URLs are guarded against SSRF: unless a host is named in the allowlist
(``OPENREALTIME_MCP_ALLOWED_HOSTS``: host names, IP addresses or CIDR networks), every
address the URL's host resolves to must be a public one; loopback, private, link-local,
multicast, reserved and unspecified addresses are refused with a clear error. The address
is checked just before connecting; the HTTP client resolves the name again, so a DNS server
that changes its answer in between (rebinding) is not covered — allowlist the hosts when that
matters. Each operation opens its own MCP connection and is bounded by one timeout.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

log = logging.getLogger("openrealtime.mcp")

DEFAULT_TIMEOUT_S = 30.0
MAX_OUTPUT_CHARS = 16_000
"""A tool result longer than this is cut: it goes into the model's context."""

_T = TypeVar("_T")
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class McpFailure(Exception):
    """An MCP operation failed; ``error`` is the ``mcp_call.error`` object in wire shape and
    ``code`` the ``error`` event code for a failed listing."""

    def __init__(self, code: str, error: dict[str, Any]) -> None:
        super().__init__(error["message"])
        self.code = code
        self.error = error

    @property
    def message(self) -> str:
        return str(self.error["message"])


def display_url(url: str) -> str:
    """``url`` without user info, query or fragment: safe to show in errors and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _failure(code: str, message: str) -> McpFailure:
    return McpFailure(code, {"type": "tool_execution_error", "message": message})


@dataclass(frozen=True)
class McpPolicy:
    """Where MCP connections may go and how long one operation may take."""

    allowed_hosts: tuple[str, ...] = ()
    timeout_s: float = DEFAULT_TIMEOUT_S

    @classmethod
    def from_settings(cls, allowed_hosts: Sequence[str] | None, timeout_s: float | None) -> McpPolicy:
        return cls(
            tuple(h.strip().lower() for h in allowed_hosts or () if h.strip()), timeout_s or DEFAULT_TIMEOUT_S
        )

    def _networks(self) -> list[Network]:
        out: list[Network] = []
        for entry in self.allowed_hosts:
            try:
                out.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                continue
        return out

    def host_allowed(self, host: str) -> bool:
        return (
            host.lower().strip("[]") in {h.strip("[]") for h in self.allowed_hosts}
            or "*" in self.allowed_hosts
        )

    def address_allowed(self, address: Address) -> bool:
        return any(address in network for network in self._networks())


def _non_public(address: Address) -> str | None:
    """Why ``address`` must not be reached from the server, or None for a public address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for label, flag in (
        ("a loopback", address.is_loopback),
        ("an unspecified", address.is_unspecified),
        ("a link-local", address.is_link_local),
        ("a multicast", address.is_multicast),
        ("a private", address.is_private),
        ("a reserved", address.is_reserved),
    ):
        if flag:
            return label
    return None if address.is_global else "a non-public"


async def check_url(url: str, policy: McpPolicy) -> None:
    """Refuse URLs the server must not connect to (see the module doc); raises ``McpFailure``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _failure(
            "mcp_server_url_not_allowed",
            f"MCP server URL {display_url(url)!r} must be an http(s) URL with a host.",
        )
    host = parts.hostname
    if policy.host_allowed(host):
        return
    try:
        addresses: list[Address] = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, parts.port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise _failure(
                "mcp_server_unreachable", f"MCP server host {host!r} could not be resolved: {exc}"
            ) from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    for address in addresses:
        if policy.address_allowed(address):
            continue
        why = _non_public(address)
        if why is not None:
            raise _failure(
                "mcp_server_url_not_allowed",
                f"MCP server URL {display_url(url)!r} is not allowed: {host} is {why} address ({address}). "
                "The server operator can allow it with OPENREALTIME_MCP_ALLOWED_HOSTS.",
            )


def _root_cause(exc: BaseException) -> BaseException:
    """The first real error inside the SDK's task-group exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException, url: str, policy: McpPolicy) -> McpFailure:
    exc = _root_cause(exc)
    if isinstance(exc, McpFailure):
        return exc
    url = display_url(url)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | httpx2.TimeoutException):
        return _failure(
            "mcp_server_timeout", f"The MCP server at {url} did not answer within {policy.timeout_s:g} s."
        )
    if isinstance(exc, httpx2.HTTPStatusError):
        status = exc.response.status_code
        return McpFailure(
            "mcp_server_http_error",
            {
                "type": "http_error",
                "code": status,
                "message": f"The MCP server at {url} answered HTTP {status}.",
            },
        )
    if isinstance(exc, MCPError):
        return McpFailure(
            "mcp_protocol_error",
            {"type": "protocol_error", "code": exc.code, "message": f"MCP error from {url}: {exc.message}"},
        )
    if isinstance(exc, httpx2.HTTPError | OSError):
        return _failure(
            "mcp_server_unreachable", f"Could not reach the MCP server at {url}: {exc or type(exc).__name__}"
        )
    return _failure("mcp_server_error", f"The MCP server at {url} failed: {exc or type(exc).__name__}")


async def _with_client(
    url: str, headers: dict[str, str], policy: McpPolicy, work: Callable[[Client], Awaitable[_T]]
) -> _T:
    await check_url(url, policy)
    try:
        async with (
            asyncio.timeout(policy.timeout_s),
            httpx2.AsyncClient(headers=headers, timeout=policy.timeout_s) as http,
            Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
        ):
            return await work(client)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # the SDK wraps failures in exception groups
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        failure = _describe(exc, url, policy)
        log.info("MCP %s failed: %s", display_url(url), failure.message)
        raise failure from None


async def list_tools(url: str, headers: dict[str, str], policy: McpPolicy) -> list[dict[str, Any]]:
    """The server's tools as ``mcp_list_tools`` entries: name, input_schema, description, annotations."""

    async def work(client: Client) -> list[dict[str, Any]]:
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(20):  # pages; a server that never ends its listing cannot hang us
            result = await client.list_tools(cursor=cursor)
            for tool in result.tools:
                entry: dict[str, Any] = {
                    "name": tool.name,
                    "input_schema": tool.input_schema,
                    "description": tool.description,
                }
                if tool.annotations is not None:
                    entry["annotations"] = tool.annotations.model_dump(
                        mode="json", by_alias=True, exclude_none=True
                    )
                tools.append(entry)
            cursor = result.next_cursor
            if not cursor:
                break
        return tools

    return await _with_client(url, headers, policy, work)


async def call_tool(url: str, headers: dict[str, str], name: str, arguments: str, policy: McpPolicy) -> str:
    """Run one tool; its text output, or ``McpFailure`` (the tool's own error included)."""
    try:
        parsed = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        raise _failure("mcp_bad_arguments", f"The arguments for {name} are not valid JSON.") from None
    if not isinstance(parsed, dict):
        raise _failure("mcp_bad_arguments", f"The arguments for {name} must be a JSON object.")

    async def work(client: Client) -> str:
        result = await client.call_tool(name, parsed)
        texts: list[str] = []
        for part in result.content:
            text = getattr(part, "text", None)
            texts.append(text if isinstance(text, str) else json.dumps(part.model_dump(mode="json")))
        output = "\n".join(texts)
        if not output and result.structured_content is not None:
            output = json.dumps(result.structured_content)
        if result.is_error:
            raise _failure("mcp_tool_error", output or f"The tool {name} failed.")
        return output[:MAX_OUTPUT_CHARS]

    return await _with_client(url, headers, policy, work)
