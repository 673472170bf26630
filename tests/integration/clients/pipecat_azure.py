"""pipecat's ``AzureRealtimeLLMService``: the OpenAI realtime service on Azure's v1 surface
(``/openai/v1/realtime?model=DEPLOYMENT``, the key in an ``api-key`` header), in the same
pipeline and turn as ``pipecat_openai``."""

from __future__ import annotations

from typing import Any

from pipecat.services.azure.realtime.llm import AzureRealtimeLLMService

from . import pipecat_openai
from .common import TurnResult, TurnSpec

NAME = "pipecat-azure"


def build_service(spec: TurnSpec) -> Any:
    return AzureRealtimeLLMService(
        api_key=spec.api_key,
        base_url=spec.endpoint.replace("http", "ws", 1) + "/openai/v1/realtime",
        settings=AzureRealtimeLLMService.Settings(
            model=spec.model,  # the deployment
            system_instruction=spec.instructions,
            session_properties=pipecat_openai.session_properties(),
        ),
    )


async def run(spec: TurnSpec) -> TurnResult:
    return await pipecat_openai.run(spec, name=NAME, build=build_service)
