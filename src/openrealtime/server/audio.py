"""OpenAI's audio endpoints on this server's engines: ``POST /v1/audio/transcriptions`` and
``POST /v1/audio/speech``.

They use the engines and the voice table the Realtime sessions use, and their CPU work goes
through the same scheduler queues at ``PRIORITY_AUDIO_API``: after the turns of live
sessions (a caller waiting for an answer right now), before the background passes that only
make a later transcript faster. Long work is cut so it never holds an engine for long: an
upload is decoded a minute of audio per job and transcribed in pieces of at most 25 s cut at
its quietest moments, speech is synthesised clause by clause, each piece one job, so a live
turn waits at most for one piece.

Speech leaves as it is made: the first clause is synthesised, encoded and sent while the rest
waits its turn (chunked transfer, or server-sent events with ``stream_format=sse``), and a
client that disconnects stops the synthesis. Transcription with ``stream=true`` sends a
``transcript.text.delta`` per segment as each piece is done, then ``transcript.text.done``.

API keys only: ephemeral ``ek_`` keys are for Realtime sessions (as on OpenAI, where they
are realtime-only), so they get the usual 401 error body here. Usage goes to the ledger as
sessions' does: a ``transcription`` row at transcription prices, a ``speech`` row at the
speech prices (``telemetry/prices.py``), keyed by the request id sent back in
``x-request-id``; aborted requests are billed for what was done, with status ``incomplete``.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated, Any, cast

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from ..audio.files import (
    MEDIA_TYPES,
    SPEECH_RATE,
    AudioFileError,
    AudioFileReader,
    AudioTooLong,
    FileEncoder,
    SpeechFormat,
)
from ..audio.resample import StreamingResampler
from ..config import Settings
from ..engines.asr.streaming import SegmentTranscriber
from ..engines.base import CancelToken, FloatAudio, PcmAudio, Synthesizer, Transcriber, Transcript
from ..engines.tts.chunker import ClauseChunker
from ..protocol.ids import new_id
from ..storage.base import UsageRecord
from ..telemetry.ledger import day_of
from .auth import Principal
from .state import ServerState, State, require_principal

__all__ = ["PRIORITY_AUDIO_API", "router", "upload_limits"]

log = logging.getLogger("openrealtime.audio_api")

TRANSCRIPTIONS = "/v1/audio/transcriptions"
SPEECH = "/v1/audio/speech"
PRIORITY_AUDIO_API = 5
"""Between ``PRIORITY_TURN`` (0, live turns) and ``PRIORITY_BACKGROUND`` (10, partials)."""
PIECE_SECONDS = 25.0
"""Longest piece of an upload transcribed as one job (one Whisper window with its margin)."""
CUT_SEARCH_SECONDS = 5.0
"""A piece ends at the quietest 20 ms of its last seconds, so no word is cut in two."""
MIN_AUDIO_SECONDS = 0.1
DECODE_SECONDS = 60.0
"""Audio decoded per ASR-queue job."""
STALL_SECONDS = 60.0
"""A synthesis job that produces nothing for this long fails the request (as in sessions)."""
TRANSCRIPTION_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
SPEED_RANGE = (0.25, 4.0)
MULTIPART_OVERHEAD_BYTES = 64 * 1024

# Whisper's languages (ISO-639-1 code -> the name verbose_json reports, as OpenAI does).
_LANGUAGE_TABLE = (
    "en:english,zh:chinese,de:german,es:spanish,ru:russian,ko:korean,fr:french,ja:japanese,"
    "pt:portuguese,tr:turkish,pl:polish,ca:catalan,nl:dutch,ar:arabic,sv:swedish,it:italian,"
    "id:indonesian,hi:hindi,fi:finnish,vi:vietnamese,he:hebrew,uk:ukrainian,el:greek,ms:malay,"
    "cs:czech,ro:romanian,da:danish,hu:hungarian,ta:tamil,no:norwegian,th:thai,ur:urdu,"
    "hr:croatian,bg:bulgarian,lt:lithuanian,la:latin,mi:maori,ml:malayalam,cy:welsh,sk:slovak,"
    "te:telugu,fa:persian,lv:latvian,bn:bengali,sr:serbian,az:azerbaijani,sl:slovenian,"
    "kn:kannada,et:estonian,mk:macedonian,br:breton,eu:basque,is:icelandic,hy:armenian,"
    "ne:nepali,mn:mongolian,bs:bosnian,kk:kazakh,sq:albanian,sw:swahili,gl:galician,"
    "mr:marathi,pa:punjabi,si:sinhala,km:khmer,sn:shona,yo:yoruba,so:somali,af:afrikaans,"
    "oc:occitan,ka:georgian,be:belarusian,tg:tajik,sd:sindhi,gu:gujarati,am:amharic,"
    "yi:yiddish,lo:lao,uz:uzbek,fo:faroese,ht:haitian creole,ps:pashto,tk:turkmen,nn:nynorsk,"
    "mt:maltese,sa:sanskrit,lb:luxembourgish,my:myanmar,bo:tibetan,tl:tagalog,mg:malagasy,"
    "as:assamese,tt:tatar,haw:hawaiian,ln:lingala,ha:hausa,ba:bashkir,jw:javanese,"
    "su:sundanese,yue:cantonese"
)


def _languages(table: str) -> dict[str, str]:
    return {code: name for code, _, name in (pair.partition(":") for pair in table.split(","))}


LANGUAGES = _languages(_LANGUAGE_TABLE)

_TRANSCRIPTION_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file", "model"],
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "model": {"type": "string"},
                    "language": {"type": "string"},
                    "prompt": {"type": "string"},
                    "response_format": {"type": "string", "enum": list(TRANSCRIPTION_FORMATS)},
                    "temperature": {"type": "number"},
                    "stream": {"type": "boolean"},
                },
            }
        }
    },
}
_SPEECH_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["model", "input", "voice"],
                "properties": {
                    "model": {"type": "string"},
                    "input": {"type": "string"},
                    "voice": {"type": "string"},
                    "instructions": {"type": "string"},
                    "response_format": {"type": "string", "enum": list(SPEECH_FORMATS)},
                    "speed": {"type": "number"},
                    "stream_format": {"type": "string", "enum": ["audio", "sse"]},
                },
            }
        }
    },
}


def upload_limits(settings: Settings) -> dict[str, int]:
    """Request-body limits of these routes (``BodySizeLimit``'s ``path_limits``)."""
    return {TRANSCRIPTIONS: settings.max_audio_upload_bytes + MULTIPART_OVERHEAD_BYTES}


class ApiError(Exception):
    """An error answered as OpenAI's REST error body."""

    def __init__(
        self, status: int, code: str | None, message: str, param: str | None = None, kind: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


class _Slots:
    """Audio requests each key has running, capped at ``MAX_AUDIO_REQUESTS_PER_KEY``."""

    def __init__(self) -> None:
        self.running: dict[str, int] = {}

    def take(self, key_id: str, limit: int) -> None:
        if self.running.get(key_id, 0) >= limit:
            raise ApiError(
                429,
                "rate_limit_exceeded",
                f"Too many audio requests at once for this key (limit {limit}); retry when one has finished.",
            )
        self.running[key_id] = self.running.get(key_id, 0) + 1

    def give(self, key_id: str) -> None:
        left = self.running.get(key_id, 0) - 1
        if left > 0:
            self.running[key_id] = left
        else:
            self.running.pop(key_id, None)


@dataclass
class _Call:
    """One request's life: its cancel token, slot and ledger row, ended exactly once."""

    server: ServerState
    principal: Principal
    slots: _Slots
    kind: str
    model: str
    request_id: str = field(default_factory=lambda: new_id("req_"))
    token: CancelToken = field(default_factory=CancelToken)
    started: float = field(default_factory=time.monotonic)
    tokens: dict[str, int] = field(default_factory=dict)
    ended: bool = False

    def end(self, status: str) -> None:
        if self.ended:
            return
        self.ended = True
        self.token.cancel()
        self.slots.give(self.principal.key_id)
        ledger = self.server.usage_ledger
        produced = self.tokens.get("output_text", 0) + self.tokens.get("output_audio", 0)
        if ledger is None or (status != "completed" and not produced):
            return  # nothing was delivered: nothing is billed
        at = time.time()
        ledger.record(
            UsageRecord(
                id=f"{self.kind}:{self.request_id}",
                kind=self.kind,
                key_id=self.principal.key_id,
                session_id=self.request_id,
                transport="http",
                model=self.model,
                status=status,
                created_at=at,
                day=day_of(at),
                input_text_tokens=self.tokens.get("input_text", 0),
                input_audio_tokens=self.tokens.get("input_audio", 0),
                output_text_tokens=self.tokens.get("output_text", 0),
                output_audio_tokens=self.tokens.get("output_audio", 0),
            )
        )


class _ClosingStream(StreamingResponse):
    """A streaming response that ends its request however the stream ends (finished,
    client gone, or never started)."""

    def __init__(self, content: AsyncIterator[bytes], call: _Call, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.call = call

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()
            self.call.end("incomplete")


def _sse(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


# --------------------------------------------------------------------------- shared checks


audio_key = require_principal(
    api_keys_only=True,
    ephemeral_refusal="Ephemeral keys are for Realtime sessions only; use an API key for the audio endpoints.",
)
AudioKey = Annotated[Principal, Depends(audio_key)]


def _check_budget(server: ServerState, principal: Principal) -> None:
    ledger = server.usage_ledger
    check = ledger.budget_check(principal.key_id) if ledger is not None else None
    refusal = check() if check is not None else None
    if refusal:
        raise ApiError(429, "insufficient_quota", refusal, kind="insufficient_quota")


def _count_tokens(server: ServerState, engine: object, text: str) -> int:
    if not text:
        return 0
    count = getattr(engine, "count_tokens", None)
    if callable(count):
        return int(count(text))
    return int(server.engines.llm.count_tokens(text))


def _start(server: ServerState, principal: Principal, slots: _Slots, kind: str, model: str) -> _Call:
    slots.take(principal.key_id, server.settings.max_audio_requests_per_key)
    return _Call(server, principal, slots, kind, model)


# --------------------------------------------------------------------------- transcription


@dataclass(frozen=True)
class TranscriptionParams:
    model: str
    language: str | None
    prompt: str | None
    response_format: str
    stream: bool


@dataclass(frozen=True)
class Piece:
    """One transcribed piece of an upload, its segments in seconds from the upload's start."""

    start: float
    end: float
    segments: tuple[tuple[float, float, str], ...]
    language: str | None
    output_tokens: int


def _field(form: Any, name: str) -> str | None:
    value = form.get(name)
    if value is None or isinstance(value, UploadFile):
        return None
    return str(value)


def transcription_params(form: Any) -> TranscriptionParams:
    """Validate the form fields (everything but the file)."""
    model = (_field(form, "model") or "").strip()
    if not model:
        raise ApiError(400, "missing_required_parameter", "You must provide a model parameter.", "model")
    response_format = (_field(form, "response_format") or "json").strip()
    if response_format not in TRANSCRIPTION_FORMATS:
        raise ApiError(
            400,
            "invalid_value",
            f"Invalid response_format '{response_format}'. Supported: {', '.join(TRANSCRIPTION_FORMATS)}.",
            "response_format",
        )
    language = (_field(form, "language") or "").strip().lower() or None
    if language is not None and language not in LANGUAGES:
        raise ApiError(
            400, "invalid_value", f"Invalid language '{language}': expected an ISO-639-1 code.", "language"
        )
    raw_temperature = _field(form, "temperature")
    if raw_temperature is not None and raw_temperature.strip():
        try:
            temperature = float(raw_temperature)
        except ValueError:
            temperature = math.nan
        if not 0.0 <= temperature <= 1.0:
            raise ApiError(400, "invalid_value", "temperature must be a number from 0 to 1.", "temperature")
    raw_stream = (_field(form, "stream") or "false").strip().lower()
    if raw_stream not in ("true", "false", "1", "0"):
        raise ApiError(400, "invalid_value", "stream must be true or false.", "stream")
    for granularity in form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities"):
        if granularity == "word":
            raise ApiError(
                400,
                "unsupported_value",
                "Word timestamps are not supported by this server; use 'segment'.",
                "timestamp_granularities",
            )
        if granularity != "segment":
            raise ApiError(
                400,
                "invalid_value",
                f"Invalid timestamp granularity '{granularity}'.",
                "timestamp_granularities",
            )
    prompt = _field(form, "prompt")
    return TranscriptionParams(
        model=model,
        language=language,
        prompt=prompt.strip() if prompt and prompt.strip() else None,
        response_format=response_format,
        stream=raw_stream in ("true", "1"),
    )


def cut_points(audio: FloatAudio, rate: int, piece_seconds: float = PIECE_SECONDS) -> list[tuple[int, int]]:
    """``(start, end)`` sample ranges of at most ``piece_seconds``, each cut at the quietest
    20 ms of its last ``CUT_SEARCH_SECONDS``."""
    longest = int(piece_seconds * rate)
    search = min(int(CUT_SEARCH_SECONDS * rate), longest // 2)
    frame = max(1, rate // 50)
    cuts: list[tuple[int, int]] = []
    start = 0
    while audio.size - start > longest:
        low = start + longest - search
        window = audio[low : start + longest]
        frames = window[: window.size // frame * frame].reshape(-1, frame)
        quietest = int(np.argmin((frames.astype(np.float64) ** 2).mean(axis=1)))
        cut = low + quietest * frame + frame // 2
        cuts.append((start, cut))
        start = cut
    cuts.append((start, audio.size))
    return cuts


def _transcribe_piece(
    transcriber: Transcriber, audio: FloatAudio, params: TranscriptionParams, cancel: CancelToken
) -> tuple[Transcript, list[tuple[float, float, str]]]:
    if isinstance(transcriber, SegmentTranscriber):
        timed = transcriber.transcribe_segments(
            audio, language=params.language, prompt=params.prompt, cancel=cancel
        )
        return timed.transcript, [(s.start, s.end, s.text) for s in timed.segments]
    return transcriber.transcribe(audio, language=params.language, prompt=params.prompt, cancel=cancel), []


async def transcribe_pieces(
    server: ServerState, transcriber: Transcriber, audio: FloatAudio, params: TranscriptionParams, call: _Call
) -> AsyncIterator[Piece]:
    """Transcribe the upload piece by piece on the ASR queue, yielding each as it is done."""
    rate = transcriber.sample_rate
    for start, end in cut_points(audio, rate):
        chunk = audio[start:end]

        def run(chunk: FloatAudio = chunk) -> tuple[Transcript, list[tuple[float, float, str]]]:
            return _transcribe_piece(transcriber, chunk, params, call.token)

        transcript, timed = await server.scheduler.asr.call(
            run, priority=PRIORITY_AUDIO_API, cancel=call.token
        )
        offset, until = start / rate, end / rate
        segments = [
            (offset + a, min(offset + b, until), text.strip()) for a, b, text in timed if text.strip()
        ]
        if not segments and transcript.text.strip():
            segments = [(offset, until, transcript.text.strip())]
        text = " ".join(s[2] for s in segments)
        tokens = transcript.output_tokens or _count_tokens(server, transcriber, text)
        piece = Piece(offset, until, tuple(segments), transcript.language, tokens)
        call.tokens["output_text"] = call.tokens.get("output_text", 0) + piece.output_tokens
        yield piece


def _audio_tokens(seconds: float) -> int:
    """1 token per 100 ms of input audio, as sessions count their transcriptions."""
    return max(1, int(seconds * 10)) if seconds > 0 else 0


def _usage_tokens(call: _Call) -> dict[str, Any]:
    audio, text = call.tokens.get("input_audio", 0), call.tokens.get("input_text", 0)
    output = call.tokens.get("output_text", 0)
    return {
        "type": "tokens",
        "input_tokens": audio + text,
        "input_token_details": {"text_tokens": text, "audio_tokens": audio},
        "output_tokens": output,
        "total_tokens": audio + text + output,
    }


def _clock(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{separator}{millis:03d}"


def subtitles(segments: Sequence[tuple[float, float, str]], kind: str) -> str:
    """SubRip (``srt``) or WebVTT (``vtt``) text of the segments."""
    if kind == "srt":
        return "".join(
            f"{index}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{text}\n\n"
            for index, (start, end, text) in enumerate(segments, 1)
        )
    return "WEBVTT\n\n" + "".join(
        f"{_clock(start, '.')} --> {_clock(end, '.')}\n{text}\n\n" for start, end, text in segments
    )


def _compression_ratio(text: str) -> float:
    import zlib

    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def transcription_body(
    params: TranscriptionParams, pieces: Sequence[Piece], seconds: float, call: _Call
) -> Response:
    """The answer in the requested ``response_format``."""
    segments = [segment for piece in pieces for segment in piece.segments]
    text = " ".join(segment[2] for segment in segments)
    duration_usage = {"type": "duration", "seconds": math.ceil(seconds)}
    if params.response_format == "text":
        return PlainTextResponse(text + "\n")
    if params.response_format in ("srt", "vtt"):
        return PlainTextResponse(subtitles(segments, params.response_format))
    if params.response_format == "verbose_json":
        code = next((p.language for p in pieces if p.language), None) or params.language or "en"
        return JSONResponse(
            {
                "task": "transcribe",
                "language": LANGUAGES.get(code, code),
                "duration": round(seconds, 3),
                "text": text,
                "segments": [
                    {
                        "id": index,
                        "seek": round(start * 100),
                        "start": round(start, 3),
                        "end": round(end, 3),
                        "text": segment_text,
                        "tokens": [],
                        "temperature": 0.0,
                        "avg_logprob": 0.0,
                        "compression_ratio": round(_compression_ratio(segment_text), 4),
                        "no_speech_prob": 0.0,
                    }
                    for index, (start, end, segment_text) in enumerate(segments)
                ],
                "usage": duration_usage,
            }
        )
    usage = duration_usage if params.model == "whisper-1" else _usage_tokens(call)
    return JSONResponse({"text": text, "usage": usage})


async def _upload(request: Request, settings: Settings) -> tuple[Any, bytes]:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(
            400,
            "invalid_value",
            f"Invalid Content-Type '{content_type or 'none'}': expected multipart/form-data with a 'file'.",
        )
    try:
        form = await request.form(max_files=1, max_fields=64)
    except StarletteHTTPException as exc:
        raise ApiError(400, "invalid_value", f"The multipart body could not be read: {exc.detail}") from exc
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        await form.close()
        raise ApiError(400, "missing_required_parameter", "You must provide a 'file' to transcribe.", "file")
    data = await upload.read(settings.max_audio_upload_bytes + 1)
    if len(data) > settings.max_audio_upload_bytes:
        await form.close()
        raise ApiError(
            413,
            "request_too_large",
            f"The file is larger than the limit of {settings.max_audio_upload_bytes} bytes.",
            "file",
        )
    return form, data


async def _decode(server: ServerState, transcriber: Transcriber, data: bytes, call: _Call) -> FloatAudio:
    """The upload as the transcriber's audio, decoded on the ASR queue a minute of audio per
    job (FFmpeg decodes an MP3 at some hundred times real time here: a long upload decoded
    at once would hold the ASR worker for seconds)."""
    settings = server.settings
    pieces: list[FloatAudio] = []
    reader: AudioFileReader | None = None

    def start() -> AudioFileReader:
        return AudioFileReader(data, transcriber.sample_rate, max_seconds=settings.max_transcription_seconds)

    try:
        reader = await server.scheduler.asr.call(start, priority=PRIORITY_AUDIO_API, cancel=call.token)
        while not reader.done:
            pieces.append(
                await server.scheduler.asr.call(
                    partial(reader.read, DECODE_SECONDS), priority=PRIORITY_AUDIO_API, cancel=call.token
                )
            )
    except AudioTooLong as exc:
        raise ApiError(
            400,
            "audio_too_long",
            f"The audio is longer than {settings.max_transcription_seconds:g} seconds.",
            "file",
        ) from exc
    except AudioFileError as exc:
        raise ApiError(
            400,
            "invalid_value",
            "Invalid file format: the file could not be decoded as audio. Supported formats: flac, m4a, mp3, "
            "mp4, mpeg, mpga, oga, ogg, wav, webm.",
            "file",
        ) from exc
    finally:
        if reader is not None:
            reader.close()
    audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    if audio.size < MIN_AUDIO_SECONDS * transcriber.sample_rate:
        raise ApiError(
            400,
            "audio_too_short",
            f"Audio file is too short. Minimum audio length is {MIN_AUDIO_SECONDS} seconds.",
            "file",
        )
    return audio


async def _transcription_events(
    server: ServerState,
    transcriber: Transcriber,
    audio: FloatAudio,
    params: TranscriptionParams,
    call: _Call,
) -> AsyncIterator[bytes]:
    """``transcript.text.delta`` per segment as pieces finish, then ``transcript.text.done``."""
    text = ""
    status = "incomplete"
    try:
        async for piece in transcribe_pieces(server, transcriber, audio, params, call):
            for _, _, segment in piece.segments:
                delta = (" " if text else "") + segment
                text += delta
                yield _sse({"type": "transcript.text.delta", "delta": delta, "logprobs": None})
        yield _sse(
            {"type": "transcript.text.done", "text": text, "logprobs": None, "usage": _usage_tokens(call)}
        )
        status = "completed"
    except Exception as exc:
        log.exception("transcription %s failed", call.request_id)
        error = ApiError(500, "engine_error", f"The audio could not be transcribed: {exc}")
        yield _sse({"type": "error", **error.body()})
        status = "failed"
    finally:
        call.end(status)


# --------------------------------------------------------------------------- speech


@dataclass(frozen=True)
class SpeechParams:
    model: str
    input: str
    voice: str | dict[str, Any]
    response_format: SpeechFormat
    speed: float
    stream_format: str


def speech_params(body: Any, settings: Settings) -> SpeechParams:
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_type", "The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ApiError(400, "missing_required_parameter", "You must provide a model parameter.", "model")
    text = body.get("input")
    if not isinstance(text, str):
        raise ApiError(400, "missing_required_parameter", "You must provide the 'input' text.", "input")
    if not text.strip():
        raise ApiError(400, "invalid_value", "The 'input' text is empty.", "input")
    if len(text) > settings.max_speech_input_chars:
        raise ApiError(
            400,
            "string_above_max_length",
            f"Invalid 'input': string too long. Expected a string with maximum length "
            f"{settings.max_speech_input_chars}, but got a string with length {len(text)} instead.",
            "input",
        )
    voice = body.get("voice")
    if not (isinstance(voice, str) and voice.strip()) and not (
        isinstance(voice, dict) and isinstance(voice.get("id"), str)
    ):
        raise ApiError(400, "missing_required_parameter", "You must provide a voice.", "voice")
    instructions = body.get("instructions")
    if instructions is not None and (not isinstance(instructions, str) or len(instructions) > 4096):
        raise ApiError(
            400, "invalid_value", "instructions must be a string of at most 4096 characters.", "instructions"
        )
    response_format = body.get("response_format", "mp3")
    if response_format not in SPEECH_FORMATS:
        raise ApiError(
            400,
            "invalid_value",
            f"Invalid response_format '{response_format}'. Supported: {', '.join(SPEECH_FORMATS)}.",
            "response_format",
        )
    speed = body.get("speed", 1.0)
    if (
        isinstance(speed, bool)
        or not isinstance(speed, int | float)
        or not SPEED_RANGE[0] <= float(speed) <= SPEED_RANGE[1]
    ):
        raise ApiError(400, "invalid_value", "speed must be a number from 0.25 to 4.0.", "speed")
    stream_format = body.get("stream_format", "audio")
    if stream_format not in ("audio", "sse"):
        raise ApiError(400, "invalid_value", "stream_format must be 'audio' or 'sse'.", "stream_format")
    return SpeechParams(
        model=model.strip(),
        input=text,
        voice=voice if isinstance(voice, dict) else str(voice).strip(),
        response_format=cast(SpeechFormat, response_format),
        speed=float(speed),
        stream_format=stream_format,
    )


@dataclass
class _Produced:
    samples: int = 0


def _encoded(
    chunks: Iterator[PcmAudio], resampler: StreamingResampler, encoder: FileEncoder, produced: _Produced
) -> Iterator[bytes]:
    """Runs on a TTS worker: synthesis, resampling to 24 kHz and encoding, chunk by chunk."""
    try:
        for chunk in chunks:
            pcm = np.asarray(resampler.process(np.asarray(chunk, dtype=np.int16)), dtype=np.int16)
            produced.samples += pcm.size
            data = encoder.encode(pcm)
            if data:
                yield data
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


async def speech_audio(
    server: ServerState,
    synthesizer: Synthesizer,
    voice: str,
    params: SpeechParams,
    encoder: FileEncoder,
    produced: _Produced,
    call: _Call,
) -> AsyncGenerator[bytes, None]:
    """Encoded audio of ``params.input`` as it is synthesised, one TTS job per clause."""
    resampler = StreamingResampler(synthesizer.sample_rate, SPEECH_RATE, dtype=np.int16)
    for piece in ClauseChunker().feed([params.input]):

        def make(piece: str = piece) -> Iterator[bytes]:
            chunks = synthesizer.synthesize(piece, voice=voice, speed=params.speed, cancel=call.token)
            return _encoded(chunks, resampler, encoder, produced)

        async for data in server.scheduler.tts.stream(
            make, priority=PRIORITY_AUDIO_API, cancel=call.token, stall_timeout=STALL_SECONDS
        ):
            yield data
        if call.token.cancelled:
            return
    tail: npt.NDArray[np.int16] = np.asarray(resampler.flush(), dtype=np.int16)
    produced.samples += tail.size
    rest = encoder.encode(tail) + encoder.finish()
    if rest:
        yield rest


def _speech_usage(call: _Call) -> dict[str, int]:
    text, audio = call.tokens.get("input_text", 0), call.tokens.get("output_audio", 0)
    return {"input_tokens": text, "output_tokens": audio, "total_tokens": text + audio}


# --------------------------------------------------------------------------- routes


def router() -> APIRouter:
    """The two routes."""
    api = APIRouter()
    slots = _Slots()

    @api.post(TRANSCRIPTIONS, response_model=None, openapi_extra={"requestBody": _TRANSCRIPTION_BODY})
    async def transcriptions(request: Request, server: State, principal: AudioKey) -> Response:
        call: _Call | None = None
        form: Any = None
        try:
            _check_budget(server, principal)
            transcriber = server.engines.transcriber
            if transcriber is None:
                raise ApiError(
                    404,
                    "model_not_found",
                    "This server runs without speech engines: there is no transcription model.",
                    "model",
                )
            form, data = await _upload(request, server.settings)
            params = transcription_params(form)
            call = _start(server, principal, slots, "transcription", params.model)
            audio = await _decode(server, transcriber, data, call)
            seconds = audio.size / transcriber.sample_rate
            call.tokens["input_audio"] = _audio_tokens(seconds)
            call.tokens["input_text"] = _count_tokens(server, transcriber, params.prompt or "")
            headers = {"x-request-id": call.request_id}
            if params.stream:
                events = _transcription_events(server, transcriber, audio, params, call)
                return _ClosingStream(events, call, media_type="text/event-stream", headers=headers)
            pieces = [p async for p in transcribe_pieces(server, transcriber, audio, params, call)]
            response = transcription_body(params, pieces, seconds, call)
            response.headers.update(headers)
            call.end("completed")
            log.info(
                "transcription %s: %.1f s of audio in %d piece(s), %.2f s",
                call.request_id,
                seconds,
                len(pieces),
                time.monotonic() - call.started,
            )
            return response
        except ApiError as err:
            if call is not None:
                call.end("failed")
            return err.response()
        except Exception as exc:
            if call is None:
                raise
            call.end("failed")
            log.exception("transcription %s failed", call.request_id)
            return ApiError(500, "engine_error", f"The audio could not be transcribed: {exc}").response()
        finally:
            if form is not None:
                await form.close()

    @api.post(SPEECH, response_model=None, openapi_extra={"requestBody": _SPEECH_BODY})
    async def speech(request: Request, server: State, principal: AudioKey) -> Response:
        try:
            _check_budget(server, principal)
            voices = server.engines.voices
            if voices is None:
                raise ApiError(
                    404,
                    "model_not_found",
                    "This server runs without speech engines: there is no speech model.",
                    "model",
                )
            try:
                body = await request.json()
            except ValueError as exc:
                raise ApiError(400, "invalid_json", "The request body is not valid JSON.") from exc
            params = speech_params(body, server.settings)
            try:
                synthesizer, voice = voices.resolve(params.voice)  # type: ignore[arg-type]
            except (KeyError, ValueError) as exc:
                message = str(getattr(exc, "message", None) or exc)
                raise ApiError(400, "invalid_value", message, "voice") from exc
            call = _start(server, principal, slots, "speech", params.model)
        except ApiError as err:
            return err.response()
        call.tokens["input_text"] = _count_tokens(server, server.engines.llm, params.input)
        encoder = FileEncoder(params.response_format)
        produced = _Produced()
        audio = speech_audio(server, synthesizer, voice, params, encoder, produced, call)
        # the first audio is awaited before the status line, so a failing engine still gets
        # a proper error answer; everything after it streams
        try:
            first = await anext(audio, b"")
        except Exception as exc:
            await audio.aclose()
            encoder.close()
            call.end("failed")
            log.exception("speech %s failed", call.request_id)
            return ApiError(500, "engine_error", f"The speech could not be synthesised: {exc}").response()
        first_at = time.monotonic() - call.started

        def bill() -> None:
            call.tokens["output_audio"] = produced.samples * 1000 // SPEECH_RATE // 50

        async def stream() -> AsyncIterator[bytes]:
            sse = params.stream_format == "sse"
            status = "incomplete"
            try:
                chunks = [first] if first else []
                async for data in _chain(chunks, audio):
                    yield (
                        _sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})
                        if sse
                        else data
                    )
                bill()
                status = "completed"
                if sse:
                    yield _sse({"type": "speech.audio.done", "usage": _speech_usage(call)})
                log.info(
                    "speech %s: %.1f s of audio, first audio after %.2f s, done after %.2f s",
                    call.request_id,
                    produced.samples / SPEECH_RATE,
                    first_at,
                    time.monotonic() - call.started,
                )
            except Exception as exc:
                status = "failed"
                log.exception("speech %s failed after its first audio", call.request_id)
                if not sse:
                    raise  # the connection is cut: the client sees a truncated body, not silence
                error = ApiError(500, "engine_error", f"The speech could not be synthesised: {exc}")
                yield _sse({"type": "error", **error.body()})
            finally:
                await audio.aclose()
                encoder.close()
                bill()
                call.end(status)

        media_type = (
            "text/event-stream" if params.stream_format == "sse" else MEDIA_TYPES[params.response_format]
        )
        return _ClosingStream(
            stream(), call, media_type=media_type, headers={"x-request-id": call.request_id}
        )

    return api


async def _chain(first: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for data in first:
        yield data
    async for data in rest:
        yield data
