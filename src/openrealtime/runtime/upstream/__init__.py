"""An upstream Realtime API (OpenAI, Azure, another openrealtime) as a session's responder."""

from .connection import UpstreamConfig, UpstreamFailure, websocket_url
from .responder import UpstreamResponder

__all__ = ["UpstreamConfig", "UpstreamFailure", "UpstreamResponder", "websocket_url"]
