"""Verdicts from an OpenAI-compatible moderation endpoint (``POST /v1/moderations``).

The endpoint answers ``{"results": [{"flagged": bool, "categories": {name: bool}, ...}]}``; a
flagged text is blocked and its flagged categories become the verdict's rule ids
(``endpoint:<category>``). Endpoints give no spans, so this mode blocks and never redacts.
When the endpoint fails or is slower than the timeout, the verdict follows ``fail_closed``:
block (the default: nothing unchecked is spoken) or pass, marked ``error`` either way.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx

from .rules import Direction
from .screen import Verdict

__all__ = ["EndpointModerator"]

log = logging.getLogger("openrealtime.safety")
_CATEGORY = re.compile(r"[^A-Za-z0-9_.-]+")


class EndpointModerator:
    """Checks text with a moderation endpoint over HTTP (one shared connection pool)."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        model: str = "omni-moderation-latest",
        timeout_s: float = 2.0,
        fail_closed: bool = True,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url
        self.model = model
        self.fail_closed = fail_closed
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.AsyncClient(timeout=timeout_s, headers=headers)
        self._owns_client = client is None

    async def check(self, text: str, direction: Direction, context: str = "") -> Verdict:
        """Judge ``context + text`` (so a phrase across a clause boundary is seen whole)."""
        if not text.strip():
            return Verdict.passed(text)
        try:
            response = await self._client.post(self.url, json={"model": self.model, "input": context + text})
            response.raise_for_status()
            results = response.json()["results"]
            result = results[0]
            flagged = bool(result["flagged"])
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as error:
            log.warning("moderation endpoint failed for %s text (%s)", direction, type(error).__name__)
            if self.fail_closed:
                return Verdict("block", "", ("endpoint_error",), error=True)
            return Verdict("pass", text, ("endpoint_error",), error=True)
        if not flagged:
            return Verdict.passed(text)
        return Verdict("block", "", _categories(result.get("categories")))

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def _categories(categories: Any) -> tuple[str, ...]:
    if not isinstance(categories, dict):
        return ("endpoint",)
    names = [
        "endpoint:" + _CATEGORY.sub("_", str(name))[:48]
        for name, on in sorted(categories.items())
        if on is True
    ]
    return tuple(names) or ("endpoint",)
