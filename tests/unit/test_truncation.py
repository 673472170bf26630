"""Context truncation (session ``truncation``): ``auto`` drops the oldest turns to fit,
``retention_ratio`` keeps only that share of the budget, ``disabled`` fails the response
instead of silently dropping anything."""

from __future__ import annotations

from openrealtime.core.session import Limits, SessionCore
from openrealtime.protocol.session import RealtimeSession
from tests.json_edge import JsonCore
from tests.unit.test_core_session import Harness


def harness(truncation: object, max_context_tokens: int = 600) -> Harness:
    h = Harness()
    h.core = JsonCore(
        SessionCore(
            RealtimeSession(),
            count_tokens=lambda s: len(s.split()),
            created_at=0,
            limits=Limits(max_context_tokens=max_context_tokens),
        )
    )
    h.core.start()
    h.events()
    h.update(output_modalities=["text"], instructions="Be brief.", truncation=truncation)
    return h


def fill(h: Harness, turns: int, words: int = 50) -> None:
    for n in range(turns):
        h.user_text(f"turn{n} " + "word " * words)


def test_auto_keeps_the_newest_turns_that_fit() -> None:
    h = harness("auto")
    fill(h, 12)  # ~12 * 56 tokens against a budget of 600 - 100 reserved
    rid = h.create_response(max_output_tokens=100)
    request = h.core.chat_request(rid)
    assert request is not None
    texts = [m.content for m in request.messages]
    assert texts[0] == "Be brief."
    assert texts[-1].startswith("turn11 ") and not any(t.startswith("turn0 ") for t in texts)
    assert 3 <= len(texts) - 1 < 12


def test_a_retention_ratio_keeps_a_smaller_share() -> None:
    kept = {}
    for ratio in (1.0, 0.5):
        h = harness({"type": "retention_ratio", "retention_ratio": ratio})
        fill(h, 12)
        request = h.core.chat_request(h.create_response(max_output_tokens=100))
        assert request is not None
        kept[ratio] = len(request.messages) - 1
    assert kept[0.5] < kept[1.0]


def test_disabled_fails_the_response_instead_of_dropping_turns() -> None:
    h = harness("disabled")
    fill(h, 2)
    request = h.core.chat_request(h.create_response(max_output_tokens=100))
    assert request is not None and len(request.messages) == 3  # fits: nothing dropped
    h.finish(str(h.log[-1]["response"]["id"]))
    fill(h, 12)
    rid = h.create_response(max_output_tokens=100)
    assert h.core.chat_request(rid) is None
    done = [e for e in h.events() if e["type"] == "response.done"][-1]["response"]
    assert done["status"] == "failed"
    assert done["status_details"]["error"]["code"] == "context_length_exceeded"
