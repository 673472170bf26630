"""LiveKit's ``RealtimeModel.with_azure``, in the same turn as ``livekit_openai``: without an
``api_version`` it speaks GA on Azure's v1 surface (``/openai/v1/realtime?model=DEPLOYMENT``);
the ``livekit-azure-preview`` flavour passes a preview ``api_version`` and so speaks the beta
shape on ``/openai/realtime?api-version=…&deployment=…`` (LiveKit maps its event names back)."""

from __future__ import annotations

from typing import Any

import aiohttp
from livekit.plugins.openai.realtime import RealtimeModel
from openai.types import realtime

from . import livekit_openai
from .common import TurnResult, TurnSpec

NAME = "livekit-azure"
PREVIEW_NAME = "livekit-azure-preview"
PREVIEW_API_VERSION = "2024-10-01-preview"


def build_model(spec: TurnSpec, http: aiohttp.ClientSession, **extra: Any) -> RealtimeModel:
    return RealtimeModel.with_azure(
        azure_deployment=spec.model,
        azure_endpoint=spec.endpoint,
        api_key=spec.api_key,
        http_session=http,
        input_audio_transcription=realtime.AudioTranscription(model="whisper-1", language="en"),
        turn_detection=realtime.realtime_audio_input_turn_detection.ServerVad(
            type="server_vad", silence_duration_ms=500
        ),
        **extra,
    )


async def run(spec: TurnSpec) -> TurnResult:
    return await livekit_openai.run(spec, name=NAME, build=build_model)


async def run_preview(spec: TurnSpec) -> TurnResult:
    def build(spec: TurnSpec, http: aiohttp.ClientSession) -> RealtimeModel:
        return build_model(spec, http, api_version=PREVIEW_API_VERSION)

    return await livekit_openai.run(spec, name=PREVIEW_NAME, build=build)
