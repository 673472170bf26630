"""A recording as a client gets it: one zip, decrypted, that any tool can open.

``recording.json``  the index entry, the session configuration, the turns (transcripts,
                    answers, tool calls and results, timings) and the audio layout
``events.jsonl``    the journal: every event with its time, audio payloads as references
                    (``{"track", "offset", "samples"}``) into the WAV files below
``caller.wav``      the caller's audio, 24 kHz mono pcm16 (``full`` recordings only)
``assistant.wav``   the assistant's audio as produced; ``assistant_played.wav`` only what the
                    caller heard (each answer cut where barge-in or a truncation stopped it)

Written as a stream (entries are decrypted chunk by chunk), so an hour-long call never sits in
memory; the journal references index ``caller.wav`` and ``assistant.wav``.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np
import numpy.typing as npt

from ..storage.base import RecordingMeta
from .crypto import EncryptedReader, KeyRing
from .journal import RATE
from .turns import JournalReader, RecordedTurn

__all__ = [
    "ASSISTANT_FILE",
    "CALLER_FILE",
    "EVENTS_FILE",
    "FORMAT",
    "Bundle",
    "read_bundle",
    "wav_header",
    "write_bundle",
]

FORMAT = "openrealtime.recording"
VERSION = 1
EVENTS_FILE = "events.orec"
CALLER_FILE = "caller.orec"
ASSISTANT_FILE = "assistant.orec"
MANIFEST = "recording.json"


def wav_header(samples: int, rate: int = RATE, channels: int = 1) -> bytes:
    """A canonical 44-byte PCM16 WAV header for ``samples`` frames."""
    data = samples * channels * 2
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * channels * 2, channels * 2, 16)
        + b"data"
        + struct.pack("<I", data)
    )


def _journal_lines(reader: EncryptedReader) -> Iterator[bytes]:
    tail = b""
    for chunk in reader:
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop()
        yield from (line for line in lines if line)
    if tail.strip():
        yield tail  # a record cut by a crash is still returned; the parser decides


def _copy_track(reader: EncryptedReader, out: IO[bytes], ranges: list[tuple[int, int]] | None) -> None:
    """Stream a track's plaintext into ``out``; ``ranges`` (sample offset, count) keep only those."""
    if ranges is None:
        for chunk in reader:
            out.write(chunk)
        return
    wanted = [(start * 2, (start + count) * 2) for start, count in ranges]
    position = 0
    index = 0
    for chunk in reader:
        end = position + len(chunk)
        while index < len(wanted) and wanted[index][0] < end:
            first, last = wanted[index]
            out.write(chunk[max(first, position) - position : min(last, end) - position])
            if last <= end:
                index += 1
            else:
                break
        position = end


def write_bundle(meta: RecordingMeta, folder: Path, keys: KeyRing, out: BinaryIO) -> dict[str, Any]:
    """Decrypt the recording in ``folder`` into a bundle written to ``out``; returns its manifest.

    Raises ``UnreadableRecording`` when a file cannot be decrypted with the configured keys."""
    journal = JournalReader()
    complete: dict[str, bool] = {}
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as bundle:
        events = EncryptedReader(folder / EVENTS_FILE, keys)
        with bundle.open("events.jsonl", "w", force_zip64=True) as entry:
            for line in _journal_lines(events):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # the torn last line of a crashed session
                journal.add(record)
                entry.write(line + b"\n")
        complete["events"] = events.complete
        turns = journal.finish()
        audio: dict[str, Any] = {"rate": RATE, "channels": 1, "sample_format": "pcm16"}
        if (folder / CALLER_FILE).exists():
            caller = EncryptedReader(folder / CALLER_FILE, keys)
            samples = caller.plain_size() // 2
            info = zipfile.ZipInfo("caller.wav")
            info.compress_type = zipfile.ZIP_STORED
            with bundle.open(info, "w", force_zip64=True) as entry:
                entry.write(wav_header(samples))
                _copy_track(caller, entry, None)
            complete["caller"] = caller.complete
            audio["caller"] = {"file": "caller.wav", "samples": samples, "seconds": samples / RATE}
        if (folder / ASSISTANT_FILE).exists():
            played = journal.played()
            produced = EncryptedReader(folder / ASSISTANT_FILE, keys).plain_size() // 2
            heard = sum(count for _, count in played)
            for name, ranges, total in (
                ("assistant.wav", None, produced),
                ("assistant_played.wav", played, heard),
            ):
                track = EncryptedReader(folder / ASSISTANT_FILE, keys)
                info = zipfile.ZipInfo(name)
                info.compress_type = zipfile.ZIP_STORED
                with bundle.open(info, "w", force_zip64=True) as entry:
                    entry.write(wav_header(total))
                    _copy_track(track, entry, ranges)
                complete["assistant"] = track.complete
            audio["assistant"] = {
                "file": "assistant.wav",
                "samples": produced,
                "seconds": produced / RATE,
                "played_file": "assistant_played.wav",
                "played_samples": heard,
                "segments": [asdict(segment) for segment in journal.segments],
                "truncations": journal.truncations,
            }
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "recording": asdict(meta),
            "complete": all(complete.values()),
            "files_complete": complete,
            "session": journal.session,
            "session_at_end": journal.session_at_end,
            "started_at": journal.started_at,
            "ended_at": journal.ended_at,
            "records": journal.records,
            "audio": audio,
            "turns": [turn.as_dict() for turn in turns],
            "notes": journal.notes,
        }
        bundle.writestr(MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False))
    return manifest


