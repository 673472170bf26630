"""Turn-taking a caller can trust, over real WebSocket sessions with real speech and models.

* A client without echo cancellation (tests/speakerphone.py) hears the assistant's answer back
  at -6 dB, 50 to 250 ms late, through a loudspeaker and a room: that must never start a turn;
  a real utterance at the same level must.
* Under ``semantic_vad`` a pause in the middle of a sentence does not end the turn, a finished
  sentence ends it promptly, and a backchannel during the answer does not interrupt it.

Timing is judged on the audio's own clock (client samples, the server's input clock), never
on how long the machine took.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import websockets

from tests.speakerphone import RATE, Speakerphone
from tests.speech_audio import AUDIO_DIR
from tests.support import ServerProcess, run_server, validate_server_event

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not AUDIO_DIR.is_dir(), reason="shared real-speech clips not present"),
]

ANSWER = (
    "Say exactly this and nothing else: Your order left the warehouse this morning, it should "
    "arrive on Friday between nine and noon, and the courier will call you half an hour before."
)
PREFIX_MS = 300


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with run_server(tmp_path_factory.mktemp("turn-taking")) as process:
        yield process


@pytest.fixture
async def ws(server: ServerProcess) -> AsyncIterator[Any]:
    url = server.ws_url + "/v1/realtime?model=gpt-realtime"
    headers = {"Authorization": f"Bearer {server.api_key}"}
    async with websockets.connect(url, additional_headers=headers, max_size=None) as socket:
        assert validate_server_event(await socket.recv())["type"] == "session.created"
        yield socket


async def configure(ws: Any, turn_detection: dict[str, Any]) -> None:
    session = {
        "type": "realtime",
        "audio": {
            "input": {
                "transcription": {"model": "whisper-1", "language": "en"},
                "turn_detection": {**turn_detection, "create_response": False},
            }
        },
    }
    await ws.send(json.dumps({"type": "session.update", "session": session}))
    while validate_server_event(await ws.recv())["type"] != "session.updated":
        pass


def answer_over(phone: Speakerphone) -> bool:
    """The answer was generated and the client has played all of it (and its echo is back)."""
    done = phone.at("response.done")
    return done is not None and not phone.playing and phone.position > done + RATE // 2


async def speak_answer(phone: Speakerphone) -> None:
    await phone.run_until(lambda p: p.position >= RATE // 2)  # room tone first
    await phone.send({"type": "response.create", "response": {"instructions": ANSWER}})


# --------------------------------------------------------------------------- echo


@pytest.mark.parametrize("trial", range(10))
async def test_the_answer_fed_back_does_not_interrupt_it(ws: Any, trial: int) -> None:
    delay_ms = 50 + trial * 200 / 9  # 50 .. 250 ms
    await configure(ws, {"type": "server_vad", "prefix_padding_ms": PREFIX_MS})
    phone = Speakerphone(ws, delay_ms=delay_ms, seed=trial + 1)
    await speak_answer(phone)
    await phone.run_until(answer_over)
    assert phone.played_samples > 2 * RATE, "the answer was not played"
    assert phone.of("input_audio_buffer.speech_started") == []
    assert phone.of("response.done")[0]["response"]["status"] == "completed"


@pytest.mark.parametrize(("trial", "clip"), list(enumerate(["librivox-0880", "goforward", "cards-005"])))
async def test_a_real_caller_at_the_echo_level_interrupts(ws: Any, trial: int, clip: str) -> None:
    await configure(ws, {"type": "server_vad", "prefix_padding_ms": PREFIX_MS})
    phone = Speakerphone(ws, delay_ms=80 + 70 * trial, seed=20 + trial)
    await speak_answer(phone)
    await phone.run_until(lambda p: p.played_samples >= 2 * RATE)
    talk = phone.talk(clip, phone.playback_level_db() + phone.level_db)
    await phone.run_until(
        lambda p: p.at("input_audio_buffer.speech_started") is not None or p.position > talk.onset + 4 * RATE
    )
    (started,) = phone.of("input_audio_buffer.speech_started")
    # the reported onset is the caller's, on the input clock (the client's samples)
    onset_ms = talk.onset * 1000 / RATE
    heard_ms = started["audio_start_ms"] + PREFIX_MS
    # speech_started waits for the talker check (bench/echo_barge_in.py: within 300 ms 8/10)
    assert -150 <= heard_ms - onset_ms <= 400, (heard_ms, onset_ms)
