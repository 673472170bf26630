"""Images as clients send them: checking data URLs, decoding, and what an image is billed as.

Pure computation on bytes (Pillow, no I/O): the session core checks images here when an item
arrives, the vision engines decode them here before describing them.
"""

from __future__ import annotations

from .data_url import CheckedImage, ImageInputError, check_data_url, open_image
from .tokens import image_tokens

__all__ = ["CheckedImage", "ImageInputError", "check_data_url", "image_tokens", "open_image"]
