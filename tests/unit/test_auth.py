from __future__ import annotations

import stat
from pathlib import Path

from openrealtime.server.auth import KeyStore, credential_from_headers


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
