"""Gateway replicas: several ``openrealtime serve`` processes behind one load balancer acting as
one server, through shared state in Redis (``OPENREALTIME_REDIS_URL``; see storage/redis_state.py).

- Ephemeral keys live in Redis, so a key minted on one gateway works on all.
- Concurrent sessions per key are counted across gateways. Each gateway publishes its own count
  under a lease it renews every ``lease/3`` seconds; a gateway that dies stops counting when its
  lease runs out. The ``max_sessions`` cap stays per gateway (it protects that process's engines).
- Event rate per key: each gateway leases tokens from a shared bucket in batches (half a second's
  rate, at most a quarter of the burst) and spends them locally, so the per-event check stays a
  dict lookup; the next
  batch is asked for in the background at half a batch left, and up to one batch may be spent
  ahead of its lease (repaid by the next one) so that Redis round trips never refuse an event
  within the rate. The price: the shared rate can be exceeded by about two batches per gateway,
  and a gateway may sit on up to a batch the key does not use. While Redis is down, events are
  limited by each gateway's local bucket instead (sessions keep working).
- Calls: ``call_id -> owning gateway URL`` with a TTL renewed while the call lives. Hang-up, SIP
  accept/reject/refer and sideband WebSockets reaching another gateway are forwarded to the
  owner with the client's own key, which the owner checks as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
from fastapi import Request, Response, WebSocket
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from ..config import Settings
from ..protocol.errors import RealtimeError
from ..protocol.server_events import ErrorEvent
from ..storage.redis_state import RedisState, SharedStateUnavailable
from ..transports.websocket import WebSocketConnection
from .auth import Credential
from .call_registry import CallRegistry, LiveCall
from .http import http_error
from .limits import SessionLimits

if TYPE_CHECKING:
    from .state import ServerState

log = logging.getLogger("openrealtime.cluster")

FORWARDED_HEADER = "x-openrealtime-forwarded-by"
"""Set on requests one gateway forwards to another: the owner never forwards them again."""


def gateway_url(settings: Settings) -> str:
    """This gateway's URL as the other gateways reach it (``gateway_url``, else host:port)."""
    if settings.gateway_url:
        return settings.gateway_url.rstrip("/")
    scheme = "https" if settings.ssl_certfile else "http"
    return f"{scheme}://{settings.host}:{settings.port}"


