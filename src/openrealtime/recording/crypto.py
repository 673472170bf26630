"""Recording files encrypted at rest: AES-256-GCM in append-only chunks, one key id per file.

A file is a clear header, then chunks appended as the session goes on::

    header:  b"ORTREC" 0x01 | key-id length (1 byte) | key id (ASCII) | salt (32 random bytes)
    chunk:   ciphertext length (4 bytes, big-endian) | flags (1 byte) | ciphertext + 16-byte tag

The header names the key (ids are not secret) so that keys can rotate: the newest key encrypts,
every configured key decrypts. Each file gets its own AES key, derived with HKDF from the
named key and the file's random salt, so chunk nonces can simply count (chunk *n* uses nonce
*n*) without ever repeating under one key. Every chunk authenticates the header, its index and
its flags, so chunks cannot be reordered, moved to another file or have their flags flipped;
the last chunk of a properly closed file carries the ``FINAL`` flag, so a reader tells a
finished file from one cut short by a crash (whose torn last chunk is ignored) or truncated
on purpose. Nothing but the header, chunk lengths and flags is readable without the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "KEY_BYTES",
    "EncryptedAppender",
    "EncryptedReader",
    "KeyRing",
    "RecordingKey",
    "RecordingKeyError",
    "UnreadableRecording",
    "generate_key",
    "load_keyring",
]

KEY_BYTES = 32
MAGIC = b"ORTREC\x01"
SALT_BYTES = 32
TAG_BYTES = 16
FINAL = 0x01
MAX_CHUNK = 64 * 1024 * 1024
_LENGTH = struct.Struct(">IB")
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_HKDF_INFO = b"openrealtime recording file v1"


class RecordingKeyError(ValueError):
    """The configured recording key(s) cannot be used."""


class UnreadableRecording(Exception):
    """A recording file that cannot be decrypted: unknown key id, wrong key or tampering."""


@dataclass(frozen=True)
class RecordingKey:
    """A 32-byte AES key and its id (stored in clear in each file it encrypts)."""

    id: str
    secret: bytes

    def __repr__(self) -> str:  # never show the secret
        return f"RecordingKey(id={self.id!r})"


def derived_key_id(secret: bytes) -> str:
    """A stable, non-secret id for a key given without one."""
    return "rk_" + hashlib.sha256(b"openrealtime recording key id\x00" + secret).hexdigest()[:16]


def generate_key() -> str:
    """A new key as base64 (what ``OPENREALTIME_RECORDING_KEY`` takes)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


class KeyRing:
    """The configured keys: the last one encrypts new files, all of them decrypt."""

    def __init__(self, keys: Iterable[RecordingKey]) -> None:
        self.keys = list(keys)
        if not self.keys:
            raise RecordingKeyError("no recording key configured")
        self._by_id: dict[str, RecordingKey] = {}
        for key in self.keys:
            known = self._by_id.get(key.id)
            if known is not None and known.secret != key.secret:
                raise RecordingKeyError(f"two different recording keys share the id {key.id!r}")
            self._by_id[key.id] = key

    @property
    def current(self) -> RecordingKey:
        return self.keys[-1]

    def get(self, key_id: str) -> RecordingKey | None:
        return self._by_id.get(key_id)

    def __repr__(self) -> str:
        return f"KeyRing({[key.id for key in self.keys]})"


def _decode_secret(text: str) -> bytes:
    text = text.strip()
    for decoder in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            secret = decoder(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            continue
        if len(secret) == KEY_BYTES:
            return secret
    raise RecordingKeyError(f"a recording key must be base64 of exactly {KEY_BYTES} bytes")


def _parse_entry(entry: str) -> RecordingKey:
    key_id, sep, value = entry.partition(":")
    if not sep:
        secret = _decode_secret(entry)
        return RecordingKey(derived_key_id(secret), secret)
    if not _KEY_ID.match(key_id):
        raise RecordingKeyError("a recording key id may hold only letters, digits, '_', '.', '-' (1-64)")
    return RecordingKey(key_id, _decode_secret(value))


def _read_key_file(path: Path) -> list[RecordingKey]:
    raw = path.read_bytes()
    if len(raw) == KEY_BYTES:
        try:
            return [_parse_entry(raw.decode("ascii"))]
        except (UnicodeDecodeError, RecordingKeyError):
            return [RecordingKey(derived_key_id(raw), raw)]  # 32 raw bytes
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise RecordingKeyError(f"recording key file {path} is neither text nor 32 raw bytes") from None
    entries = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [_parse_entry(entry) for entry in entries]


def load_keyring(spec: str) -> KeyRing:
    """Keys from ``OPENREALTIME_RECORDING_KEY``: comma-separated ``[id:]base64`` entries or file
    paths (one entry per line, ``#`` comments, or exactly 32 raw bytes). Order matters: the last
    key encrypts."""
    keys: list[RecordingKey] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        path = Path(part).expanduser()
        if path.is_file():
            keys.extend(_read_key_file(path))
        else:
            keys.append(_parse_entry(part))
    return KeyRing(keys)


def _file_cipher(key: RecordingKey, salt: bytes) -> AESGCM:
    derived = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt, info=_HKDF_INFO).derive(key.secret)
    return AESGCM(derived)


