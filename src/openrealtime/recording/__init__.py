"""Session recording: encrypted at rest, indexed in storage, kept for a retention period,
exported as bundles and replayed against any server (``openrealtime replay``)."""

from __future__ import annotations

from .bundle import Bundle, read_bundle
from .crypto import KeyRing, RecordingKey, RecordingKeyError, UnreadableRecording, generate_key, load_keyring
from .service import (
    RecordingMissing,
    RecordingPolicy,
    RecordingService,
    SessionRecorder,
    open_recording_service,
)

__all__ = [
    "Bundle",
    "KeyRing",
    "RecordingKey",
    "RecordingKeyError",
    "RecordingMissing",
    "RecordingPolicy",
    "RecordingService",
    "SessionRecorder",
    "UnreadableRecording",
    "generate_key",
    "load_keyring",
    "open_recording_service",
    "read_bundle",
]
