"""livekit-plugins-openai's ``RealtimeModel`` taking a voice turn without a LiveKit room: the
caller's speech is pushed into its ``RealtimeSession`` as ``rtc.AudioFrame``s at real-time
pace, the server's VAD takes the turn, and the answer is read from the generation's message
streams (text and audio), as ``AgentSession`` reads them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import aiohttp
from livekit import rtc
from livekit.agents import llm
from livekit.plugins.openai.realtime import RealtimeModel
from openai.types import realtime

from .common import SAMPLE_RATE, TurnResult, TurnSpec, microphone, speech

NAME = "livekit-openai"


def build_model(spec: TurnSpec, http: aiohttp.ClientSession) -> RealtimeModel:
    return RealtimeModel(
        model=spec.model,
        base_url=spec.http_base,
        api_key=spec.api_key,
        http_session=http,
        modalities=["audio"],
        input_audio_transcription=realtime.AudioTranscription(model="whisper-1", language="en"),
        turn_detection=realtime.realtime_audio_input_turn_detection.ServerVad(
            type="server_vad", silence_duration_ms=500
        ),
    )


async def run(spec: TurnSpec, *, name: str = NAME, build: Any = build_model) -> TurnResult:
    """One turn through the model ``build(spec, http)`` makes (another flavour, e.g.
    ``RealtimeModel.with_azure``, passes its own ``build`` and ``name``)."""
    logging.basicConfig(level=logging.WARNING)
    result = TurnResult(client=name, audio_path=str(Path(spec.speech_path).with_suffix(f".{name}.pcm")))
    answered = asyncio.Event()
    heard = asyncio.Event()
    failed = asyncio.Event()
    readers: list[asyncio.Task[None]] = []

    async with aiohttp.ClientSession() as http:
        model = build(spec, http)
        session = model.session()
        await session.update_instructions(spec.instructions)

        def on_transcript(event: llm.InputTranscriptionCompleted) -> None:
            if event.is_final:
                result.transcript = event.transcript
                heard.set()
            else:
                result.interim_transcripts.append(event.transcript)

        def on_error(event: llm.RealtimeModelError) -> None:
            result.errors.append(f"{event.label}: {event.error!r}")
            if not event.recoverable:
                failed.set()

        async def read_generation(generation: llm.GenerationCreatedEvent) -> None:
            text: list[str] = []
            with Path(result.audio_path).open("ab") as audio:
                async for message in generation.message_stream:

                    async def read_text(stream: Any = message.text_stream) -> None:
                        async for chunk in stream:
                            text.append(str(chunk))

                    text_task = asyncio.create_task(read_text())
                    async for frame in message.audio_stream:
                        audio.write(bytes(frame.data))
                        result.audio_frames += 1
                        result.audio_sample_rate = frame.sample_rate
                    await text_task
            if result.audio_frames:
                result.answer_text = "".join(text)
                answered.set()

        def on_generation(generation: llm.GenerationCreatedEvent) -> None:
            readers.append(asyncio.create_task(read_generation(generation)))

        session.on("input_audio_transcription_completed", on_transcript)
        session.on("error", on_error)
        session.on("generation_created", on_generation)

        async def talk() -> None:
            async for chunk in microphone(speech(spec)):
                session.push_audio(rtc.AudioFrame(chunk, SAMPLE_RATE, 1, len(chunk) // 2))
            silence = b"\x00\x00" * SAMPLE_RATE
            while True:  # the caller stays on the line (silent) until the answer is in
                async for chunk in microphone(silence):
                    session.push_audio(rtc.AudioFrame(chunk, SAMPLE_RATE, 1, len(chunk) // 2))

        caller = asyncio.create_task(talk())
        waits = [asyncio.create_task(answered.wait()), asyncio.create_task(failed.wait())]
        try:
            await asyncio.wait(waits, timeout=spec.timeout_s - 30, return_when="FIRST_COMPLETED")
            if not answered.is_set():
                result.errors.append("no complete spoken answer before the time limit")
            # the transcript may come after the answer (it is asynchronous to responses)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(heard.wait(), 10)
        finally:
            for task in (caller, *waits, *readers):
                task.cancel()
            await session.aclose()
            await model.aclose()
    return result
