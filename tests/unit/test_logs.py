"""Log redaction and the JSON line format."""

from __future__ import annotations

import base64
import contextvars
import io
import json
import logging
from collections.abc import Iterator

import pytest

from openrealtime.protocol import server_events as se
from openrealtime.runtime.observer import SessionInfo
from openrealtime.telemetry.logs import (
    REDACTED,
    JsonFormatter,
    LogContextObserver,
    RedactingFilter,
    redact,
    response_id_var,
    session_id_var,
)

API_KEY = "sk-proj-Abc123def456ghi789"
EPHEMERAL = "ek_68af2c5d0e1f4a9b8c7d6e5f"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"key {API_KEY} refused", API_KEY),
        (f"Authorization: Bearer {EPHEMERAL}", EPHEMERAL),
        (f"headers={{'authorization': 'bearer {API_KEY}'}}", API_KEY),
        ("Authorization: Bearer plain-token-without-prefix", "plain-token-without-prefix"),
        (f"subprotocols realtime, openai-insecure-api-key.{API_KEY}", API_KEY),
        (f"minted {EPHEMERAL}, expires soon", EPHEMERAL),
        (f"url=wss://host/v1/realtime?key={EPHEMERAL}", EPHEMERAL),
        ("connecting to postgresql://app:s3cr3t-pw@db:5432/usage", "s3cr3t-pw"),
        ('"GET /openai/realtime?api-version=2025-08-28&api-key=azurekey123 HTTP/1.1"', "azurekey123"),
        ("WebSocket /openai/v1/realtime?API-KEY=azurekey123&model=x", "azurekey123"),
    ],
)
def test_redact_scrubs_key_shapes(text: str, secret: str) -> None:
    cleaned = redact(text)
    assert secret not in cleaned
    assert REDACTED in cleaned


def test_redact_keeps_ordinary_text() -> None:
    text = "task-queue disk-usage risk-free ek_ sk- response resp_123 item_456"
    assert redact(text) == text


def test_redact_scrubs_configured_literal_keys_and_base64_audio() -> None:
    audio = base64.b64encode(bytes(range(256)) * 4).decode()
    cleaned = redact(f"custom key hunter2hunter2 and audio {audio}", ["hunter2hunter2"])
    assert "hunter2hunter2" not in cleaned
    assert audio[:100] not in cleaned and "base64 chars elided" in cleaned


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(["my-own-secret-key"]))
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("openrealtime.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_have_the_fields_and_no_secret(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture
    logger.info("client connected with %s and %s", API_KEY, "my-own-secret-key")
    try:
        raise ValueError(f"upstream refused Bearer {API_KEY}")
    except ValueError:
        logger.exception("engine call failed")
    first, second = lines(stream)
    assert set(first) == {"timestamp", "level", "logger", "message"}
    assert first["level"] == "INFO" and first["logger"] == "openrealtime.test_logs"
    assert str(first["timestamp"]).endswith("+00:00")
    assert first["message"] == f"client connected with sk-{REDACTED} and {REDACTED}"
    assert second["level"] == "ERROR" and "ValueError" in str(second["exception"])
    assert API_KEY not in stream.getvalue() and "my-own-secret-key" not in stream.getvalue()


def test_ids_come_from_context_or_extra(capture: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = capture

    def in_a_session() -> None:
        session_id_var.set("sess_abc")
        logger.info("first")
        logger.info("second", extra={"response_id": "resp_xyz"})

    contextvars.copy_context().run(in_a_session)
    logger.info("outside")
    first, second, outside = lines(stream)
    assert first["session_id"] == "sess_abc" and "response_id" not in first
    assert second["session_id"] == "sess_abc" and second["response_id"] == "resp_xyz"
    assert "session_id" not in outside


def test_log_context_observer_follows_the_response() -> None:
    info = SessionInfo(session_id="sess_1", key_id="k", transport="websocket", model="gpt-realtime")
    observer = LogContextObserver()

    def flow() -> list[str | None]:
        seen = []
        observer.server_event(info, se.ResponseCreated(response={"id": "resp_1"}))
        seen.append(response_id_var.get())
        delta = se.ResponseOutputTextDelta(
            response_id="resp_1", item_id="i", output_index=0, content_index=0, delta="hi"
        )
        observer.server_event(info, delta)
        seen.append(response_id_var.get())
        observer.server_event(info, se.RateLimitsUpdated(rate_limits=[]))
        seen.append(response_id_var.get())
        observer.server_event(info, se.InputAudioBufferCleared())
        seen.append(response_id_var.get())
        observer.server_event(info, se.ResponseCreated(response={"id": "resp_2"}))
        observer.client_event(info, "input_audio_buffer.append")
        seen.append(response_id_var.get())
        return seen

    assert contextvars.copy_context().run(flow) == ["resp_1", "resp_1", "resp_1", None, None]
