"""Initial session configs from HTTP bodies: ``client_secrets``, WebRTC ``/calls`` and SIP
``/calls/{id}/accept`` all carry a session object that must be validated like a
``session.update`` and become the session's starting point (what ``session.created`` shows)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from ..protocol import client_events as ce
from ..protocol.errors import RealtimeError
from ..protocol.session import AnySession, RealtimeSession, TranscriptionSession, merge_session_update


def build_session(
    config: Any,
    *,
    param: str = "session",
    voice_check: Callable[[str], str | None] | None = None,
) -> AnySession:
    """Validate ``config`` (a realtime or transcription session object, or None for the
    defaults) into an effective session; problems raise ``RealtimeError`` with ``param`` set
    to the offending field under ``param``."""
    if config is None:
        return RealtimeSession()
    if not isinstance(config, dict):
        raise RealtimeError("invalid_type", f"Invalid type for '{param}': expected an object.", param=param)
    kind = config.get("type", "realtime")
    base: AnySession
    if kind == "realtime":
        base = RealtimeSession()
    elif kind == "transcription":
        base = TranscriptionSession()
    else:
        raise RealtimeError(
            "invalid_value",
            f"Invalid value: '{kind}'. Supported values are: 'realtime' and 'transcription'.",
            param=f"{param}.type",
        )
    ce.check_removed_session_fields(config, None, prefix=param)
    for key in ("id", "object", "expires_at"):
        if key in config:
            raise RealtimeError(
                "unknown_parameter", f"Unknown parameter: '{param}.{key}'.", param=f"{param}.{key}"
            )
    merged = merge_session_update(base.model_dump(mode="json", exclude_none=False), {**config, "type": kind})
    try:
        session = type(base).model_validate(merged)
    except ValidationError as exc:
        raise ce.error_from_validation(exc, event_id=None, data=merged, prefix=param) from None
    if isinstance(session, RealtimeSession) and voice_check is not None:
        voice = session.audio.output.voice
        name = voice if isinstance(voice, str) else getattr(voice, "id", str(voice))
        problem = voice_check(name)
        if problem:
            raise RealtimeError("invalid_value", problem, param=f"{param}.audio.output.voice")
    return session


def restore_session(wire: dict[str, Any]) -> AnySession:
    """A session stored by ``build_session(...).model_dump(mode="json")`` (e.g. bound to an
    ephemeral key), back as a fresh session object (a new id is given when it starts). Keys
    starting with ``_`` are the server's notes beside the session (``protocol.beta``)."""
    fields = {k: v for k, v in wire.items() if k not in ("id", "expires_at") and not k.startswith("_")}
    if fields.get("type") == "transcription":
        return TranscriptionSession.model_validate(fields)
    return RealtimeSession.model_validate(fields)
