"""Recording files at rest: keys, rotation, AES-GCM chunks, torn and tampered files."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from openrealtime.recording.crypto import (
    FINAL,
    EncryptedAppender,
    EncryptedReader,
    KeyRing,
    RecordingKeyError,
    UnreadableRecording,
    generate_key,
    load_keyring,
)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_keys_from_base64_ids_files_and_raw_bytes(tmp_path: Path) -> None:
    first, second = os.urandom(32), os.urandom(32)
    ring = load_keyring(f"{b64(first)}, old-2024:{b64(second)}")
    assert [k.id for k in ring.keys][1] == "old-2024" and ring.current.secret == second
    assert ring.keys[0].id.startswith("rk_") and ring.get(ring.keys[0].id) is not None
    assert b64(first) not in repr(ring) and b64(first) not in repr(ring.keys[0])

    listing = tmp_path / "keys.txt"
    listing.write_text(f"# rotated monthly\n{b64(first)}\nnew:{base64.urlsafe_b64encode(second).decode()}\n")
    raw = tmp_path / "raw.key"
    raw.write_bytes(first)
    from_files = load_keyring(f"{listing},{raw}")
    assert [k.secret for k in from_files.keys] == [first, second, first]
    assert from_files.current.secret == first  # the last entry encrypts

    for bad in ("", "not-base64!", b64(os.urandom(16)), f"bad id:{b64(first)}"):
        with pytest.raises(RecordingKeyError):
            load_keyring(bad)
    with pytest.raises(RecordingKeyError, match="share the id"):
        load_keyring(f"k:{b64(first)},k:{b64(second)}")
    assert len(base64.b64decode(generate_key())) == 32


def write(path: Path, ring: KeyRing, chunks: list[bytes], *, close: bool = True) -> EncryptedAppender:
    appender = EncryptedAppender(path, ring.current)
    for chunk in chunks:
        appender.append(chunk)
    if close:
        appender.close()
    return appender


def test_round_trip_rotation_and_nothing_in_clear(tmp_path: Path) -> None:
    old = load_keyring(generate_key())
    secret_text = b'{"transcript": "the account number is 4242"}\n'
    path = tmp_path / "a.orec"
    appender = write(path, old, [secret_text, b"RIFF....WAVEfmt ", b""])
    reader = EncryptedReader(path, old)
    assert reader.read_all() == secret_text + b"RIFF....WAVEfmt "
    assert reader.complete and reader.key_id == old.current.id
    assert reader.plain_size() == appender.plain_size == len(secret_text) + 16
    on_disk = path.read_bytes()
    assert appender.size == len(on_disk)
    for clear in (b"transcript", b"4242", b"RIFF", b"WAVE"):
        assert clear not in on_disk

    rotated = KeyRing([*old.keys, *load_keyring(generate_key()).keys])
    assert EncryptedReader(path, rotated).read_all().startswith(secret_text)  # old files still open
    newer = tmp_path / "b.orec"
    write(newer, rotated, [b"new"])
    assert EncryptedReader(newer, rotated).key_id == rotated.current.id != old.current.id
    with pytest.raises(UnreadableRecording, match="not configured"):
        EncryptedReader(newer, old)


def test_wrong_key_under_the_same_id_and_tampering_are_refused(tmp_path: Path) -> None:
    ring = load_keyring(f"k1:{generate_key()}")
    path = tmp_path / "c.orec"
    write(path, ring, [b"one", b"two", b"three"])
    impostor = load_keyring(f"k1:{generate_key()}")
    with pytest.raises(UnreadableRecording, match="does not authenticate"):
        EncryptedReader(path, impostor).read_all()

    original = path.read_bytes()
    data = bytearray(original)
    data[-5] ^= 0x01  # one bit of the last chunk's tag
    path.write_bytes(bytes(data))
    with pytest.raises(UnreadableRecording):
        EncryptedReader(path, ring).read_all()
    data = bytearray(original)
    data[-(5 + 16) - 3] ^= 0x01  # one bit of the ciphertext of "three"
    path.write_bytes(bytes(data))
    with pytest.raises(UnreadableRecording):
        EncryptedReader(path, ring).read_all()
    data = bytearray(original)
    data[-(5 + 16) + 4] ^= FINAL  # the FINAL flag cleared: authenticated, so refused
    path.write_bytes(bytes(data))
    with pytest.raises(UnreadableRecording):
        EncryptedReader(path, ring).read_all()

    with pytest.raises(UnreadableRecording, match="not a recording"):
        (tmp_path / "plain.orec").write_bytes(b"hello world" * 10)
        EncryptedReader(tmp_path / "plain.orec", ring)


def test_chunks_cannot_be_reordered_or_moved(tmp_path: Path) -> None:
    ring = load_keyring(generate_key())
    a, b = tmp_path / "a.orec", tmp_path / "b.orec"
    write(a, ring, [b"A" * 10, b"B" * 10], close=False).close()
    write(b, ring, [b"C" * 10], close=False).close()
    header_a = len(a.read_bytes()) - 2 * (5 + 26) - (5 + 16)
    body = a.read_bytes()[header_a:]
    first, second = body[:31], body[31:62]
    swapped = a.read_bytes()[:header_a] + second + first + body[62:]
    (tmp_path / "swapped.orec").write_bytes(swapped)
    with pytest.raises(UnreadableRecording):
        EncryptedReader(tmp_path / "swapped.orec", ring).read_all()
    # a chunk of file a spliced into file b (same key, other salt) does not authenticate
    b_bytes = b.read_bytes()
    header_b = len(b_bytes) - (5 + 26) - (5 + 16)
    (tmp_path / "spliced.orec").write_bytes(b_bytes[:header_b] + first)
    with pytest.raises(UnreadableRecording):
        EncryptedReader(tmp_path / "spliced.orec", ring).read_all()


def test_a_crash_leaves_everything_before_the_torn_chunk(tmp_path: Path) -> None:
    ring = load_keyring(generate_key())
    path = tmp_path / "torn.orec"
    appender = write(path, ring, [b"first;", b"second;"], close=False)
    appender.append(b"third, half written")
    appender.abandon()
    data = path.read_bytes()
    path.write_bytes(data[:-7])  # the process died in the middle of the last write
    reader = EncryptedReader(path, ring)
    assert reader.read_all() == b"first;second;"
    assert not reader.complete

    cut = tmp_path / "cut.orec"
    write(cut, ring, [b"x" * 100, b"y" * 100])
    whole = cut.read_bytes()
    cut.write_bytes(whole[: -(5 + 16)])  # the FINAL chunk removed: not a finished file any more
    reader = EncryptedReader(cut, ring)
    assert reader.read_all() == b"x" * 100 + b"y" * 100 and not reader.complete
