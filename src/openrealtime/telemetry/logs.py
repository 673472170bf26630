"""Log output: plain text or JSON lines, always with secrets and audio scrubbed.

Every record passes a redaction filter on the handler (so records of every logger, uvicorn's
included, are covered): anything shaped like an API key (``sk-…``), an ephemeral key
(``ek_…``), a bearer token, the browser subprotocol ``openai-insecure-api-key.…``, an
``api-key=`` query parameter, a URL's password or one of the configured keys is replaced, and
long base64 runs (audio) are elided.
JSON lines carry the session and response ids of the code that logged, from context
variables or ``extra``.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from ..protocol.server_events import ServerEvent
from ..runtime.observer import SessionInfo

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "[REDACTED]"
MIN_LITERAL_SECRET = 6
"""Configured keys shorter than this are not scrubbed literally (they would match ordinary words)."""

session_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("session_id", default=None)
response_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("response_id", default=None)

_SECRET_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[^\s\"',;]+"),
    re.compile(r"(openai-insecure-api-key\.)[^\s\"',;]+"),
    re.compile(r"(?<![A-Za-z0-9])(sk-)[A-Za-z0-9_\-]{6,}"),
    re.compile(r"(?<![A-Za-z0-9])(ek_)[A-Za-z0-9_\-]{6,}"),
    re.compile(r"(://[^:/@\s]+:)[^@\s/]+(?=@)"),  # the password of user:password@host URLs
    re.compile(r"(?i)([?&]api-key=)[^&\s\"']+"),  # Azure's key in a query string
)
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{200,}={0,2}")


def redact(text: str, literals: Iterable[str] = ()) -> str:
    """``text`` with keys, bearer tokens, the given literal secrets and base64 runs replaced."""
    for literal in literals:
        if literal in text:
            text = text.replace(literal, REDACTED)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return _BASE64_RUN.sub(lambda m: f"[{len(m.group(0))} base64 chars elided]", text)


class RedactingFilter(logging.Filter):
    """Scrubs each record's message and traceback before any handler formats it."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if len(s) >= MIN_LITERAL_SECRET)
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep the raw template rather than drop the record
            message = str(record.msg)
        record.msg = redact(message, self.secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, ids when known."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        session_id = getattr(record, "session_id", None) or session_id_var.get()
        if session_id:
            entry["session_id"] = session_id
        response_id = getattr(record, "response_id", None) or response_id_var.get()
        if response_id:
            entry["response_id"] = response_id
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str, log_format: LogFormat = "text", secrets: Iterable[str] = ()) -> None:
    """Route every logger (uvicorn's too, when it is run with ``log_config=None``) to stderr
    through the redaction filter, as text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter(secrets))
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.captureWarnings(True)


_INPUT_SIDE = ("input_audio_buffer.", "conversation.item.input_audio_transcription.", "session.")


class LogContextObserver:
    """A ``SessionObserver`` that tags log records with the response a task is working on.

    ``response.created`` is announced in the task that starts the response, just before the
    response's own task is spawned (which copies the context), so the id follows the work.
    Input-side events and client events reset it, so it does not stick to a task that only
    announced the response; other events (``rate_limits.updated``, items) leave it as it is.
    """

    def session_started(self, info: SessionInfo) -> None:
        return None

    def session_ended(self, info: SessionInfo) -> None:
        return None

    def client_event(self, info: SessionInfo, event_type: str) -> None:
        if response_id_var.get() is not None:
            response_id_var.set(None)

    def server_event(self, info: SessionInfo, event: ServerEvent) -> None:
        kind = event.type
        response_id: str | None = getattr(event, "response_id", None)
        if response_id is None and kind in ("response.created", "response.done"):
            response_id = str(getattr(event, "response", {}).get("id"))
        if response_id is None and not kind.startswith(_INPUT_SIDE):
            return
        if response_id_var.get() != response_id:
            response_id_var.set(response_id)

    def turn_timings(self, info: SessionInfo, record: dict[str, Any]) -> None:
        return None
