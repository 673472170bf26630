"""How many LLM generations the scheduler runs at once, per backend: the embedded model's
batch (``llm_parallel``), or the requests kept in flight at an OpenAI-compatible endpoint
(``remote_concurrency``: llama-server's slots or vLLM batch them there)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from openrealtime.config import Settings
from openrealtime.engines.registry import build_engines


def test_an_endpoint_gets_remote_concurrency_requests_at_once() -> None:
    settings = Settings(
        llm_base_url="http://127.0.0.1:9/v1", remote_concurrency=6, vision="none", warm_up=False
    )
    engines = build_engines(settings, speech=False)
    assert engines.in_flight["llm"] == 6


def test_llm_parallel_is_bounded() -> None:
    assert Settings().llm_parallel >= 1
    with pytest.raises(ValidationError):
        Settings(llm_parallel=0)
