"""Images in a live session, end to end: the official openai SDK against the real server on the
real default LLM with the embedded describer (OCR + ImageNet labels); every received event is
validated against the SDK's union."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pytest
import websockets
from PIL import Image, ImageDraw, ImageFont

from tests.integration.conftest import Client
from tests.support import ServerProcess, validate_server_event

pytestmark = pytest.mark.slow

GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
"""A real photograph shipped with matplotlib (a project dependency): a woman in naval uniform."""
SESSION = {
    "type": "realtime",
    "output_modalities": ["text"],
    "instructions": "You are a helpful assistant. Answer in one short sentence, using only facts given to you.",
}


def png_of_text(text: str) -> str:
    image = Image.new("RGB", (720, 160), "white")
    ImageDraw.Draw(image).text((30, 50), text, fill="black", font=ImageFont.load_default(size=44))
    out = io.BytesIO()
    image.save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def ask(question: str, image_url: str, detail: str = "auto") -> dict[str, Any]:
    return {
        "type": "message",
        "role": "user",
        "content": [
            {"type": "input_image", "image_url": image_url, "detail": detail},
            {"type": "input_text", "text": question},
        ],
    }


async def answer(client: Client, item: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    """Add ``item``, run a response; the answer text, the response's usage and the item id."""
    await client.send({"type": "conversation.item.create", "item": item})
    added = await client.until("conversation.item.done")
    item_id = str(added[-1]["item"]["id"])
    await client.send({"type": "response.create"})
    events = await client.until("response.done")
    response = events[-1]["response"]
    assert response["status"] == "completed", response
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    return text, response["usage"], item_id


async def test_the_order_number_in_a_screenshot(client: Client) -> None:
    await client.send({"type": "session.update", "session": SESSION})
    await client.until("session.updated")
    url = png_of_text("ORDER NUMBER: 48213")
    text, usage, item_id = await answer(client, ask("What is the order number in this image?", url))
    assert "48213" in text, text
    details = usage["input_token_details"]
    assert details["image_tokens"] == 425  # 720x160 at high detail: 2 tiles
    assert usage["input_tokens"] == details["text_tokens"] + details["image_tokens"]
    assert details["text_tokens"] > 10

    # the item keeps its image (retrieve), and the events around it never carry the bytes
    added = [e for e in client.seen if e["type"] == "conversation.item.added" and e["item"]["id"] == item_id]
    assert "image_url" not in added[0]["item"]["content"][0]
    await client.send({"type": "conversation.item.retrieve", "item_id": item_id})
    retrieved = (await client.until("conversation.item.retrieved"))[-1]["item"]
    assert retrieved["content"][0] == {"type": "input_image", "image_url": url, "detail": "auto"}

    # a later response reads the same cached analysis, and finds the image in the cached prefix
    follow_up = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "Repeat the number."}],
    }
    text, usage, _ = await answer(client, follow_up)
    assert "48213" in text, text
    assert usage["input_token_details"]["image_tokens"] == 425
    assert usage["input_token_details"]["cached_tokens_details"]["image_tokens"] == 425


async def test_what_a_photo_shows(client: Client) -> None:
    await client.send({"type": "session.update", "session": SESSION})
    await client.until("session.updated")
    photo = "data:image/jpeg;base64," + base64.b64encode(GRACE_HOPPER.read_bytes()).decode()
    text, usage, _ = await answer(
        client, ask("What is the person in this photo wearing, according to the classifier?", photo, "low")
    )
    assert any(word in text.lower() for word in ("uniform", "gown", "mortarboard")), text
    assert usage["input_token_details"]["image_tokens"] == 85  # low detail is flat


@pytest.mark.parametrize(
    ("image_url", "code", "says"),
    [
        ("https://example.com/cat.jpg", "invalid_value", "remote URLs are not fetched"),
        ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUg==", "invalid_value", "could not be decoded"),
        ("data:image/tiff;base64,SUkqAA==", "invalid_value", "unsupported image type"),
        ("data:image/png;base64," + "A" * (15 * 1024 * 1024), "image_too_large", "the limit is 10.0 MB"),
    ],
    ids=["remote", "undecodable", "tiff", "too-large"],
)
async def test_bad_images_are_errors_and_the_session_goes_on(
    client: Client, image_url: str, code: str, says: str
) -> None:
    await client.send(
        {
            "type": "conversation.item.create",
            "event_id": "evt_bad_image",
            "item": ask("What is this?", image_url),
        }
    )
    error = (await client.until("error"))[-1]["error"]
    assert (error["code"], error["param"], error["event_id"]) == (
        code,
        "item.content[0].image_url",
        "evt_bad_image",
    )
    assert says in error["message"]

    await client.send({"type": "session.update", "session": SESSION})
    await client.until("session.updated")
    follow_up = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello."}]}
    text, usage, _ = await answer(client, follow_up)
    assert text.strip()
    assert usage["input_token_details"]["image_tokens"] == 0


def spoken(text: str) -> bytes:
    """``text`` spoken by the embedded Piper voice, as 24 kHz pcm16 with silence around it."""
    from openrealtime.audio.resample import resample
    from openrealtime.engines.tts.piper import DEFAULT_VOICE, PiperSynthesizer

    piper = PiperSynthesizer(onnx_threads=1)
    speech = np.concatenate(list(piper.synthesize(text, voice=DEFAULT_VOICE)))
    audio = resample(speech, piper.sample_rate, 24_000)
    silence = np.zeros(24_000 // 2, dtype=np.int16)
    return np.concatenate([silence, audio, silence]).astype("<i2").tobytes()


async def test_a_spoken_question_about_an_image(voice_server: ServerProcess) -> None:
    url = voice_server.ws_url + "/v1/realtime?model=gpt-realtime"
    headers = {"Authorization": f"Bearer {voice_server.api_key}"}
    session = {
        **SESSION,
        "output_modalities": ["audio"],
        "audio": {"input": {"transcription": {"model": "whisper-1"}, "turn_detection": None}},
    }
    async with websockets.connect(url, additional_headers=headers, max_size=None) as socket:

        async def until(kind: str) -> list[dict[str, Any]]:
            events = []
            while True:
                events.append(validate_server_event(await socket.recv()))
                if events[-1]["type"] == kind:
                    return events

        await until("session.created")
        await socket.send(json.dumps({"type": "session.update", "session": session}))
        await until("session.updated")
        image = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_image", "image_url": png_of_text("ORDER NUMBER: 48213")}],
        }
        await socket.send(json.dumps({"type": "conversation.item.create", "item": image}))
        await until("conversation.item.done")
        audio = base64.b64encode(spoken("What is the order number in the picture?")).decode()
        await socket.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
        await socket.send(json.dumps({"type": "input_audio_buffer.commit"}))
        await socket.send(json.dumps({"type": "response.create"}))
        events = await until("response.done")
        response = events[-1]["response"]
        assert response["status"] == "completed", response
        transcript = next(
            e["transcript"] for e in events if e["type"] == "response.output_audio_transcript.done"
        )
        assert "48213" in transcript.replace(",", "").replace(" ", ""), transcript
        assert any(e["type"] == "response.output_audio.delta" for e in events)
        details = response["usage"]["input_token_details"]
        assert details["image_tokens"] == 425 and details["audio_tokens"] > 10
