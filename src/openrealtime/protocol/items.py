"""Conversation items (GA shape) as clients send them and as the server reports them.

Client-sent items are validated strictly. The server keeps audio bytes inside items (for
``conversation.item.retrieve``) and omits them everywhere else, as the real service does.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ItemStatus = Literal["completed", "incomplete", "in_progress"]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputText(_Part):
    type: Literal["input_text"]
    text: str


class InputAudio(_Part):
    type: Literal["input_audio"]
    audio: str | None = None
    transcript: str | None = None


class InputImage(_Part):
    type: Literal["input_image"]
    image_url: str
    detail: Literal["auto", "low", "high"] = "auto"


class OutputText(_Part):
    type: Literal["output_text"]
    text: str = ""


class OutputAudio(_Part):
    type: Literal["output_audio"]
    audio: str | None = None
    transcript: str | None = None


UserContent = Annotated[InputText | InputAudio | InputImage, Field(discriminator="type")]
AssistantContent = Annotated[OutputText | OutputAudio, Field(discriminator="type")]


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, max_length=64)
    object: Literal["realtime.item"] | None = None
    status: ItemStatus | None = None


class SystemMessage(_Item):
    type: Literal["message"]
    role: Literal["system"]
    content: list[InputText]


class UserMessage(_Item):
    type: Literal["message"]
    role: Literal["user"]
    content: list[UserContent]


class AssistantMessage(_Item):
    type: Literal["message"]
    role: Literal["assistant"]
    content: list[AssistantContent]


class FunctionCall(_Item):
    type: Literal["function_call"]
    name: str
    arguments: str
    call_id: str | None = None


class FunctionCallOutput(_Item):
    type: Literal["function_call_output"]
    call_id: str
    output: str


class McpApprovalResponse(_Item):
    type: Literal["mcp_approval_response"]
    approval_request_id: str
    approve: bool
    reason: str | None = None


class ItemReference(BaseModel):
    """Only valid inside ``response.create.response.input``."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["item_reference"]
    id: str


Message = SystemMessage | UserMessage | AssistantMessage
ClientItem = Message | FunctionCall | FunctionCallOutput | McpApprovalResponse


def item_to_wire(item: dict[str, Any], *, include_audio: bool = False) -> dict[str, Any]:
    """Serialize a stored item for a server event; audio and image bytes only when asked
    (retrieve). Keys starting with ``_`` are the server's own notes and never sent."""
    out = dict(item)
    if "content" in out:
        parts = []
        for part in out["content"]:
            p = {key: value for key, value in part.items() if not key.startswith("_")}
            if not include_audio:
                p.pop("audio", None)
                p.pop("image_url", None)
            parts.append(p)
        out["content"] = parts
    return out
