"""Server-side MCP tools: listing each configured server's tools, approvals, and the calls the
model makes to them. The runtime does the I/O (runtime/mcp.py); this is the bookkeeping.

A server's tools are listed when it is configured (or its listing-relevant settings change),
as an ``mcp_list_tools`` item (``LISTING`` → ``LISTED`` | ``FAILED``). A model call to a listed
tool becomes an ``mcp_call`` output item that the runtime runs while the response waits
(``AWAITING_TOOL``), or, when the server's ``require_approval`` says so, an
``mcp_approval_request`` item (``PENDING``); the client approves or denies it with an
``mcp_approval_response`` item, and an approved call runs at the start of the next
default-conversation response (``RUN``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..protocol import server_events as se
from ..protocol.errors import RealtimeError
from ..protocol.items import item_to_wire
from ..protocol.session import RealtimeSession
from .commands import CallMcpTool, ListMcpTools
from .events import McpCallDone, McpToolsFailed, McpToolsListed
from .items import Item, mcp_approval_request, mcp_call, mcp_list_tools
from .responses import Response, Responses
from .state import (
    ApprovalPhase,
    ApprovalTrigger,
    ListingPhase,
    ListingTrigger,
    ResponsePhase,
    ResponseTrigger,
    SessionState,
    transition,
)


def _filter_matches(filter_: Any, tool: dict[str, Any]) -> bool:
    """An ``McpToolFilter`` (``tool_names`` and/or ``read_only``) against a listed tool."""
    if not isinstance(filter_, dict):
        return False
    names, read_only = filter_.get("tool_names"), filter_.get("read_only")
    if names is None and read_only is None:
        return False
    if names is not None and tool.get("name") not in names:
        return False
    hint = bool((tool.get("annotations") or {}).get("readOnlyHint"))
    return read_only is None or hint == read_only


def tool_allowed(config: dict[str, Any], tool: dict[str, Any]) -> bool:
    allowed = config.get("allowed_tools")
    if allowed is None:
        return True
    if isinstance(allowed, list):
        return tool.get("name") in allowed
    return _filter_matches(allowed, tool) or (
        allowed.get("tool_names") is None and allowed.get("read_only") is None
    )


def needs_approval(config: dict[str, Any], tool: dict[str, Any]) -> bool:
    """``require_approval``: ``never``, ``always`` (the default, as on OpenAI), or filters;
    a tool matched by neither filter needs approval."""
    policy = config.get("require_approval")
    if policy == "never":
        return False
    if not isinstance(policy, dict):
        return True
    return not _filter_matches(policy.get("never"), tool)


def _listing_key(config: dict[str, Any]) -> tuple[Any, ...]:
    """What decides a server's listed tools: where it is, how we log in, which tools."""
    return tuple(repr(config.get(k)) for k in ("server_url", "headers", "authorization", "allowed_tools"))


def headers_for(config: dict[str, Any]) -> dict[str, str]:
    """HTTP headers for an MCP server: ``headers`` plus ``authorization`` as a bearer token."""
    headers = dict(config.get("headers") or {})
    if config.get("authorization"):
        headers["Authorization"] = f"Bearer {config['authorization']}"
    return headers


def check_session_tools(session: RealtimeSession) -> None:
    """MCP entries of ``session.tools`` need a ``server_url`` and distinct labels."""
    labels: set[str] = set()
    for index, tool in enumerate(session.tools):
        if tool.type != "mcp":
            continue
        if not tool.server_url:
            raise RealtimeError(
                "unsupported_tool_type",
                "MCP tools need a 'server_url': connectors and tunnels are not supported by this server.",
                param=f"session.tools[{index}].server_url",
            )
        if tool.server_label in labels:
            raise RealtimeError(
                "invalid_value",
                f"Duplicate MCP server_label '{tool.server_label}'.",
                param=f"session.tools[{index}].server_label",
            )
        labels.add(tool.server_label)


@dataclass
class McpServer:
    """An MCP server configured on the session: its tool entry and its current listing."""

    config: dict[str, Any]
    item_id: str
    tools: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Listing:
    """One ``mcp_list_tools`` item and the configuration it lists."""

    config: dict[str, Any]
    phase: ListingPhase = ListingPhase.LISTING


