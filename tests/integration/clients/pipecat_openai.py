"""pipecat's ``OpenAIRealtimeLLMService`` in a real pipeline: the caller's speech goes in as
``InputAudioRawFrame``s at real-time pace, the server's VAD takes the turn, its input
transcription comes back as a ``TranscriptionFrame`` and its answer as ``TTSAudioRawFrame``s.

The pipeline is the one pipecat's realtime examples build, minus the transport: user context
aggregator → the service → assistant context aggregator. An observer records what the
service pushes.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    LLMFullResponseEndFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSTextFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.services.openai.realtime.events import (
    AudioConfiguration,
    AudioInput,
    InputAudioTranscription,
    SessionProperties,
    TurnDetection,
)
from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService
from pipecat.workers.runner import WorkerRunner

from .common import SAMPLE_RATE, TurnResult, TurnSpec, microphone, speech

NAME = "pipecat-openai"


class Recorder(BaseObserver):
    """Records the frames one processor (the realtime service) pushes."""

    def __init__(self, source: Any, result: TurnResult, audio_path: Path) -> None:
        super().__init__()
        self.source = source
        self.result = result
        self.audio = audio_path.open("wb")
        self.answer_text: list[str] = []
        self.answered = asyncio.Event()
        self.heard = asyncio.Event()
        self.failed = asyncio.Event()

    async def on_push_frame(self, data: FramePushed) -> None:
        if data.source is not self.source:
            return
        frame: Frame = data.frame
        if isinstance(frame, TranscriptionFrame):
            self.result.transcript = frame.text
            self.heard.set()
        elif isinstance(frame, InterimTranscriptionFrame):
            self.result.interim_transcripts.append(frame.text)
        elif isinstance(frame, TTSAudioRawFrame):
            self.audio.write(frame.audio)
            self.result.audio_frames += 1
            self.result.audio_sample_rate = frame.sample_rate
        elif isinstance(frame, TTSTextFrame):
            self.answer_text.append(frame.text)
        elif isinstance(frame, LLMFullResponseEndFrame) and self.result.audio_frames:
            self.result.answer_text = "".join(self.answer_text)
            self.answered.set()
        elif isinstance(frame, ErrorFrame):
            self.result.errors.append(frame.error)
            self.failed.set()

    def close(self) -> None:
        self.audio.close()


def session_properties() -> SessionProperties:
    """Input transcription on, server VAD: what a pipecat voice bot configures."""
    return SessionProperties(
        audio=AudioConfiguration(
            input=AudioInput(
                transcription=InputAudioTranscription(model="whisper-1", language="en"),
                turn_detection=TurnDetection(silence_duration_ms=500),
            )
        )
    )


def build_service(spec: TurnSpec) -> Any:
    return OpenAIRealtimeLLMService(
        api_key=spec.api_key,
        base_url=spec.ws_base,
        settings=OpenAIRealtimeLLMService.Settings(
            model=spec.model, system_instruction=spec.instructions, session_properties=session_properties()
        ),
    )


async def run(spec: TurnSpec, *, name: str = NAME, build: Any = build_service) -> TurnResult:
    """One turn through the service ``build(spec)`` makes (another flavour of the service,
    e.g. pipecat's Azure one, passes its own ``build`` and ``name``)."""
    logger.remove()
    logger.add(lambda message: print(message, end=""), level="WARNING")
    result = TurnResult(client=name, audio_path=str(Path(spec.speech_path).with_suffix(f".{name}.pcm")))
    llm = build(spec)
    aggregators = LLMContextAggregatorPair(LLMContext())
    pipeline = Pipeline([aggregators.user(), llm, aggregators.assistant()])
    recorder = Recorder(llm, result, Path(result.audio_path))
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(audio_in_sample_rate=SAMPLE_RATE, audio_out_sample_rate=SAMPLE_RATE),
        observers=[recorder],
        idle_timeout_secs=None,
    )
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def on_started(_worker: Any, _frame: Any) -> None:
        started.set()

    @worker.event_handler("on_pipeline_error")
    async def on_error(_worker: Any, frame: ErrorFrame) -> None:
        result.errors.append(f"pipeline: {frame.error}")
        recorder.failed.set()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(started.wait(), 30)

        async def talk() -> None:
            async for chunk in microphone(speech(spec)):
                await worker.queue_frame(
                    InputAudioRawFrame(audio=chunk, sample_rate=SAMPLE_RATE, num_channels=1)
                )
            # the caller stays on the line (silent) until the answer is in
            silence = b"\x00\x00" * (SAMPLE_RATE // 50)
            while True:
                async for chunk in microphone(silence * 50):
                    await worker.queue_frame(
                        InputAudioRawFrame(audio=chunk, sample_rate=SAMPLE_RATE, num_channels=1)
                    )

        caller = asyncio.create_task(talk())
        answered = asyncio.create_task(recorder.answered.wait())
        failed = asyncio.create_task(recorder.failed.wait())
        await asyncio.wait(
            {answered, failed, running}, timeout=spec.timeout_s - 30, return_when="FIRST_COMPLETED"
        )
        if not recorder.answered.is_set():
            result.errors.append("no complete spoken answer before the time limit")
        # the transcript may come after the answer (it is asynchronous to responses)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(recorder.heard.wait(), 10)
        for task in (caller, answered, failed):
            task.cancel()
    finally:
        await worker.queue_frame(EndFrame())
        try:
            await asyncio.wait_for(running, 20)
        except TimeoutError:
            await worker.cancel()
        recorder.close()
    return result
