"""Image input: data-URL checks, the image token rule, the core's image items and usage, the
analysis text, and how images reach an OpenAI-compatible vision endpoint."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import matplotlib
import pytest
from PIL import Image, ImageDraw, ImageFont

from openrealtime.core.commands import AnalyzeImage, StartResponse
from openrealtime.core.context import build_chat_request
from openrealtime.core.events import GenerationFinished, ImageAnalyzed, TextGenerated
from openrealtime.core.usage import PromptImage, Usage, account_images
from openrealtime.engines.base import ChatImage, ChatMessage, ChatRequest, ImageLabel, RecognizedText
from openrealtime.engines.llm.openai_compatible import OpenAICompatibleModel
from openrealtime.engines.vision.embedded import NOT_RECOGNISED, compose_analysis
from openrealtime.engines.vision.ocr import join_characters
from openrealtime.images.data_url import MAX_IMAGE_BYTES, ImageInputError, check_data_url, open_image
from openrealtime.images.tokens import image_tokens
from tests.unit.test_core_session import Harness

GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def text_image(text: str = "ORDER NUMBER: 48213", size: tuple[int, int] = (720, 160)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((30, 50), text, fill="black", font=ImageFont.load_default(size=44))
    return image


def image_message(
    url: str, question: str = "What is the order number?", detail: str = "auto"
) -> dict[str, Any]:
    return {
        "type": "message",
        "role": "user",
        "content": [
            {"type": "input_text", "text": question},
            {"type": "input_image", "image_url": url, "detail": detail},
        ],
    }


# --------------------------------------------------------------------------- token rule


@pytest.mark.parametrize(
    ("width", "height", "detail", "tokens"),
    [
        (4000, 3000, "low", 85),  # low is flat
        (512, 512, "high", 255),  # one tile
        (1024, 1024, "high", 765),  # -> 768x768: 4 tiles
        (2048, 4096, "high", 1105),  # -> 1024x2048 -> 768x1536: 6 tiles
        (1024, 1024, "auto", 765),  # auto is high on the Realtime API
        (100, 30, "auto", 255),  # never scaled up
    ],
)
def test_image_tokens_follow_openais_rule(width: int, height: int, detail: str, tokens: int) -> None:
    assert image_tokens(width, height, detail) == tokens


# --------------------------------------------------------------------------- data URLs


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("GIF", "image/gif")],
)
def test_each_supported_format_is_accepted_with_its_size(fmt: str, mime: str) -> None:
    data = encoded(Image.new("RGB", (37, 21), "red"), fmt)
    checked = check_data_url(data_url(data, mime))
    assert (checked.mime, checked.width, checked.height, checked.data) == (mime, 37, 21, data)
    assert open_image(checked.data).size == (37, 21)


def test_remote_urls_are_refused_with_a_reason() -> None:
    with pytest.raises(ImageInputError) as caught:
        check_data_url("https://example.com/cat.png")
    assert caught.value.code == "invalid_value"
    assert "remote URLs are not fetched" in caught.value.message


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("", "empty"),
        ("data:image/png,rawbytes", "base64 data URL"),
        ("data:image/bmp;base64,Qk0=", "unsupported image type 'image/bmp'"),
        ("data:image/png;base64,@@@not base64@@@", "not valid base64"),
        (data_url(b"\x89PNG\r\n\x1a\n but not really a png"), "could not be decoded"),
        (data_url(encoded(Image.new("RGB", (8, 8)), "BMP")), "BMP image"),
    ],
)
def test_bad_urls_are_invalid_values(url: str, says: str) -> None:
    with pytest.raises(ImageInputError) as caught:
        check_data_url(url)
    assert caught.value.code == "invalid_value"
    assert says in caught.value.message


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_a_truncated_file_is_undecodable(fmt: str) -> None:
    data = encoded(Image.open(GRACE_HOPPER), fmt)
    check_data_url(data_url(data, f"image/{fmt.lower()}"))
    with pytest.raises(ImageInputError, match="could not be decoded"):
        check_data_url(data_url(data[: len(data) // 2], f"image/{fmt.lower()}"))


def test_too_many_bytes_is_a_size_error_naming_the_limit() -> None:
    payload = base64.b64encode(b"\0" * (MAX_IMAGE_BYTES + 1)).decode()
    with pytest.raises(ImageInputError) as caught:
        check_data_url("data:image/png;base64," + payload)
    assert caught.value.code == "image_too_large"
    assert "the limit is 10.0 MB" in caught.value.message


def test_too_many_pixels_is_a_size_error_before_decoding() -> None:
    data = encoded(Image.new("1", (9000, 4)), "PNG")
    with pytest.raises(ImageInputError) as caught:
        check_data_url(data_url(data))
    assert caught.value.code == "image_too_large"
    assert "9000x4" in caught.value.message


# --------------------------------------------------------------------------- the session core


def new_harness() -> Harness:
    harness = Harness()
    assert [e["type"] for e in harness.events()] == ["session.created"]
    return harness


def added_item(harness: Harness, item: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    events = harness.send("conversation.item.create", item=item)
    assert [e["type"] for e in events] == ["conversation.item.added", "conversation.item.done"]
    return events[0]["item"], harness.core.take_commands() + harness.commands


def test_an_image_item_is_added_without_its_bytes_and_analysed_once() -> None:
    harness = new_harness()
    url = data_url(encoded(text_image(), "PNG"))
    item, commands = added_item(harness, image_message(url, detail="low"))
    image_part = item["content"][1]
    assert image_part == {"type": "input_image", "detail": "low"}  # no bytes, no server notes
    analyses = [c for c in commands if isinstance(c, AnalyzeImage)]
    assert len(analyses) == 1
    assert (analyses[0].item_id, analyses[0].content_index, analyses[0].detail) == (item["id"], 1, "low")
    assert analyses[0].question_hint == "What is the order number?"
    assert analyses[0].image == base64.b64decode(url.split(",", 1)[1])

    retrieved = harness.send("conversation.item.retrieve", item_id=item["id"])[0]["item"]
    assert retrieved["content"][1] == {"type": "input_image", "image_url": url, "detail": "low"}


@pytest.mark.parametrize(
    ("url", "code", "says"),
    [
        ("https://example.com/receipt.png", "invalid_value", "remote URLs are not fetched"),
        ("data:image/png;base64,AAAA", "invalid_value", "could not be decoded"),
        ("data:text/plain;base64,aGk=", "invalid_value", "unsupported image type"),
    ],
)
def test_a_bad_image_is_an_error_event_and_the_session_goes_on(url: str, code: str, says: str) -> None:
    harness = new_harness()
    events = harness.send("conversation.item.create", item=image_message(url), event_id="evt_img")
    assert [e["type"] for e in events] == ["error"]
    error = events[0]["error"]
    assert (error["code"], error["param"], error["event_id"]) == (
        code,
        "item.content[1].image_url",
        "evt_img",
    )
    assert says in error["message"]
    assert len(harness.core.conversation) == 0
    good = data_url(encoded(text_image(), "JPEG"), "image/jpeg")
    added_item(harness, image_message(good))
    assert len(harness.core.conversation) == 1


def test_the_llm_reads_the_cached_analysis_and_a_vision_llm_gets_the_image() -> None:
    harness = new_harness()
    url = data_url(encoded(text_image(), "PNG"))
    item, _ = added_item(harness, image_message(url))
    harness.core.receive(ImageAnalyzed(item["id"], 1, "[Image: OCR read 'ORDER NUMBER: 48213'.]"))
    request = build_chat_request(
        harness.core.conversation.items(),
        instructions="Be brief.",
        tools=[],
        tool_choice="auto",
        max_output_tokens=None,
    )
    user = request.messages[-1]
    assert user.content == "What is the order number? [Image: OCR read 'ORDER NUMBER: 48213'.]"
    assert user.images == (ChatImage(url=url, detail="auto"),)
    assert user.content_without_images == "What is the order number?"
    # the analysis is the server's note: never on the wire
    retrieved = harness.send("conversation.item.retrieve", item_id=item["id"])[0]["item"]
    assert "_analysis" not in json.dumps(retrieved)


def test_an_image_without_analysis_is_named_as_such() -> None:
    harness = new_harness()
    item, _ = added_item(harness, image_message(data_url(encoded(text_image(), "PNG"))))
    request = build_chat_request(
        [harness.core.conversation.get(item["id"]) or {}],
        instructions="",
        tools=[],
        tool_choice="auto",
        max_output_tokens=None,
    )
    assert "no analysis of it is available" in request.messages[-1].content


def run_response(harness: Harness, prompt_tokens: int, cached_tokens: int) -> dict[str, Any]:
    harness.send("response.create")
    start = next(c for c in harness.core.take_commands() + harness.commands if isinstance(c, StartResponse))
    harness.core.receive(TextGenerated(start.response_id, "It is 48213."))
    harness.core.receive(
        GenerationFinished(
            start.response_id,
            "stop",
            prompt_tokens=prompt_tokens,
            cached_tokens=cached_tokens,
            completion_tokens=5,
        )
    )
    done = [e for e in harness.events() if e["type"] == "response.done"]
    harness.commands.clear()
    return dict(done[-1]["response"]["usage"])


def test_usage_counts_image_tokens_and_moves_the_analysis_out_of_text() -> None:
    harness = new_harness()  # counts tokens as words
    harness.send("session.update", session={"type": "realtime", "instructions": "Be brief."})
    image = text_image(size=(1024, 1024))
    item, _ = added_item(harness, image_message(data_url(encoded(image, "PNG"))))
    analysis = "[Image: OCR read ORDER NUMBER 48213.]"  # 6 words in the prompt
    harness.core.receive(ImageAnalyzed(item["id"], 1, analysis))

    usage = run_response(harness, prompt_tokens=100, cached_tokens=0)
    details = usage["input_token_details"]
    assert details["image_tokens"] == 765
    assert details["text_tokens"] == 100 - 6
    assert usage["input_tokens"] == 94 + 765
    assert details["cached_tokens_details"]["image_tokens"] == 0

    # the next response finds the image's message inside the LLM's cached prefix
    usage = run_response(harness, prompt_tokens=130, cached_tokens=110)
    details = usage["input_token_details"]
    assert details["image_tokens"] == 765
    assert details["cached_tokens_details"] == {
        "text_tokens": 110 - 6,
        "audio_tokens": 0,
        "image_tokens": 765,
    }
    assert details["cached_tokens"] == 104 + 765
    assert usage["input_tokens"] == 124 + 765


def test_images_inline_in_response_create_are_checked_and_billed() -> None:
    harness = new_harness()
    bad = image_message("http://example.com/a.png")
    events = harness.send("response.create", response={"input": [bad]})
    assert [e["type"] for e in events] == ["error"]
    assert events[0]["error"]["param"] == "response.input[0].content[1].image_url"

    good = image_message(data_url(encoded(text_image(size=(512, 512)), "PNG")))
    harness.send("response.create", response={"input": [good], "conversation": "none"})
    start = next(c for c in harness.commands if isinstance(c, StartResponse))
    harness.core.receive(
        GenerationFinished(start.response_id, "stop", prompt_tokens=40, cached_tokens=0, completion_tokens=1)
    )
    usage = next(e for e in harness.events() if e["type"] == "response.done")["response"]["usage"]
    assert usage["input_token_details"]["image_tokens"] == 255
    assert len(harness.core.conversation) == 0


def test_account_images_leaves_usage_alone_without_images() -> None:
    usage = Usage(input_text_tokens=50, cached_text_tokens=20)
    account_images(usage, [])
    assert usage.wire() == Usage(input_text_tokens=50, cached_text_tokens=20).wire()
    account_images(usage, [PromptImage(billed_tokens=85, prompt_tokens=85, prefix_tokens=40)])
    assert (usage.input_text_tokens, usage.input_image_tokens, usage.cached_image_tokens) == (0, 85, 0)


# --------------------------------------------------------------------------- analysis text & endpoints


def test_the_analysis_says_what_was_recognised_and_what_was_not() -> None:
    text = compose_analysis(
        fmt="PNG",
        width=640,
        height=200,
        ocr=[RecognizedText("ORDER NUMBER: 48213", 0.99)],
        labels=[ImageLabel("tabby", 0.62), ImageLabel("tiger cat", 0.2), ImageLabel("lynx", 0.01)],
        problems=[],
    )
    assert '"ORDER NUMBER: 48213" (99%)' in text
    assert "tabby 62%, tiger cat 20%" in text and "lynx" not in text
    assert "not full image understanding" in text
    assert NOT_RECOGNISED in text
    empty = compose_analysis(fmt="JPEG", width=1, height=1, ocr=[], labels=None, problems=["no classifier"])
    assert "No readable text" in empty and "no classifier" in empty and "best guesses" not in empty


def test_ocr_characters_are_split_into_words_at_wide_gaps() -> None:
    boxes = [[[x, 0], [x + 20, 0], [x + 20, 30], [x, 30]] for x in (0, 22, 44, 90, 112)]
    assert join_characters(["A", "B", "C", "D", "E"], boxes) == "ABC DE"
    assert join_characters(["A"], []) == "A"


def test_a_vision_endpoint_gets_image_parts_and_a_text_endpoint_the_analysis() -> None:
    message = ChatMessage(
        role="user",
        content="What is it? [Image: a tabby cat.]",
        images=(ChatImage(url="data:image/png;base64,AAAA", detail="low"),),
        content_without_images="What is it?",
    )
    request = ChatRequest(messages=(ChatMessage(role="system", content="Be brief."), message))
    vision = OpenAICompatibleModel("http://127.0.0.1:9/v1", "vlm", vision=True)
    text_only = OpenAICompatibleModel("http://127.0.0.1:9/v1", "llm")
    try:
        sent = vision._body(request)["messages"]
        assert sent[0] == {"role": "system", "content": "Be brief."}
        assert sent[1]["content"] == [
            {"type": "text", "text": "What is it?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
        ]
        assert text_only._body(request)["messages"][1]["content"] == "What is it? [Image: a tabby cat.]"
    finally:
        vision.close()
        text_only.close()


# --------------------------------------------------------------------------- the embedded models


@pytest.mark.slow
def test_embedded_describer_reads_text_and_labels_a_photo() -> None:
    from openrealtime.engines.vision.embedded import EmbeddedDescriber

    describer = EmbeddedDescriber()
    assert describer.check() == []
    order = describer.describe(encoded(text_image(), "PNG"), question_hint="What is the order number?")
    assert any("48213" in line.text for line in order.ocr), order.text
    assert "48213" in order.text and order.image_tokens == 425

    photo = describer.describe(GRACE_HOPPER.read_bytes(), detail="low")
    top = {label.label for label in photo.labels[:3]}
    assert top & {"military uniform", "academic gown", "mortarboard", "suit"}, photo.labels
    assert photo.image_tokens == 85
    assert "Grace" not in photo.text  # it names no person: nothing here recognises people
