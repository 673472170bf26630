"""How many input tokens an image counts as, by OpenAI's published image rule.

The Realtime spec does not give one, so the rule OpenAI documents for its GPT-4o-class
vision models is used (the one ``gpt-realtime`` bills by):

* ``detail: "low"``: a flat 85 tokens, whatever the size.
* ``detail: "high"`` (and ``"auto"``, which the Realtime API treats as high): scale the image
  to fit within 2048 x 2048, then so that its shortest side is 768 px (never scaling up), count
  the 512 px tiles that cover it, and bill 170 tokens per tile plus 85.

A 1024 x 1024 image is 4 tiles: 765 tokens; 2048 x 4096 is 6 tiles: 1105 tokens.
"""

from __future__ import annotations

import math
from typing import Literal

BASE_TOKENS = 85
TILE_TOKENS = 170
TILE_SIDE = 512
MAX_SIDE = 2048
SHORT_SIDE = 768


def image_tokens(width: int, height: int, detail: Literal["auto", "low", "high"] | str = "auto") -> int:
    """Input tokens of one ``width`` x ``height`` image at ``detail``."""
    if detail == "low":
        return BASE_TOKENS
    w, h = float(width), float(height)
    if max(w, h) > MAX_SIDE:
        scale = MAX_SIDE / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > SHORT_SIDE:
        scale = SHORT_SIDE / min(w, h)
        w, h = w * scale, h * scale
    tiles = math.ceil(w / TILE_SIDE) * math.ceil(h / TILE_SIDE)
    return BASE_TOKENS + TILE_TOKENS * tiles