class Cluster:
    """This gateway's membership: its identity, the Redis state and the lease heartbeat."""

    def __init__(self, settings: Settings, redis: RedisState) -> None:
        self.settings = settings
        self.redis = redis
        self.url = gateway_url(settings)
        # a restarted gateway is a new member: its predecessor's counts expire with its lease
        self.member = f"{self.url}#{secrets.token_hex(4)}"
        self.lease_seconds = settings.gateway_lease_seconds
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=3.0))
        self.limits: SessionLimits | None = None
        self.calls: CallRegistry | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._published_keys: set[str] = set()
        self._healthy = True
        self.counts_lock = asyncio.Lock()
        """Serializes writes of this gateway's counts, so the last write carries the latest."""

    @property
    def lease_ms(self) -> int:
        return int(self.lease_seconds * 1000)

    def start(self, limits: SessionLimits, calls: CallRegistry) -> None:
        """Start renewing the lease of this gateway's session counts and calls."""
        self.limits, self.calls = limits, calls
        self._heartbeat = asyncio.create_task(self._beat(), name="gateway-heartbeat")

    def spawn(self, what: str, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a Redis write in the background; a failure is logged (the heartbeat repairs it)."""

        async def run() -> Any:
            try:
                return await work
            except SharedStateUnavailable:
                log.warning("shared state: %s not written (redis unavailable)", what)
                return None

        task = asyncio.create_task(run(), name=f"redis-{what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def publish(self) -> None:
        """Renew the lease, this gateway's session counts and its calls' owner entries."""
        limits, calls = self.limits, self.calls
        if limits is None or calls is None:
            return
        async with self.counts_lock:
            counts = dict(limits.active)
            for gone in self._published_keys - set(counts):
                counts[gone] = 0
            await self.redis.publish_sessions(self.member, counts, self.lease_ms)
            self._published_keys = {key for key, count in counts.items() if count > 0}
        await self.redis.set_call_owners(calls.call_ids(), self.url, self._call_ttl())

    def _call_ttl(self) -> int:
        return max(2, int(self.lease_seconds))

    async def _beat(self) -> None:
        while True:
            try:
                await self.publish()
                if not self._healthy:
                    log.info("shared state (redis) reachable again")
                self._healthy = True
            except SharedStateUnavailable:
                if self._healthy:
                    log.warning("shared state (redis) unreachable; retrying")
                self._healthy = False
            except Exception:  # the lease must keep being renewed whatever happened
                log.exception("gateway heartbeat failed")
            await asyncio.sleep(self.lease_seconds / 3)

    async def publish_key(self, key_id: str) -> None:
        """Write this gateway's current session count of one key (after a session ended)."""
        if self.limits is None:
            return
        async with self.counts_lock:
            self._published_keys.add(key_id)  # until a heartbeat has written its 0 for sure
            counts = {key_id: self.limits.active.get(key_id, 0)}
            await self.redis.publish_sessions(self.member, counts, self.lease_ms)

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(SharedStateUnavailable):
            await self.redis.forget_gateway(self.member, sorted(self._published_keys))
        await self.http.aclose()
        await self.redis.close()


async def start_cluster(settings: Settings) -> Cluster | None:
    """The cluster membership when ``redis_url`` is set, else None (a single process)."""
    if not settings.redis_url:
        return None
    redis = RedisState(settings.redis_url)
    cluster = Cluster(settings, redis)
    if not await redis.ping():
        log.warning("shared state (redis) is not reachable yet; requests needing it get 503")
    log.info("gateway %s joins the cluster", cluster.url)
    return cluster


# --------------------------------------------------------------------------- limits


@dataclass
class SharedLimits(SessionLimits):
    """``SessionLimits`` whose per-key session count and event rate span all gateways."""

    cluster: Cluster | None = None
    batch: int = 1
    _allowance: dict[str, int] = field(default_factory=dict)
    _refilling: set[str] = field(default_factory=set)
    _degraded: set[str] = field(default_factory=set)

    @classmethod
    def for_cluster(cls, settings: Settings, cluster: Cluster) -> SharedLimits:
        rate, burst = settings.max_events_per_second, settings.event_burst
        return cls(
            max_sessions=settings.max_sessions,
            max_sessions_per_key=settings.max_sessions_per_key,
            events_per_second=rate,
            event_burst=burst,
            cluster=cluster,
            batch=max(1, int(min(burst / 4, rate / 2))) if rate else 1,
        )

    async def admit_shared(self, key_id: str) -> RealtimeError | None:
        refused = self.admit(key_id)
        if refused is not None or self.cluster is None:
            return refused
        cluster = self.cluster
        try:
            async with cluster.counts_lock:
                cluster._published_keys.add(key_id)
                admitted, total = await cluster.redis.admit_session(
                    key_id,
                    cluster.member,
                    self.active.get(key_id, 0),
                    self.max_sessions_per_key,
                    cluster.lease_ms,
                )
        except SharedStateUnavailable as unavailable:
            SessionLimits.release(self, key_id)
            return unavailable.error
        if not admitted:
            SessionLimits.release(self, key_id)
            return RealtimeError(
                "session_limit_reached",
                f"This API key already has {total} concurrent sessions across the server's gateways, "
                f"the most allowed is {self.max_sessions_per_key}.",
                type="invalid_request_error",
                fatal=True,
            )
        if self.events_per_second and self._allowance.get(key_id, 0) < self.batch:
            await self._refill(key_id)
        return None

    def release(self, key_id: str) -> None:
        super().release(key_id)
        if key_id not in self.active:
            self._allowance.pop(key_id, None)
            self._degraded.discard(key_id)
        cluster = self.cluster
        if cluster is not None:
            cluster.spawn("release", cluster.publish_key(key_id))

    def allow_event(self, key_id: str) -> bool:
        """Spend a leased token; ask for the next batch in the background before running out."""
        if not self.events_per_second or self.cluster is None:
            return super().allow_event(key_id)
        if key_id in self._degraded:  # redis down: this gateway's own bucket decides
            self._start_refill(key_id)
            return super().allow_event(key_id)
        left = self._allowance.get(key_id, 0)
        if left <= self.batch // 2:
            self._start_refill(key_id)
        if left <= -self.batch:  # a batch may be spent ahead of its lease (Redis round trips)
            return False
        self._allowance[key_id] = left - 1
        return True

    def _start_refill(self, key_id: str) -> None:
        if key_id in self._refilling or self.cluster is None:
            return
        self._refilling.add(key_id)
        task = asyncio.create_task(self._refill(key_id), name="event-token-lease")
        self.cluster._tasks.add(task)
        task.add_done_callback(self.cluster._tasks.discard)

    async def _refill(self, key_id: str) -> None:
        assert self.cluster is not None
        try:
            owed = max(0, -self._allowance.get(key_id, 0))
            got = await self.cluster.redis.take_tokens(
                key_id, self.events_per_second, self.event_burst, self.batch + owed
            )
        except SharedStateUnavailable:
            self._degraded.add(key_id)
        else:
            self._degraded.discard(key_id)
            if key_id in self.active:
                self._allowance[key_id] = self._allowance.get(key_id, 0) + got
        finally:
            self._refilling.discard(key_id)


# --------------------------------------------------------------------------- calls


class SharedCallRegistry(CallRegistry):
    """The call registry, with each call's owner (this gateway) published to Redis."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__()
        self.cluster = cluster
        self._publishing: dict[str, asyncio.Task[Any]] = {}

    def add(self, call: LiveCall) -> None:
        super().add(call)
        cluster = self.cluster
        work = cluster.redis.set_call_owners([call.call_id], cluster.url, cluster._call_ttl())
        self._publishing[call.call_id] = cluster.spawn("call owner", work)

    def remove(self, call: LiveCall) -> None:
        super().remove(call)
        self._publishing.pop(call.call_id, None)
        self.cluster.spawn("call end", self.cluster.redis.drop_call(call.call_id, self.cluster.url))

    async def published(self, call_id: str) -> None:
        task = self._publishing.pop(call_id, None)
        if task is not None:
            await asyncio.shield(task)


async def _owner_elsewhere(state: ServerState, call_id: str, headers: Any) -> tuple[Cluster, str] | None:
    """The owning gateway's URL when the call lives on another gateway (and this request was not
    already forwarded), else None. Raises ``SharedStateUnavailable`` when Redis is down."""
    cluster = state.cluster
    if cluster is None or headers.get(FORWARDED_HEADER):
        return None
    owner = await cluster.redis.call_owner(call_id)
    if owner is None or owner == cluster.url:
        return None
    return cluster, owner


async def forward_call_request(state: ServerState, request: Request, call_id: str) -> Response | None:
    """Relay a call-control request (hangup, accept, reject, refer) for a call this gateway does not
    hold to its owner, with the client's credentials; None when there is no other owner."""
    found = await _owner_elsewhere(state, call_id, request.headers)
    if found is None:
        return None
    cluster, owner = found
    passed = ("authorization", "api-key", "content-type")
    headers = {name: request.headers[name] for name in passed if name in request.headers}
    headers[FORWARDED_HEADER] = cluster.url
    try:
        answer = await cluster.http.post(
            owner + request.url.path, content=await request.body(), headers=headers
        )
    except httpx.HTTPError as exc:
        log.warning("gateway %s did not answer for call %s: %s", owner, call_id, type(exc).__name__)
        return http_error(
            502, "gateway_unreachable", f"The gateway serving call '{call_id}' did not answer; try again."
        )
    kept = {k: v for k, v in answer.headers.items() if k.lower() in ("content-type", "location")}
    return Response(content=answer.content, status_code=answer.status_code, headers=kept)


