"""Audio files at the REST edge: decoding uploads, and encoding speech as it is made.

Uploads (``/v1/audio/transcriptions``) come in whatever a client recorded: WAV, MP3, Ogg
(Vorbis or Opus), FLAC, WebM, M4A/MP4. PyAV (FFmpeg, already here for WebRTC through aiortc)
decodes all of them, so one decoder covers every container OpenAI's endpoint accepts.
Decoding goes a stretch at a time (``AudioFileReader``), so a long file is decoded in short
jobs that take turns with live work, and stops as soon as the audio passes the configured
length, so a small file of hours of silence cannot fill the memory.

Speech (``/v1/audio/speech``) is streamed while it is synthesised, so every encoder here is
incremental: ``encode`` returns whatever bytes are complete so far, ``finish`` the rest. PCM
is raw 24 kHz s16le (OpenAI's ``pcm``); WAV is that with a header whose sizes say "unknown"
(``0xFFFFFFFF``, as OpenAI's streamed WAV), since the length is not known when it is sent;
MP3 (LAME), Opus (in Ogg), AAC (ADTS) and FLAC come from PyAV's FFmpeg encoders, written to a
sink that is never seeked, so every byte can leave as soon as it exists.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

__all__ = [
    "MEDIA_TYPES",
    "SPEECH_RATE",
    "AudioFileError",
    "AudioFileReader",
    "AudioTooLong",
    "FileEncoder",
    "SpeechFormat",
    "decode_file",
    "wav_bytes",
    "wav_stream_header",
]

SpeechFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
SPEECH_FORMATS: tuple[str, ...] = get_args(SpeechFormat)
SPEECH_RATE = 24_000
"""OpenAI's speech output rate (``pcm`` is documented as 24 kHz 16-bit mono)."""

MEDIA_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}

_CONTAINERS: dict[str, tuple[str, str, int, dict[str, str]]] = {
    # format: (muxer, encoder, bit rate, muxer options)
    "mp3": ("mp3", "libmp3lame", 64_000, {}),
    "opus": ("ogg", "libopus", 32_000, {"page_duration": "100000"}),  # a page per 100 ms, not per 1 s
    "aac": ("adts", "aac", 64_000, {}),
    "flac": ("flac", "flac", 0, {}),
}


class AudioFileError(ValueError):
    """The upload is not audio this server can decode."""


class AudioTooLong(AudioFileError):
    """The upload holds more audio than the configured limit."""


def wav_bytes(pcm: npt.NDArray[np.int16], rate: int) -> bytes:
    """A complete mono 16-bit WAV file."""
    data = np.asarray(pcm, dtype="<i2").tobytes()
    return _wav_header(rate, len(data)) + data


def wav_stream_header(rate: int) -> bytes:
    """A WAV header for a stream of unknown length (RIFF and data sizes ``0xFFFFFFFF``)."""
    return _wav_header(rate, None)


def _wav_header(rate: int, data_bytes: int | None) -> bytes:
    riff = 0xFFFFFFFF if data_bytes is None else 36 + data_bytes
    data = 0xFFFFFFFF if data_bytes is None else data_bytes
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data)
    )


