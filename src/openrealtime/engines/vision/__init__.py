"""Image input: checking data URLs, billing image tokens, and describing images for an LLM."""

from __future__ import annotations

from .images import CheckedImage, ImageInputError, check_data_url, open_image
from .tokens import image_tokens

__all__ = ["CheckedImage", "ImageInputError", "check_data_url", "image_tokens", "open_image"]
