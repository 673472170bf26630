"""API keys: where they come from and how a request proves it holds one.

Keys come from ``OPENREALTIME_API_KEYS``; without any, one is generated at first start and kept
in the data dir (mode 0600). Comparison is constant-time and never logs the key.
"""

from __future__ import annotations

import hmac
import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..auth_records import EPHEMERAL_PREFIX, ClientSecret, Principal, key_id, secret_hash

__all__ = [
    "EPHEMERAL_PREFIX",
    "Authenticator",
    "ClientSecret",
    "Credential",
    "KeyStore",
    "MemorySecretStore",
    "Principal",
    "SecretStore",
    "credential_from_headers",
    "key_id",
    "secret_hash",
]

KEY_FILE = "api_keys"
BROWSER_KEY_PREFIX = "openai-insecure-api-key."


@dataclass(frozen=True)
class Credential:
    """What a request presented: the key and where it was found."""

    key: str
    source: str  # "authorization", "api-key" or "subprotocol"


class KeyStore:
    """The set of valid API keys, checked in constant time."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = [k.encode() for k in keys if k]

    def __len__(self) -> int:
        return len(self._keys)

    def is_valid(self, key: str | None) -> bool:
        if not key:
            return False
        presented = key.encode()
        valid = False
        for known in self._keys:  # no early exit: every key is compared every time
            valid |= hmac.compare_digest(presented, known)
        return valid

    @classmethod
    def load(cls, configured: list[str], data_dir: Path) -> tuple[KeyStore, str | None]:
        """Keys from configuration, else from the data dir, else a new one.

        Returns the store and the newly generated key (to print once), if one was made.
        """
        if configured:
            return cls(configured), None
        path = data_dir / KEY_FILE
        if path.exists():
            keys = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            if keys:
                return cls(keys), None
        data_dir.mkdir(parents=True, exist_ok=True)
        key = "sk-or-" + secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
        return cls([key]), key


def credential_from_headers(
    headers: Mapping[str, str], subprotocols: Iterable[str] = ()
) -> Credential | None:
    """Find the key a client sent: Bearer header, ``api-key`` header or browser subprotocol."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return Credential(value.strip(), "authorization")
    api_key = headers.get("api-key")
    if api_key:
        return Credential(api_key.strip(), "api-key")
    for proto in subprotocols:
        if proto.startswith(BROWSER_KEY_PREFIX):
            return Credential(proto[len(BROWSER_KEY_PREFIX) :], "subprotocol")
    return None


# --------------------------------------------------------------------------- ephemeral keys


class SecretStore(Protocol):
    """Where ephemeral keys live so that they survive a restart (see ``storage``)."""

    async def put_client_secret(self, secret: ClientSecret) -> None: ...

    async def get_client_secret(self, key_hash: str) -> ClientSecret | None: ...


class MemorySecretStore:
    """A process-local ``SecretStore`` (unit tests; the server persists through ``storage``)."""

    def __init__(self) -> None:
        self._secrets: dict[str, ClientSecret] = {}

    async def put_client_secret(self, secret: ClientSecret) -> None:
        self._secrets[secret.key_hash] = secret

    async def get_client_secret(self, key_hash: str) -> ClientSecret | None:
        return self._secrets.get(key_hash)


class Authenticator:
    """Turns a presented key into a ``Principal``: API keys from the ``KeyStore``, ``ek_`` keys
    from the ``SecretStore`` until they expire."""

    def __init__(
        self, keys: KeyStore, secrets: SecretStore, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.keys = keys
        self.secrets = secrets
        self.clock = clock

    async def authenticate(self, key: str | None, *, allow_ephemeral: bool = True) -> Principal | None:
        """The principal for ``key``, or None. ``allow_ephemeral=False`` for admin routes and for
        minting (an ``ek_`` key can never mint another)."""
        if not key:
            return None
        if key.startswith(EPHEMERAL_PREFIX):
            if not allow_ephemeral:
                return None
            wanted = secret_hash(key)
            stored = await self.secrets.get_client_secret(wanted)
            if stored is None or not hmac.compare_digest(stored.key_hash, wanted):
                return None
            if stored.expires_at <= self.clock():
                return None
            return Principal(key_id=stored.parent_key_id, ephemeral=True, session=stored.session)
        if self.keys.is_valid(key):
            return Principal(key_id=key_id(key))
        return None

    async def mint(self, parent: Principal, session: dict[str, Any], ttl_seconds: int) -> tuple[str, int]:
        """A new ``ek_`` key bound to ``session``; returns the key and its expiry (epoch s)."""
        value = EPHEMERAL_PREFIX + secrets.token_urlsafe(24)
        now = int(self.clock())
        expires_at = now + ttl_seconds
        await self.secrets.put_client_secret(
            ClientSecret(
                key_hash=secret_hash(value),
                parent_key_id=parent.key_id,
                session=session,
                created_at=now,
                expires_at=expires_at,
            )
        )
        return value, expires_at
