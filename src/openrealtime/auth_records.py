"""What the server knows about a caller's key, as plain records every layer may share.

A leaf module (standard library only): ``storage/`` persists ``ClientSecret`` rows,
``telemetry/`` names keys with ``key_id``, and ``server/`` turns presented keys into a
``Principal``; none of them needs to import another for these.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

EPHEMERAL_PREFIX = "ek_"
"""Ephemeral client secrets start with this; API keys never do."""


def key_id(key: str) -> str:
    """A stable, non-secret name for a key (ledger rows, logs, metrics): never the key itself."""
    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def secret_hash(value: str) -> str:
    """What is stored of an ephemeral key: its SHA-256, never the key."""
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who a request acts for. For an ephemeral key, ``key_id`` is its parent API key's id and
    ``session`` the session config bound to it at minting (the session's initial config)."""

    key_id: str
    ephemeral: bool = False
    session: dict[str, object] | None = None


@dataclass(frozen=True)
class ClientSecret:
    """A minted ephemeral key as persisted: hash, parent, bound session (wire JSON), times."""

    key_hash: str
    parent_key_id: str
    session: dict[str, Any]
    created_at: int
    expires_at: int