@dataclass
class Approval:
    request: Item
    phase: ApprovalPhase = ApprovalPhase.PENDING


class Mcp:
    def __init__(self, state: SessionState, responses: Responses) -> None:
        self.state = state
        self.responses = responses
        self.servers: dict[str, McpServer] = {}
        self.listings: dict[str, Listing] = {}
        self.approvals: dict[str, Approval] = {}

    @property
    def labels(self) -> set[str]:
        return set(self.servers)

    # ------------------------------------------------------------------ listing

    def sync(self) -> None:
        """List the tools of every MCP server that is new or whose configuration changed."""
        session = self.state.realtime
        if session is None:
            return
        configs = {
            tool.server_label: tool.model_dump(mode="json") for tool in session.tools if tool.type == "mcp"
        }
        for label in [label for label in self.servers if label not in configs]:
            del self.servers[label]
        for label, config in configs.items():
            known = self.servers.get(label)
            if known is not None and _listing_key(known.config) == _listing_key(config):
                known.config = config  # e.g. require_approval changed: no need to list again
                continue
            item = mcp_list_tools(self.state.new_id("item_"), label)
            self.servers[label] = McpServer(config=config, item_id=item["id"])
            self.listings[item["id"]] = Listing(config=config)
            previous = self.state.conversation.insert(item)
            self.state.emit(se.ConversationItemAdded(item=item_to_wire(item), previous_item_id=previous))
            self.state.emit(se.McpListToolsInProgress(item_id=item["id"]))
            self.state.command(
                ListMcpTools(
                    item_id=item["id"],
                    server_label=label,
                    server_url=config["server_url"],
                    headers=headers_for(config),
                )
            )

    def _settle_listing(self, item_id: str, trigger: ListingTrigger) -> Listing | None:
        listing = self.listings.get(item_id)
        if listing is None or listing.phase is not ListingPhase.LISTING:
            return None  # reported twice, or never asked for
        listing.phase = transition(listing.phase, trigger)
        return listing

    def _current(self, item_id: str) -> McpServer | None:
        return next((s for s in self.servers.values() if s.item_id == item_id), None)

    def listed(self, result: McpToolsListed) -> None:
        listing = self._settle_listing(result.item_id, ListingTrigger.LISTED)
        if listing is None:
            return
        allowed = [dict(t) for t in result.tools if tool_allowed(listing.config, t)]
        server = self._current(result.item_id)
        if server is not None:
            server.tools = allowed
        item = self.state.conversation.get(result.item_id)
        if item is not None:
            item["tools"] = [dict(t) for t in allowed]
        self.state.emit(se.McpListToolsCompleted(item_id=result.item_id))
        self._item_done(result.item_id)

    def failed(self, result: McpToolsFailed) -> None:
        if self._settle_listing(result.item_id, ListingTrigger.FAILED) is None:
            return
        server = self._current(result.item_id)
        if server is not None:
            server.tools = []
        self.state.emit(se.McpListToolsFailed(item_id=result.item_id))
        self._item_done(result.item_id)
        self.state.emit(
            se.ErrorEvent(error=RealtimeError(result.code, result.message, type="server_error").as_dict())
        )

    def _item_done(self, item_id: str) -> None:
        item = self.state.conversation.get(item_id)
        if item is not None:
            previous = self.state.conversation.previous_of(item_id)
            self.state.emit(se.ConversationItemDone(item=item_to_wire(item), previous_item_id=previous))

    def listing_pending(self) -> list[str]:
        """Ids of ``mcp_list_tools`` items still being listed (responses wait for them)."""
        return [
            s.item_id for s in self.servers.values() if self.listings[s.item_id].phase is ListingPhase.LISTING
        ]

    def tools_for_model(self, tools: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """Function tools as given plus the listed tools of the MCP servers among ``tools``
        (as functions); function names win over MCP names, the first server over later ones."""
        out = [t for t in tools if t.get("type") == "function"]
        names = {t.get("name") for t in out}
        routes: dict[str, str] = {}
        for tool in tools:
            server = self.servers.get(tool.get("server_label") or "") if tool.get("type") == "mcp" else None
            if server is None:
                continue
            for listed in server.tools:
                name = listed.get("name")
                if not name or name in names:
                    continue
                names.add(name)
                routes[name] = server.config["server_label"]
                out.append(
                    {
                        "type": "function",
                        "name": name,
                        "description": listed.get("description") or "",
                        "parameters": listed.get("input_schema") or {"type": "object", "properties": {}},
                    }
                )
        return out, routes

    # ------------------------------------------------------------------ approvals

    def decide(self, item: Item) -> None:
        """An ``mcp_approval_response`` the client created (checked before it is added)."""
        request_id = item["approval_request_id"]
        approval = self.approvals.get(request_id)
        if approval is None:
            raise RealtimeError(
                "item_create_invalid_approval_request_id",
                f"No MCP approval request with id '{request_id}' exists in the conversation.",
                param="item.approval_request_id",
            )
        if approval.phase is ApprovalPhase.RUN:
            raise RealtimeError(
                "invalid_value",
                f"MCP approval request '{request_id}' was already approved and run.",
                param="item.approval_request_id",
            )
        trigger = ApprovalTrigger.APPROVE if item["approve"] else ApprovalTrigger.DENY
        approval.phase = transition(approval.phase, trigger)

    def run_approved(self, response: Response) -> None:
        """Approved requests run at the start of the next response, before the model speaks."""
        for request_id, approval in self.approvals.items():
            if approval.phase is not ApprovalPhase.APPROVED:
                continue
            approval.phase = transition(approval.phase, ApprovalTrigger.RUN)
            request = approval.request
            server = self.servers.get(request["server_label"])
            self._start_call(response, server, request["name"], request["arguments"], request_id)

    # ------------------------------------------------------------------ calls

    def route(self, response: Response, name: str, arguments: str) -> bool:
        """A model call to ``name``: an MCP call or approval request when ``name`` is an MCP
        tool this response offered (True), else False (a function call for the client)."""
        label = response.mcp_routes.get(name)
        server = self.servers.get(label) if label is not None else None
        if server is None:
            return False
        self.responses.close_open_item(response, "completed")
        listed = next((t for t in server.tools if t.get("name") == name), {"name": name})
        if needs_approval(server.config, listed):
            self._ask_approval(response, server, name, arguments)
        else:
            self._start_call(response, server, name, arguments, None)
        return True

    def _ask_approval(self, response: Response, server: McpServer, name: str, arguments: str) -> None:
        response.move(ResponseTrigger.OUTPUT)
        item = mcp_approval_request(
            self.state.new_id("mcpr_"), server.config["server_label"], name, arguments
        )
        out, _ = self.responses.add_output_item(response, item)
        self.responses.end_output_item(response, out, "completed")
        if not response.out_of_band:
            self.approvals[item["id"]] = Approval(request=item)

    def _start_call(
        self,
        response: Response,
        server: McpServer | None,
        name: str,
        arguments: str,
        approval_request_id: str | None,
    ) -> None:
        label = server.config["server_label"] if server is not None else ""
        item = mcp_call(self.state.new_id("mcp_"), label, name, approval_request_id)
        out, _ = self.responses.add_output_item(response, item)
        ids = {"response_id": response.id, "item_id": item["id"], "output_index": out.output_index}
        for start in range(0, max(1, len(arguments)), 32):
            self.state.emit(se.ResponseMcpCallArgumentsDelta(delta=arguments[start : start + 32], **ids))
        self.state.emit(se.ResponseMcpCallArgumentsDone(arguments=arguments, **ids))
        item["arguments"] = arguments
        self.state.emit(se.ResponseMcpCallInProgress(item_id=item["id"], output_index=out.output_index))
        self.responses.start_tool(response, out)
        if server is None:
            gone = {"type": "tool_execution_error", "message": "The MCP server is no longer configured."}
            self.responses.settle_tool(response, item["id"], None, gone)
            return
        self.state.command(
            CallMcpTool(
                response_id=response.id,
                item_id=item["id"],
                server_label=label,
                server_url=server.config["server_url"],
                name=name,
                arguments=arguments,
                headers=headers_for(server.config),
            )
        )

    def call_done(self, response: Response, result: McpCallDone) -> None:
        self.responses.settle_tool(response, result.item_id, result.output, result.error)

    def calls_pending(self, response: Response) -> bool:
        return response.phase is ResponsePhase.AWAITING_TOOL
