"""State that gateway replicas share through Redis: ephemeral keys, per-key session counts and
event-rate tokens, and which gateway owns each live call.

Every key lives under one prefix. Times are Redis's own clock (``TIME`` inside the scripts), so
gateways with skewed clocks still agree on leases and token refills. A Redis failure surfaces as
``SharedStateUnavailable`` (an OpenAI-shaped ``server_error``), never as a crash.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, cast

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from ..auth_records import ClientSecret
from ..protocol.errors import RealtimeError

log = logging.getLogger("openrealtime.redis")

PREFIX = "openrealtime:"

# KEYS[1]: the key's session counts (hash gateway -> count); KEYS[2]: gateway leases (zset
# gateway -> expiry ms). ARGV: gateway, its count with the new session, the limit, lease ms.
# Counts of gateways whose lease ran out are dropped, so a dead gateway's sessions stop counting.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local mine = tonumber(ARGV[2])
local others = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local gateway = fields[i]
  if gateway ~= ARGV[1] then
    local lease = redis.call('ZSCORE', KEYS[2], gateway)
    if lease and tonumber(lease) > now then
      others = others + tonumber(fields[i + 1])
    else
      redis.call('HDEL', KEYS[1], gateway)
    end
  end
end
if others + mine > tonumber(ARGV[3]) then
  return {0, others}
end
redis.call('HSET', KEYS[1], ARGV[1], mine)
redis.call('PEXPIRE', KEYS[1], 86400000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[1])
return {1, others + mine}
"""