async def refuse_websocket(websocket: WebSocket, error: RealtimeError, code: int = 1011) -> None:
    """Send ``error`` as an ``error`` event on an accepted socket and close it."""
    connection = WebSocketConnection(websocket)
    connection.send(ErrorEvent(error=error.as_dict()))
    with contextlib.suppress(Exception):
        await connection.close(code, error.code or "error")
        await connection._writer()


async def forward_sideband(
    state: ServerState, websocket: WebSocket, call_id: str, credential: Credential | None
) -> bool:
    """Proxy a sideband WebSocket (already accepted) to the gateway that owns ``call_id``, frame
    by frame, until either side closes. False when no other gateway owns the call."""
    if credential is None:
        return False
    try:
        found = await _owner_elsewhere(state, call_id, websocket.headers)
    except SharedStateUnavailable as unavailable:
        await refuse_websocket(websocket, unavailable.error)
        return True
    if found is None:
        return False
    cluster, owner = found
    url = "ws" + owner.removeprefix("http") + f"/v1/realtime?call_id={quote(call_id)}"
    headers = {"Authorization": f"Bearer {credential.key}", FORWARDED_HEADER: cluster.url}
    try:
        upstream = await ws_connect(
            url, additional_headers=headers, max_size=state.settings.max_message_bytes, open_timeout=5
        )
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        log.warning("gateway %s did not take sideband of %s: %s", owner, call_id, type(exc).__name__)
        error = RealtimeError(
            "gateway_unreachable",
            f"The gateway serving call '{call_id}' did not answer; try again.",
            type="server_error",
            fatal=True,
        )
        await refuse_websocket(websocket, error)
        return True

    async def downstream() -> None:
        async for frame in upstream:
            if isinstance(frame, str):
                await websocket.send_text(frame)
            else:
                await websocket.send_bytes(frame)

    async def upstream_pump() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            await upstream.send(text if text is not None else message.get("bytes") or b"")

    pumps = {asyncio.create_task(downstream()), asyncio.create_task(upstream_pump())}
    try:
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pump in pumps:
            pump.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*pumps, return_exceptions=True)
        await upstream.close()
        code = {None: 1000, 1005: 1000, 1006: 1011}.get(upstream.close_code, upstream.close_code)
        with contextlib.suppress(Exception, ConnectionClosed):
            await websocket.close(code or 1000)
    return True
