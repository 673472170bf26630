"""The core's phases and their one transition table (core/state.py).

``transition`` refuses every pair the table does not list, and every pair it lists is walked
here through the core's entry points (client events, ``receive``), so no transition is dead
and none happens outside the table. tests/unit/test_core_ordering.py plays random sequences
on the same entry points and checks the phases against the emitted events.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from openrealtime.core import state
from openrealtime.core.commands import CallMcpTool, ListMcpTools, StartResponse
from openrealtime.core.events import (
    AppendAudio,
    CancelRequested,
    GenerationFinished,
    McpCallDone,
    McpToolsFailed,
    McpToolsListed,
    OutputAudio,
    SessionExpired,
    SpeechGenerated,
    SpeechProbabilities,
    TextGenerated,
    ToolCalled,
    VadFrame,
)
from openrealtime.core.session import SessionCore
from openrealtime.core.state import (
    TRANSITIONS,
    ApprovalPhase,
    ApprovalTrigger,
    IllegalTransition,
    ListingPhase,
    ListingTrigger,
    ResponsePhase,
    ResponseTrigger,
    SessionPhase,
    SessionTrigger,
    TurnPhase,
    TurnTrigger,
    transition,
)
from openrealtime.protocol import client_events as ce
from openrealtime.protocol import server_events as se
from openrealtime.protocol.session import RealtimeSession
from tests.unit.test_core_session import TURN, Harness

SHOP = {"type": "mcp", "server_label": "shop", "server_url": "https://mcp.example.com/mcp"}
LISTED = [
    {"name": "get_order_status", "input_schema": {"type": "object"}},
    {"name": "cancel_order", "input_schema": {"type": "object"}},
]


class Recorder(dict[Any, Any]):
    """The transition table, noting every pair looked up."""

    def __init__(self) -> None:
        super().__init__(TRANSITIONS)
        self.walked: set[tuple[Any, Any]] = set()

    def get(self, key: Any, default: Any = None) -> Any:
        self.walked.add(key)
        return super().get(key, default)


@contextlib.contextmanager
def recording(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    recorder = Recorder()
    monkeypatch.setattr(state, "TRANSITIONS", recorder)
    yield recorder


def test_every_listed_transition_is_taken_and_others_raise() -> None:
    for (phase, trigger), following in TRANSITIONS.items():
        assert transition(phase, trigger) is following  # type: ignore[type-var]
    with pytest.raises(IllegalTransition):
        transition(ResponsePhase.DONE, ResponseTrigger.OUTPUT)
    with pytest.raises(IllegalTransition):
        transition(ApprovalPhase.RUN, ApprovalTrigger.APPROVE)
    with pytest.raises(IllegalTransition):
        transition(TurnPhase.LISTENING, TurnTrigger.SPEECH_STOPPED)
    with pytest.raises(IllegalTransition):
        transition(SessionPhase.CLOSED, SessionTrigger.FATAL_ERROR)


# --------------------------------------------------------------------------- walking the table


def configure_shop(h: Harness, approval: Any) -> None:
    h.update(tools=[{**SHOP, "require_approval": approval}])
    [listing] = [c for c in h.take_commands() if isinstance(c, ListMcpTools)]
    h.core.receive(McpToolsListed(listing.item_id, tuple(LISTED)))
    h.events()


def ask_approval(h: Harness) -> str:
    """A response whose model calls a tool that needs approval; returns the request id."""
    h.user_text("Cancel order A1.")
    rid = h.create_response()
    h.core.chat_request(rid)
    h.core.receive(ToolCalled(rid, "cancel_order", "call_a", "{}"))
    events = h.finish(rid)
    return str(next(e for e in events if e["type"] == "response.output_item.added")["item"]["id"])


def decide(h: Harness, request_id: str, approve: bool) -> None:
    item = {"type": "mcp_approval_response", "approval_request_id": request_id, "approve": approve}
    h.send("conversation.item.create", item=item)


def walk_responses(h: Harness) -> None:
    h.update(output_modalities=["text"])
    rid = h.create_response()  # created → finished
    h.finish(rid)
    rid = h.create_response()  # created → cancelled
    h.core.receive(CancelRequested(rid, "client_cancelled"))
    rid = h.create_response()  # created → generating → generating → finished
    h.core.receive(TextGenerated(rid, "Hello"))
    h.core.receive(TextGenerated(rid, " there"))
    h.finish(rid)
    rid = h.create_response()  # generating → cancelled
    h.core.receive(TextGenerated(rid, "Hello"))
    h.core.receive(CancelRequested(rid, "client_cancelled"))
    h.events()


def walk_tools_and_approvals(h: Harness) -> None:
    configure_shop(h, {"never": {"tool_names": ["get_order_status"]}})
    # generating → awaiting a tool → generating
    h.user_text("Where is A1?")
    rid = h.create_response()
    h.core.chat_request(rid)
    h.core.receive(TextGenerated(rid, "One moment."))
    h.core.receive(ToolCalled(rid, "get_order_status", "call_s", "{}"))
    [call] = [c for c in h.take_commands() if isinstance(c, CallMcpTool)]
    h.core.receive(McpCallDone(rid, call.item_id, "Friday", None))
    h.finish(rid)
    # approvals: pending → approved → denied → approved → approved; pending → denied → denied
    first, second = ask_approval(h), ask_approval(h)
    decide(h, first, True)
    decide(h, first, False)
    decide(h, first, True)
    decide(h, first, True)
    decide(h, second, False)
    decide(h, second, False)
    decide(h, second, True)
    # both approved calls run when the next response starts: created → awaiting → awaiting
    rid = h.create_response()
    calls = [c for c in h.take_commands() if isinstance(c, CallMcpTool)]
    assert len(calls) == 2
    for call in calls:
        h.core.receive(McpCallDone(rid, call.item_id, "done", None))
    h.finish(rid)
    assert {a.phase for a in h.core.mcp.approvals.values()} == {ApprovalPhase.RUN}


def walk_turns(h: Harness) -> None:
    h.speak(TURN)  # listening → speaking → listening (speech stopped)
    h.send("input_audio_buffer.clear")  # listening → cleared
    h.speak([0.9] * 10)  # speaking …
    h.send("input_audio_buffer.clear")  # … → cleared
    h.speak([0.9] * 10)
    h.send("input_audio_buffer.commit")  # speaking → committed
    h.speak([0.0] * 5)
    h.send("input_audio_buffer.commit")  # listening → committed
    h.speak([0.9] * 10)
    h.update(audio={"input": {"turn_detection": None}})  # speaking → detection off
    h.update(audio={"input": {"turn_detection": {"type": "server_vad"}}})
    h.update(audio={"input": {"turn_detection": None}})  # listening → detection off


def test_the_entry_points_walk_the_whole_table(monkeypatch: pytest.MonkeyPatch) -> None:
    with recording(monkeypatch) as table:
        h = Harness()
        h.events()
        walk_responses(h)
        walk_tools_and_approvals(h)
        walk_turns(h)
        listing = Harness()
        listing.update(tools=[SHOP])
        [command] = [c for c in listing.take_commands() if isinstance(c, ListMcpTools)]
        listing.core.receive(McpToolsFailed(command.item_id, "mcp_server_unreachable", "down"))
        listing.core.receive(GenerationFinished("resp_gone", "stop", 1, 0, 1))  # stale: no transition
        listing.core.receive(SessionExpired())
        assert listing.core.closed
    missing = sorted(f"{phase} + {trigger}" for phase, trigger in set(TRANSITIONS) - table.walked)
    assert missing == []
    assert ListingPhase.FAILED in {lst.phase for lst in listing.core.mcp.listings.values()}
    assert (ListingPhase.LISTING, ListingTrigger.LISTED) in table.walked


# --------------------------------------------------------------------------- determinism


def counter_ids() -> Callable[[str], str]:
    counter = itertools.count()
    return lambda prefix: f"{prefix}{next(counter):021d}"


def one_session() -> list[str]:
    """A session driven with the same inputs, its outputs as comparable text."""
    core = SessionCore(
        RealtimeSession(), count_tokens=lambda s: len(s.split()), created_at=1_700_000_000, ids=counter_ids()
    )
    core.start()
    core.handle(AppendAudio(np.full(24 * 300, 500, dtype=np.int16)))
    core.receive(
        SpeechProbabilities(tuple(VadFrame(p, i * 32, (i + 1) * 32) for i, p in enumerate([0.9] * 4)))
    )
    core.handle(ce.InputAudioBufferCommit(type="input_audio_buffer.commit"))
    core.handle(ce.ResponseCreate(type="response.create"))
    [start] = [c for c in core.take_commands() if isinstance(c, StartResponse)]
    core.receive(TextGenerated(start.response_id, "Hi."))
    core.receive(SpeechGenerated(start.response_id, np.ones(2400, dtype=np.int16)))
    core.receive(GenerationFinished(start.response_id, "stop", 5, 0, 2))
    return [
        o.to_json() if isinstance(o, se.ServerEvent) else repr((o.response_id, o.item_id, o.pcm.tobytes()))
        for o in core.take_events()
        if isinstance(o, se.ServerEvent | OutputAudio)
    ]


def test_with_injected_ids_the_core_is_deterministic() -> None:
    first, second = one_session(), one_session()
    assert first == second
    assert '"event_id":"event_' in first[0] and '"id":"sess_' in first[0]