# KEYS[1]: the key's token bucket (hash tokens, stamp ms). ARGV: rate/s, burst, tokens wanted.
# Returns how many were granted (0..wanted).
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local saved = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(saved[1]) or burst
local stamp = tonumber(saved[2]) or now
tokens = math.min(burst, tokens + (now - stamp) / 1000 * rate)
local got = math.min(want, math.floor(tokens))
tokens = tokens - got
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return got
"""

# Delete a call's owner entry only if this gateway still owns it.
_DROP_IF_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class SharedStateUnavailable(Exception):
    """Redis could not be reached: the request cannot be checked against shared state.

    Not a ``RealtimeError`` on purpose: routes turn those into 400s, this is the server's fault
    (HTTP 503, or an ``error`` event of type ``server_error``; see ``error``)."""

    code = "shared_state_unavailable"

    def __init__(self, detail: str = "") -> None:
        self.message = "The server's shared state (Redis) is unavailable; try again shortly." + (
            f" ({detail})" if detail else ""
        )
        super().__init__(self.message)

    @property
    def error(self) -> RealtimeError:
        return RealtimeError(self.code, self.message, type="server_error", fatal=True)


class RedisState:
    """One gateway's connection to the shared Redis (a pool; safe for concurrent use)."""

    def __init__(self, url: str, *, timeout_seconds: float = 2.0) -> None:
        self.client: redis.Redis = redis.Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), retries=1),
            decode_responses=True,
        )
        self._admit = self.client.register_script(_ADMIT)
        self._take = self.client.register_script(_TAKE)
        self._drop = self.client.register_script(_DROP_IF_OWNER)

    async def close(self) -> None:
        await self.client.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except RedisError:
            return False

    async def _run(self, what: str, operation: Any) -> Any:
        """Await a Redis operation; any Redis failure becomes ``SharedStateUnavailable``."""
        try:
            return await operation
        except RedisError as exc:
            log.warning("redis %s failed: %s", what, type(exc).__name__)
            raise SharedStateUnavailable(type(exc).__name__) from None
        except OSError as exc:
            log.warning("redis %s failed: %s", what, type(exc).__name__)
            raise SharedStateUnavailable(type(exc).__name__) from None

    # ------------------------------------------------------------------ ephemeral keys

    async def put_client_secret(self, secret: ClientSecret) -> None:
        """Stored by hash with a TTL ending at its expiry, so Redis forgets it by itself."""
        ttl = max(1, int(secret.expires_at - time.time()) + 1)
        body = json.dumps(
            {
                "parent_key_id": secret.parent_key_id,
                "session": secret.session,
                "created_at": secret.created_at,
                "expires_at": secret.expires_at,
            }
        )
        await self._run("put secret", self.client.set(f"{PREFIX}ek:{secret.key_hash}", body, ex=ttl))

    async def get_client_secret(self, key_hash: str) -> ClientSecret | None:
        raw = await self._run("get secret", self.client.get(f"{PREFIX}ek:{key_hash}"))
        if raw is None:
            return None
        data = json.loads(raw)
        return ClientSecret(
            key_hash=key_hash,
            parent_key_id=str(data["parent_key_id"]),
            session=cast(dict[str, Any], data["session"]),
            created_at=int(data["created_at"]),
            expires_at=int(data["expires_at"]),
        )

    # ------------------------------------------------------------------ sessions per key

    def _sessions_key(self, key_id: str) -> str:
        return f"{PREFIX}sessions:{key_id}"

    async def admit_session(
        self, key_id: str, gateway: str, count: int, limit: int, lease_ms: int
    ) -> tuple[bool, int]:
        """Publish ``count`` (this gateway's sessions of the key, the new one included) if the
        key's total over live gateways stays within ``limit``. Returns (admitted, total)."""
        keys = [self._sessions_key(key_id), f"{PREFIX}gateways"]
        result = await self._run("admit", self._admit(keys=keys, args=[gateway, count, limit, lease_ms]))
        admitted, total = result
        return bool(int(admitted)), int(total)

    async def publish_sessions(self, gateway: str, counts: dict[str, int], lease_ms: int) -> None:
        """Renew this gateway's lease and set its per-key counts (0 removes the entry)."""
        pipe = self.client.pipeline(transaction=False)
        now_ms = await self._now_ms()
        pipe.zadd(f"{PREFIX}gateways", {gateway: now_ms + lease_ms})
        for key_id, count in counts.items():
            if count > 0:
                pipe.hset(self._sessions_key(key_id), gateway, count)
                pipe.pexpire(self._sessions_key(key_id), 86_400_000)
            else:
                pipe.hdel(self._sessions_key(key_id), gateway)
        await self._run("publish sessions", pipe.execute())

    async def _now_ms(self) -> int:
        seconds, micros = await self._run("time", self.client.time())
        return int(seconds) * 1000 + int(micros) // 1000

    async def forget_gateway(self, gateway: str, key_ids: list[str]) -> None:
        """On a clean shutdown: this gateway's sessions stop counting at once."""
        pipe = self.client.pipeline(transaction=False)
        for key_id in key_ids:
            pipe.hdel(self._sessions_key(key_id), gateway)
        pipe.zrem(f"{PREFIX}gateways", gateway)
        await self._run("forget gateway", pipe.execute())

    # ------------------------------------------------------------------ event-rate tokens

    async def take_tokens(self, key_id: str, rate: float, burst: float, wanted: int) -> int:
        """Up to ``wanted`` tokens from the key's shared bucket (``rate``/s, ``burst`` max)."""
        keys = [f"{PREFIX}events:{key_id}"]
        return int(await self._run("take tokens", self._take(keys=keys, args=[rate, burst, wanted])))

    # ------------------------------------------------------------------ call owners

    def _call_key(self, call_id: str) -> str:
        return f"{PREFIX}call:{call_id}"

    async def set_call_owners(self, call_ids: list[str], gateway_url: str, ttl_seconds: int) -> None:
        if not call_ids:
            return
        pipe = self.client.pipeline(transaction=False)
        for call_id in call_ids:
            pipe.set(self._call_key(call_id), gateway_url, ex=ttl_seconds)
        await self._run("set call owners", pipe.execute())

    async def call_owner(self, call_id: str) -> str | None:
        owner = await self._run("get call owner", self.client.get(self._call_key(call_id)))
        return str(owner) if owner is not None else None

    async def drop_call(self, call_id: str, gateway_url: str) -> None:
        await self._run("drop call", self._drop(keys=[self._call_key(call_id)], args=[gateway_url]))