class AudioFileReader:
    """Decodes an upload a stretch at a time, so a long file can be decoded in short jobs that
    take turns with other work; ``done`` once the file is exhausted (or ``close`` was called).

    Mono float32 at ``rate`` from any container FFmpeg reads. Raises ``AudioFileError`` for
    anything that is not decodable audio and ``AudioTooLong`` once more than ``max_seconds``
    have been decoded (the rest is never decoded). Not thread-safe; one thread at a time.
    """

    def __init__(self, data: bytes, rate: int, *, max_seconds: float | None = None) -> None:
        import av

        self.rate = rate
        self.max_seconds = max_seconds
        self._limit = None if max_seconds is None else int(max_seconds * rate)
        self.decoded = 0
        self.done = False
        try:
            self._container: Any = av.open(io.BytesIO(data), mode="r")
        except (av.error.FFmpegError, ValueError, OSError, EOFError) as exc:
            raise AudioFileError(f"not a readable audio file ({exc})") from exc
        if not self._container.streams.audio:
            self.close()
            raise AudioFileError("the file has no audio stream")
        self._frames: Iterator[Any] = iter(self._container.decode(self._container.streams.audio[0]))
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)

    def read(self, seconds: float) -> npt.NDArray[np.float32]:
        """The next ``seconds`` (or a little more; less at the end) of audio."""
        import av

        wanted = max(1, int(seconds * self.rate))
        pieces: list[npt.NDArray[np.float32]] = []
        got = 0
        try:
            while got < wanted and not self.done:
                frame = next(self._frames, None)
                outs = self._resampler.resample(frame)
                if frame is None:
                    self.close()
                for out in outs:
                    samples = np.asarray(out.to_ndarray(), dtype=np.float32).reshape(-1)
                    pieces.append(samples)
                    got += samples.size
                if self._limit is not None and self.decoded + got > self._limit:
                    raise AudioTooLong(f"the audio is longer than {self.max_seconds:g} seconds")
        except (av.error.FFmpegError, OSError, EOFError) as exc:
            self.close()
            raise AudioFileError(f"the audio could not be decoded ({exc})") from exc
        except AudioFileError:
            self.close()
            raise
        self.decoded += got
        audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        return np.clip(audio, -1.0, 1.0)

    def close(self) -> None:
        if not self.done:
            self.done = True
            self._container.close()


def decode_file(data: bytes, rate: int, *, max_seconds: float | None = None) -> npt.NDArray[np.float32]:
    """The whole upload at once (see ``AudioFileReader``)."""
    reader = AudioFileReader(data, rate, max_seconds=max_seconds)
    pieces = []
    while not reader.done:
        pieces.append(reader.read(60.0))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)


class _Sink:
    """A write-only file for PyAV: collects bytes until taken; never seeked, so a muxer that
    would rewrite its header at the end (FLAC) leaves the streamed header as it was."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        return len(chunk)

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


class FileEncoder:
    """24 kHz mono int16 in, bytes of ``fmt`` out, chunk by chunk.

    Not thread-safe, but it may be used from one thread after another (one synthesis job at a
    time feeds it).
    """

    def __init__(self, fmt: SpeechFormat, rate: int = SPEECH_RATE) -> None:
        if fmt not in SPEECH_FORMATS:
            raise ValueError(f"unknown speech format {fmt!r}")
        self.format = fmt
        self.rate = rate
        self._started = False
        self._finished = False
        self._pts = 0
        self._container: Any = None
        self._stream: Any = None
        self._sink = _Sink()
        if fmt in _CONTAINERS:
            import av

            muxer, codec, bit_rate, options = _CONTAINERS[fmt]
            self._container = av.open(self._sink, mode="w", format=muxer, options=options)
            self._stream = self._container.add_stream(codec, rate=rate, layout="mono")
            if bit_rate:
                self._stream.bit_rate = bit_rate

    def encode(self, pcm: npt.NDArray[np.int16]) -> bytes:
        samples = np.ascontiguousarray(pcm, dtype=np.int16).reshape(-1)
        if self._finished:
            raise RuntimeError("encode() after finish()")
        head = self._head()
        if self.format in ("pcm", "wav"):
            return head + samples.astype("<i2").tobytes()
        if samples.size:
            import av

            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = self.rate
            frame.pts = self._pts
            self._pts += samples.size
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        return head + self._sink.take()

    def finish(self) -> bytes:
        """The last bytes (encoder delay, trailers); the encoder cannot be used afterwards."""
        if self._finished:
            return b""
        head = self._head()
        self._finished = True
        if self._container is None:
            return head
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return head + self._sink.take()

    def close(self) -> None:
        """Release the encoder without its trailer (the stream was abandoned)."""
        if not self._finished and self._container is not None:
            self._finished = True
            self._container.close()

    def _head(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return wav_stream_header(self.rate) if self.format == "wav" else b""
