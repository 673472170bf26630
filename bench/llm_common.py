"""Shared by the LLM benchmarks: the voice-agent prompt, four tools, the request set, machine info."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from machine import machine_info as shared_machine_info
from openrealtime.engines.base import ToolSpec

SYSTEM_PROMPT = (
    "You are Sam, the voice assistant of Acme Home. You talk with customers over the phone, so "
    "keep every answer to one or two short spoken sentences, with no lists, markdown or emoji. "
    "Be warm and direct. You can check the weather, set kitchen timers, look up Acme orders and "
    "send text messages for the customer. If you are not sure what the customer wants, ask one "
    "short clarifying question. Never invent order details."
)

TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(
        "get_weather",
        "Get the current weather and today's forecast for a city.",
        {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    ),
    ToolSpec(
        "set_timer",
        "Start a countdown timer.",
        {
            "type": "object",
            "properties": {
                "minutes": {"type": "number", "description": "Length of the timer in minutes"},
                "label": {"type": "string", "description": "What the timer is for"},
            },
            "required": ["minutes"],
        },
    ),
    ToolSpec(
        "lookup_order",
        "Look up the status of an Acme order by its order number.",
        {
            "type": "object",
            "properties": {"order_id": {"type": "string", "description": "Order number, letters and digits"}},
            "required": ["order_id"],
        },
    ),
    ToolSpec(
        "send_message",
        "Send a text message to one of the customer's contacts.",
        {
            "type": "object",
            "properties": {
                "recipient": {"type": "string", "description": "Contact name"},
                "text": {"type": "string", "description": "The message to send"},
            },
            "required": ["recipient", "text"],
        },
    ),
)


@dataclass(frozen=True)
class Case:
    text: str
    tool: str | None = None
    key: str | None = None
    """Argument that must be right (location/minutes/order_id/recipient)."""
    expected: str | float | None = None


TOOL_CASES: tuple[Case, ...] = (
    Case("What's the weather like in Paris right now?", "get_weather", "location", "Paris"),
    Case("Is it going to rain in Seattle today?", "get_weather", "location", "Seattle"),
    Case("how cold is it in Chicago", "get_weather", "location", "Chicago"),
    Case("Can you check the forecast for Tokyo?", "get_weather", "location", "Tokyo"),
    Case("hey what's the temperature in Berlin in celsius", "get_weather", "location", "Berlin"),
    Case("do I need an umbrella in London today", "get_weather", "location", "London"),
    Case("Set a timer for five minutes.", "set_timer", "minutes", 5),
    Case("start a ten minute timer for the pasta", "set_timer", "minutes", 10),
    Case("can you set a timer for 30 minutes", "set_timer", "minutes", 30),
    Case("timer for one hour please", "set_timer", "minutes", 60),
    Case("put a two minute timer on", "set_timer", "minutes", 2),
    Case("set a fifteen minute timer for my tea", "set_timer", "minutes", 15),
    Case("Where is my order A B 1 2 3 4?", "lookup_order", "order_id", "AB1234"),
    Case("can you check the status of order number 55721", "lookup_order", "order_id", "55721"),
    Case("I want to know what happened to order X Y Z 9 8 7", "lookup_order", "order_id", "XYZ987"),
    Case("track order 10042 for me", "lookup_order", "order_id", "10042"),
    Case("has my order 88 31 07 shipped yet", "lookup_order", "order_id", "883107"),
    Case("look up order number K 4 4 2", "lookup_order", "order_id", "K442"),
    Case("Send a message to Alice saying I'll be late.", "send_message", "recipient", "Alice"),
    Case("text Bob that dinner is at seven", "send_message", "recipient", "Bob"),
    Case("send my mom a message that I landed safely", "send_message", "recipient", "mom"),
    Case("message Carlos: the meeting moved to 3pm", "send_message", "recipient", "Carlos"),
    Case("can you send Sarah a text saying happy birthday", "send_message", "recipient", "Sarah"),
    Case("let David know by text that I'm running ten minutes behind", "send_message", "recipient", "David"),
)

NO_TOOL_CASES: tuple[Case, ...] = (
    Case("Hi there, how are you doing today?"),
    Case("Thanks, that's all I needed."),
    Case("Tell me a short joke."),
    Case("What's the capital of Australia?"),
    Case("Who wrote Romeo and Juliet?"),
    Case("How many legs does a spider have?"),
    Case("What's your name?"),
    Case("Can you explain what a black hole is in one sentence?"),
    Case("Why is the sky blue?"),
    Case("What does a meteorologist do?"),
    Case("What's the difference between weather and climate?"),
    Case("How long should I boil an egg?"),
    Case("What is the Pomodoro technique?"),
    Case("How do online stores usually ship packages?"),
    Case("What's a good way to apologize to a friend by text?"),
    Case("Should I send an email or a text for a job follow-up?"),
    Case("What's seven times eight?"),
    Case("Can you recommend a good book?"),
    Case("Good morning!"),
    Case("Okay, great, goodbye."),
    Case("What's the tallest mountain in the world?"),
    Case("How do I make a cup of green tea?"),
    Case("I love rainy days, do you?"),
    Case("What time zone is Tokyo in?"),
)


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    return shared_machine_info("llama-cpp-python")