def _nonce(index: int) -> bytes:
    return b"\x00\x00\x00\x00" + index.to_bytes(8, "big")


def _aad(header: bytes, index: int, flags: int) -> bytes:
    return header + index.to_bytes(8, "big") + bytes([flags])


class EncryptedAppender:
    """Writes one encrypted file, chunk by chunk (on a writer thread: every call does disk I/O)."""

    def __init__(self, path: Path, key: RecordingKey) -> None:
        self.path = path
        self.key_id = key.id
        salt = os.urandom(SALT_BYTES)
        key_id = key.id.encode("ascii")
        self._header = MAGIC + bytes([len(key_id)]) + key_id + salt
        self._cipher = _file_cipher(key, salt)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file: BinaryIO = os.fdopen(fd, "wb")  # kept open while the session lasts
        self._file.write(self._header)
        self._file.flush()
        self._index = 0
        self.size = len(self._header)
        """Bytes on disk."""
        self.plain_size = 0
        """Bytes of plaintext written."""
        self.closed = False

    def append(self, data: bytes, *, final: bool = False) -> None:
        """Encrypt ``data`` as the next chunk and write it through to the OS (a process crash
        loses nothing already appended)."""
        if self.closed:
            raise ValueError(f"{self.path} is closed")
        if len(data) > MAX_CHUNK:
            for start in range(0, len(data), MAX_CHUNK):
                piece = data[start : start + MAX_CHUNK]
                self.append(piece, final=final and start + MAX_CHUNK >= len(data))
            return
        flags = FINAL if final else 0
        sealed = self._cipher.encrypt(_nonce(self._index), data, _aad(self._header, self._index, flags))
        self._file.write(_LENGTH.pack(len(sealed), flags) + sealed)
        self._file.flush()
        self._index += 1
        self.size += _LENGTH.size + len(sealed)
        self.plain_size += len(data)
        if final:
            self.closed = True

    def sync(self) -> None:
        """Force the file to disk (power loss)."""
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """Mark the file finished (a last, empty ``FINAL`` chunk), sync and close it."""
        if not self.closed:
            self.append(b"", final=True)
        self.sync()
        self._file.close()

    def abandon(self) -> None:
        """Close without finishing (the file is being deleted)."""
        self.closed = True
        self._file.close()


@dataclass(frozen=True)
class _Header:
    key_id: str
    salt: bytes
    raw: bytes


def _read_header(handle: BinaryIO, path: Path) -> _Header:
    start = handle.read(len(MAGIC) + 1)
    if len(start) < len(MAGIC) + 1 or start[: len(MAGIC)] != MAGIC:
        raise UnreadableRecording(f"{path.name} is not a recording file")
    rest = handle.read(start[-1] + SALT_BYTES)
    if len(rest) < start[-1] + SALT_BYTES:
        raise UnreadableRecording(f"{path.name} has a truncated header")
    key_id = rest[: start[-1]].decode("ascii", errors="replace")
    return _Header(key_id, rest[start[-1] :], start + rest)


class EncryptedReader:
    """Reads one encrypted file back. ``complete`` tells, after iterating, whether the file was
    closed properly (else a crash cut it short: everything before the torn end is returned)."""

    def __init__(self, path: Path, keys: KeyRing) -> None:
        self.path = path
        with open(path, "rb") as handle:
            self._header = _read_header(handle, path)
        key = keys.get(self._header.key_id)
        if key is None:
            raise UnreadableRecording(
                f"{path.name} is encrypted with recording key {self._header.key_id!r}, which is not configured"
            )
        self._cipher = _file_cipher(key, self._header.salt)
        self.complete = False

    @property
    def key_id(self) -> str:
        return self._header.key_id

    def _frames(self) -> Iterator[tuple[int, int, bytes]]:
        """(index, flags, sealed) of every whole chunk on disk."""
        with open(self.path, "rb") as handle:
            handle.seek(len(self._header.raw))
            index = 0
            while True:
                head = handle.read(_LENGTH.size)
                if len(head) < _LENGTH.size:
                    return
                length, flags = _LENGTH.unpack(head)
                if length < TAG_BYTES or length > MAX_CHUNK + TAG_BYTES:
                    raise UnreadableRecording(f"{self.path.name}: chunk {index} has an impossible length")
                sealed = handle.read(length)
                if len(sealed) < length:
                    return  # torn by a crash mid-write
                yield index, flags, sealed
                index += 1

    def __iter__(self) -> Iterator[bytes]:
        self.complete = False
        for index, flags, sealed in self._frames():
            try:
                plain = self._cipher.decrypt(_nonce(index), sealed, _aad(self._header.raw, index, flags))
            except InvalidTag:
                raise UnreadableRecording(
                    f"{self.path.name}: chunk {index} does not authenticate (wrong key or altered file)"
                ) from None
            if plain:
                yield plain
            if flags & FINAL:
                self.complete = True
                return

    def read_all(self) -> bytes:
        return b"".join(self)

    def plain_size(self) -> int:
        """Plaintext bytes in the file, from the chunk lengths alone (nothing is decrypted)."""
        total = 0
        for _index, flags, sealed in self._frames():
            total += len(sealed) - TAG_BYTES
            if flags & FINAL:
                break
        return total
