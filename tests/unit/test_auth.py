from __future__ import annotations

import stat
from pathlib import Path

from openrealtime.server.auth import (
    Authenticator,
    KeyStore,
    MemorySecretStore,
    Principal,
    credential_from_headers,
    key_id,
    secret_hash,
)


def test_configured_keys_are_used_and_nothing_is_written(tmp_path: Path) -> None:
    store, generated = KeyStore.load(["sk-a", "sk-b"], tmp_path)
    assert generated is None and len(store) == 2
    assert store.is_valid("sk-b") and not store.is_valid("sk-c") and not store.is_valid("")
    assert not (tmp_path / "api_keys").exists()


def test_a_key_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    store, generated = KeyStore.load([], tmp_path / "data")
    assert generated is not None and store.is_valid(generated)
    path = tmp_path / "data" / "api_keys"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, second = KeyStore.load([], tmp_path / "data")
    assert second is None and again.is_valid(generated)


def test_credentials_from_each_place() -> None:
    assert credential_from_headers({"authorization": "Bearer sk-1"}).key == "sk-1"  # type: ignore[union-attr]
    assert credential_from_headers({"api-key": "sk-2"}).key == "sk-2"  # type: ignore[union-attr]
    found = credential_from_headers({}, ["realtime", "openai-insecure-api-key.sk-3"])
    assert found is not None and found.key == "sk-3" and found.source == "subprotocol"
    assert credential_from_headers({"authorization": "Basic abc"}) is None
    assert credential_from_headers({}) is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_ephemeral_keys_live_until_they_expire() -> None:
    clock = FakeClock()
    store = MemorySecretStore()
    auth = Authenticator(KeyStore(["sk-parent"]), store, clock=clock)
    parent = await auth.authenticate("sk-parent")
    assert parent == Principal(key_id=key_id("sk-parent"))
    value, expires_at = await auth.mint(parent, {"type": "realtime", "instructions": "hi"}, 60)
    assert value.startswith("ek_") and expires_at == 1_000_060
    principal = await auth.authenticate(value)
    assert principal is not None and principal.ephemeral
    assert principal.key_id == parent.key_id and principal.session == {
        "type": "realtime",
        "instructions": "hi",
    }
    # only the hash is stored
    stored = await store.get_client_secret(secret_hash(value))
    assert stored is not None and value not in repr(stored)
    clock.now = 1_000_059.9
    assert await auth.authenticate(value) is not None
    clock.now = 1_000_060.0
    assert await auth.authenticate(value) is None


async def test_ephemeral_keys_are_refused_where_only_api_keys_may_act() -> None:
    auth = Authenticator(KeyStore(["sk-parent"]), MemorySecretStore())
    parent = await auth.authenticate("sk-parent")
    assert parent is not None
    value, _ = await auth.mint(parent, {}, 600)
    assert await auth.authenticate(value, allow_ephemeral=False) is None
    assert await auth.authenticate("ek_made_up") is None
    assert await auth.authenticate("sk-other") is None
    assert await auth.authenticate(None) is None
    assert key_id("sk-parent") != key_id("sk-other") and "sk-parent" not in key_id("sk-parent")
