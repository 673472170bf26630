"""API keys: where they come from and how a request proves it holds one.

Keys come from ``OPENREALTIME_API_KEYS``; without any, one is generated at first start and kept
in the data dir (mode 0600). Comparison is constant-time and never logs the key.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

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