@dataclass
class Bundle:
    """A bundle opened for reading (replay, tests, tools)."""

    manifest: dict[str, Any]
    _zip: zipfile.ZipFile
    _source: BinaryIO

    @property
    def recording_id(self) -> str:
        return str(self.manifest["recording"]["id"])

    @property
    def turns(self) -> list[RecordedTurn]:
        return [RecordedTurn.from_dict(turn) for turn in self.manifest.get("turns") or []]

    @property
    def session(self) -> dict[str, Any] | None:
        session = self.manifest.get("session")
        return dict(session) if isinstance(session, dict) else None

    @property
    def has_audio(self) -> bool:
        return "caller" in (self.manifest.get("audio") or {})

    def events(self) -> Iterator[dict[str, Any]]:
        with self._zip.open("events.jsonl") as entry:
            for line in entry:
                if line.strip():
                    yield json.loads(line)

    def _track(self, name: str, start: int = 0, end: int | None = None) -> npt.NDArray[np.int16]:
        info = self._zip.getinfo(name)
        total = (info.file_size - 44) // 2
        stop = total if end is None else max(0, min(end, total))
        first = max(0, min(start, stop))
        if info.compress_type == zipfile.ZIP_STORED:  # read the slice in place: no decoding up to it
            self._source.seek(info.header_offset)
            local = self._source.read(30)
            name_length, extra_length = struct.unpack("<HH", local[26:30])
            self._source.seek(info.header_offset + 30 + name_length + extra_length + 44 + first * 2)
            data = self._source.read((stop - first) * 2)
        else:
            with self._zip.open(name) as entry:
                entry.seek(44 + first * 2)
                data = entry.read((stop - first) * 2)
        return np.frombuffer(data, dtype="<i2").astype(np.int16)

    def caller_audio(self, start: int = 0, end: int | None = None) -> npt.NDArray[np.int16]:
        """Caller samples ``[start, end)`` (24 kHz)."""
        return self._track("caller.wav", start, end)

    def assistant_audio(self, *, played: bool = False) -> npt.NDArray[np.int16]:
        return self._track("assistant_played.wav" if played else "assistant.wav")

    def close(self) -> None:
        self._zip.close()
        self._source.close()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def read_bundle(source: Path | str | bytes | BinaryIO) -> Bundle:
    """Open a bundle from a path, its bytes or a binary file; raises ``ValueError`` when it is
    not an openrealtime recording."""
    handle: BinaryIO
    if isinstance(source, bytes):
        handle = io.BytesIO(source)
    elif isinstance(source, str | Path):
        handle = open(source, "rb")  # noqa: SIM115 - the bundle closes it
    else:
        handle = source
    try:
        archive = zipfile.ZipFile(handle)
        manifest = json.loads(archive.read(MANIFEST))
    except (zipfile.BadZipFile, KeyError, ValueError) as error:
        handle.close()
        raise ValueError(f"not an openrealtime recording bundle ({error})") from None
    if manifest.get("format") != FORMAT:
        archive.close()
        handle.close()
        raise ValueError("not an openrealtime recording bundle (unknown format)")
    return Bundle(manifest, archive, handle)
