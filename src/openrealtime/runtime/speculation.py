"""Answer as the caller finishes: prompt prefill and preemptive generation for one session.

**Prefill.** When a session's instructions or tools change (its start, ``session.update``),
their prompt prefix is evaluated on the LLM in the background at the lowest priority
(``PRIORITY_PREFILL``), so the first turn finds it cached. A newer change supersedes a pending
prefill; another session's turn takes the engine from it (it is retried behind that turn).

**Preemptive generation.** While a turn is spoken, the streaming transcription's settled text
(its latest pass heard every voiced sample: the caller has paused) is answered at once by the
session's ``Responder`` under a ``_GuessHost``, which keeps every ``Result`` instead of
reporting it: nothing of a guess reaches the core, so no ``response.created``, no delta, no
audio and no usage. Its engine work queues at ``PRIORITY_SPECULATIVE``, below every committed
turn of every session, and gives the engine up when such a turn needs it. New speech after
the settled text (the caller resumed) discards the guess; a different settled text replaces
it. A turn whose silence window is too short for that (``worth_guessing``: the pause must
outlast the wait for the settling transcription pass, the pass itself as measured on the ASR
queue, and a useful head start) is not guessed at all (``skipped``). Turn detection still decides when the turn ends; when the core then starts the turn's
response, the guess is released into it if the real request asks the same (up to case,
punctuation and spacing of the caller's words, ``core/speculation.py``): the kept results are
reported under the real response id and the rest follows live. Otherwise the guess is
discarded and the responder answers the final transcript. Hits, misses and the compute
discarded guesses spent go to the observers (``/metrics``) and the turn timings.

**Warm-up while the caller speaks** (``warm_while_speaking``). Whether or not the turn is
guessed, the prompt up to the words of the latest transcription pass is evaluated as each pass
finishes (``LanguageModel.prefill``, live cache only, ``WARM_CHUNK`` tokens between checks), and
on after the commit, over the committed turn's stream and the conversation before it, until the
turn's response starts; that response then evaluates only its last few tokens. Under ``auto``
only on CPU nothing else wants (``WARM_MIN_SPARE_CORES``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..core.commands import StartResponse
from ..core.events import GenerationFinished, PromptRead, Result, TextGenerated
from ..core.speculation import (
    GuessShape,
    guess_request,
    guess_shape,
    normalise,
    prefix_request,
    same_request,
    silence_window_ms,
    worth_guessing,
)
from ..engines.base import CancelToken, ChatRequest
from ..engines.registry import WarmMode
from .responding import Cascade, Responder, TurnTimings
from .scheduler import PRIORITY_BACKGROUND, PRIORITY_PREFILL, PRIORITY_SPECULATIVE
from .spare_cpu import WorkerThreads

if TYPE_CHECKING:
    from ..engines.asr.streaming import StreamingTranscription
    from .session_runtime import SessionRuntime

log = logging.getLogger("openrealtime.speculation")
_GUESS_NUMBERS = itertools.count(1)
"""Guesses are numbered across the server, so a log line names one guess of one session."""

WATCH_INTERVAL_S = 0.02
"""How often the turn being spoken is checked for a settled transcript."""
MIN_GUESS_WORDS = 1
PASS_MS_BEFORE_MEASURED = 300.0
"""A transcription pass's duration until the ASR queue has timed one (whisper-base on one
idle core of this 2-core EPYC: ~250 ms)."""
MIN_WARM_WORDS = 1
WARM_MIN_SPARE_CORES = 0.9
"""Words spoken so far are evaluated ahead (``warm_while_speaking`` ``auto``) only while this
much of the machine's CPU is idle and the LLM has nothing else to do: on 2 loaded cores
(load ~8) that LLM work competed with the transcription passes, and the final transcript came
1.3 s after the commit instead of 0.5 s (bench/results/preemptive/)."""
WARM_CHUNK = 8
"""Prompt tokens a warm-up evaluates between checks for a committed turn that needs the LLM
(~190 ms on one core of this 2-core EPYC; 16 would be ~290 ms)."""


@dataclass
class SpeculationCounts:
    """One session's guesses: ``started``, ``hits`` released, ``misses`` discarded at commit,
    ``abandoned`` discarded before (the caller went on, or a committed turn took the engine)."""

    started: int = 0
    hits: int = 0
    misses: int = 0
    abandoned: int = 0
    skipped: int = 0
    """Turns not guessed: their silence window is shorter than a guess needs."""
    wasted_tokens: int = 0
    wasted_seconds: float = 0.0
    prefills: int = 0
    prefill_tokens: int = 0
    warms: int = 0
    warm_tokens: int = 0
    """Prompt tokens evaluated ahead on the words heard while the caller spoke."""


class _GuessHost:
    """A ``ResponseHost`` for a guess: results are kept until ``release``, then reported
    under the real response id; before that, nothing reaches the session's core."""

    def __init__(self, runtime: SessionRuntime, guess_id: str, request: ChatRequest) -> None:
        self.runtime = runtime
        self.engines = runtime.engines
        self.scheduler = runtime.scheduler
        self.first_piece_words = runtime.first_piece_words
        self.moderation = runtime.moderation
        self.speculative = True
        self.guess_id = guess_id
        self.request = request
        self.timings: dict[str, TurnTimings] = {guess_id: TurnTimings(created=time.monotonic())}
        self.held: list[Result] = []
        self.text = ""
        self.real: str | None = None

    @property
    def session_id(self) -> str:
        return self.runtime.session_id

    def report(self, result: Result) -> None:
        if self.real is None:
            self.held.append(result)
            if isinstance(result, TextGenerated):
                self.text += result.text
            return
        held: Any = result  # every result a responder reports names its response
        self.runtime.report(dataclasses.replace(held, response_id=self.real))

    def release(self, real_id: str) -> None:
        """From now on this guess is response ``real_id``: report what was kept, then live."""
        now = time.monotonic()
        timings = self.timings[self.guess_id]
        real = self.runtime.timings.get(real_id)
        timings.created = real.created if real is not None else now
        if timings.first_audio_sent is not None:
            timings.first_audio_sent = now  # it is sent now, not when it was made
        self.runtime.timings[real_id] = timings
        self.real, self.speculative = real_id, False
        held, self.held = self.held, []
        for result in held:
            self.report(result)

    def wasted_tokens(self) -> int:
        """Tokens a discarded guess had the LLM evaluate or write (as far as it reported)."""
        prompt = sum(r.prompt_tokens - r.cached_tokens for r in self.held if isinstance(r, PromptRead))
        finished = [r for r in self.held if isinstance(r, GenerationFinished)]
        if finished:
            return prompt + sum(r.completion_tokens for r in finished)
        return prompt + (self.engines.llm.count_tokens(self.text) if self.text else 0)

    def chat_request(self, response_id: str) -> ChatRequest | None:
        return self.request if self.real is None else self.runtime.chat_request(self.real)

    def is_live(self, response_id: str) -> bool:
        return True if self.real is None else self.runtime.is_live(self.real)

    def spoken_text(self, response_id: str) -> str:
        return self.text if self.real is None else self.runtime.spoken_text(self.real)

    def mcp_calls_pending(self, response_id: str) -> bool:
        return False if self.real is None else self.runtime.mcp_calls_pending(self.real)

    async def context_ready(self, command: StartResponse) -> None:
        return None

    async def tools_settled(self, response_id: str) -> None:
        if self.real is not None:
            await self.runtime.tools_settled(self.real)


@dataclass
class _Guess:
    text: str
    words: str
    shape: GuessShape
    host: _GuessHost
    token: CancelToken
    task: asyncio.Task[None]
    started: float = field(default_factory=time.monotonic)


class Speculation:
    """Prefill and preemptive generation for one session (see the module doc)."""

    def __init__(
        self,
        runtime: SessionRuntime,
        *,
        enabled: bool,
        responder: Callable[[_GuessHost], Responder] = Cascade,
        on_outcome: Callable[[str, int, float], None] | None = None,
        warm: WarmMode = "auto",
    ) -> None:
        self.runtime = runtime
        self.enabled = enabled
        self.warm = warm
        self.responder = responder
        self.on_outcome = on_outcome
        self.counts = SpeculationCounts()
        self.outcomes: dict[str, dict[str, Any]] = {}
        """Per response id: what speculation did for it (merged into its turn timings)."""
        self._guess: _Guess | None = None
        self._pending: dict[str, _Guess] = {}  # committed item id → its guess
        self._watcher: asyncio.Task[None] | None = None
        self._skipping: dict[str, Any] | None = None  # why the turn being spoken is not guessed
        self._guessing = False  # the turn being spoken may be guessed (its window allows)
        self._committed: tuple[str, StreamingTranscription] | None = None  # warmed on after commit
        self._skipped: dict[str, dict[str, Any]] = {}  # committed item id → why
        self._prefill_key: str | None = None
        self._prefill: tuple[asyncio.Task[None], CancelToken] | None = None
        self._warmed = ""
        self._warming: tuple[asyncio.Future[int], CancelToken] | None = None

    # ------------------------------------------------------------------ prefill

    def config_changed(self) -> None:
        """Instructions or tools may have changed: prefill their prompt prefix if they did."""
        prefill = getattr(self.runtime.engines.llm, "prefill", None)
        if prefill is None:
            return
        request = prefix_request(self.runtime.core)
        if request is None:
            return
        key = hashlib.sha256(
            json.dumps(
                [request.messages[0].content if request.messages else "", repr(request.tools)]
            ).encode()
        ).hexdigest()
        if key == self._prefill_key:
            return
        self._prefill_key = key
        if self._prefill is not None:
            self._prefill[0].cancel()
            self._prefill[1].cancel()
        token = CancelToken()
        task = asyncio.ensure_future(self._run_prefill(prefill, request, token))
        self._prefill = (task, token)

    async def _run_prefill(self, prefill: Any, request: ChatRequest, token: CancelToken) -> None:
        started = time.monotonic()
        scheduler = self.runtime.scheduler
        workers = WorkerThreads(scheduler.spare_cores, fewest=self.runtime.engines.llm_threads)

        def threads() -> int:
            """The second core too while it is free and no other engine of the server works."""
            return workers(all(q.idle for q in (scheduler.asr, scheduler.tts, scheduler.vad)))

        while not token.cancelled:
            attempt = CancelToken()  # given up when a turn needs the LLM; then tried again

            def run(attempt: CancelToken = attempt) -> int:
                if token.cancelled:
                    attempt.cancel()
                evaluated: int = prefill(request, attempt, threads=threads)
                return evaluated

            try:
                evaluated = await self.runtime.scheduler.llm.call(
                    run, priority=PRIORITY_PREFILL, cancel=attempt, yielding=True
                )
            except asyncio.CancelledError:
                if token.cancelled:
                    return
                continue  # dropped before it started
            except Exception:
                log.exception("prefill failed")
                return
            self.counts.prefill_tokens += evaluated
            if attempt.cancelled:
                log.debug(
                    "prefill gave the engine up after %d prompt tokens (%.2f s)",
                    evaluated,
                    time.monotonic() - started,
                )
            else:
                self.counts.prefills += 1
                log.info(
                    "prefilled %d prompt tokens in %.2f s (%d in all)",
                    evaluated,
                    time.monotonic() - started,
                    self.counts.prefill_tokens,
                )
                return

    # ------------------------------------------------------------------ the turn being spoken

    def pass_ms(self) -> float:
        """How long a transcription pass takes now (the ASR queue's running mean)."""
        measured = self.runtime.scheduler.asr.mean_run_s.get(PRIORITY_BACKGROUND)
        return PASS_MS_BEFORE_MEASURED if measured is None else measured * 1000

    def on_speech_started(self) -> None:
        self._discard_current("abandoned")
        self._warmed = ""
        if not self.enabled:
            return
        self._stop_watching()
        window, pass_ms = silence_window_ms(self.runtime.core), self.pass_ms()
        self._guessing = worth_guessing(window, pass_ms)
        self._skipping = (
            None
            if self._guessing
            else {"speculation_window_ms": window, "speculation_pass_ms": round(pass_ms)}
        )
        if self._guessing or self.warm != "never":
            self._watcher = asyncio.ensure_future(self._watch())

    def on_committed(self, item_id: str, by_vad: bool) -> None:
        """The turn is committed. Warming goes on until its response starts (the final pass
        runs meanwhile and the LLM would be idle); guessing stops."""
        self._guessing = False
        stream = self.runtime.listening.turn_streams.get(item_id) if by_vad else None
        if stream is None:
            self._stop_watching()
        else:
            self._committed = (item_id, stream)
        skipping, self._skipping = self._skipping, None
        if skipping is not None and by_vad:
            self._skipped[item_id] = skipping
            self.counts.skipped += 1
            if self.on_outcome is not None:
                self.on_outcome("skipped", 0, 0.0)
        guess, self._guess = self._guess, None
        if guess is None:
            return
        self._stop_watching()  # the guess answers this turn: nothing to warm
        if by_vad:
            self._pending[item_id] = guess
        else:
            self._discard(guess, "abandoned")

    def on_cleared(self) -> None:
        self._stop_watching()
        self._skipping = None
        self._discard_current("abandoned")

    def _stop_watching(self) -> None:
        """Stop following the turn; a warm-up not yet done is given up (it would evaluate a
        prompt the turn's response has moved past)."""
        self._committed = None
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        if self._warming is not None:
            self._warming[1].cancel()
            self._warming = None

    async def _watch(self) -> None:
        try:
            while True:
                await asyncio.sleep(WATCH_INTERVAL_S)
                streaming = self._committed[1] if self._committed else self.runtime.listening.streaming
                if streaming is None:
                    continue
                if self._guessing:
                    self._follow(streaming.settled_text())
                if self._guess is None:
                    self._warm(streaming.latest_text())
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("speculation failed")

    def _follow(self, text: str | None) -> None:
        """Guess the settled text; a caller who speaks on discards the guess."""
        guess = self._guess
        if text is None or len(text.split()) < MIN_GUESS_WORDS:
            if guess is not None:
                self._discard_current("abandoned")  # the caller is speaking again
            return
        words = normalise(text)
        if guess is not None and guess.words == words and not guess.token.cancelled:
            return
        self._discard_current("abandoned")
        self._start(text, words)

    def _may_warm(self) -> bool:
        """``auto``: only on CPU nothing else wants (see :data:`WARM_MIN_SPARE_CORES`)."""
        if self.warm != "auto":
            return self.warm == "always"
        scheduler = self.runtime.scheduler
        return scheduler.llm.idle and scheduler.spare_cores() >= WARM_MIN_SPARE_CORES

    def _warm(self, words_so_far: str | None) -> None:
        """While the caller speaks (and until the committed turn's response starts), evaluate
        the prompt up to the words heard so far, so that response (guessed or final) evaluates
        only what follows them: on this CPU a prompt token costs ~20 ms, and a turn's words
        and template are 20-30 of them."""
        prefill = getattr(self.runtime.engines.llm, "prefill", None)
        if (
            prefill is None
            or words_so_far is None
            or len(words_so_far.split()) < MIN_WARM_WORDS
            or words_so_far == self._warmed
            or (self._warming is not None and not self._warming[0].done())
            or not self._may_warm()
        ):
            return
        core, turn = self.runtime.core, self._committed[0] if self._committed else None
        request = guess_request(core, words_so_far, turn_id=turn) if guess_shape(core) else None
        if request is None:
            return
        self._warmed = words_so_far
        token = CancelToken()

        def run() -> int:
            evaluated: int = 0 if token.cancelled else prefill(request, token, keep=False, chunk=WARM_CHUNK)
            return evaluated

        future = asyncio.ensure_future(
            self.runtime.scheduler.llm.call(run, priority=PRIORITY_SPECULATIVE, cancel=token, yielding=True)
        )
        future.add_done_callback(lambda task: self._warmed_up(task, token))
        self._warming = (future, token)

    def _warmed_up(self, task: asyncio.Future[int], token: CancelToken) -> None:
        if not task.cancelled() and task.exception() is None:
            self.counts.warm_tokens += task.result()
            self.counts.warms += 1
        if token.cancelled:
            self._warmed = ""  # it gave the engine up (or never got it): the words are asked again

    def _start(self, text: str, words: str) -> None:
        core = self.runtime.core
        shape = guess_shape(core)
        request = guess_request(core, text) if shape is not None else None
        if shape is None or request is None or not words:
            return
        guess_id = f"guess_{next(_GUESS_NUMBERS)}"
        host = _GuessHost(self.runtime, guess_id, request)
        token = CancelToken()
        command = StartResponse(
            response_id=guess_id,
            context_item_ids=(),
            modality="audio" if shape.modality == "audio" else "text",
            voice=shape.voice,
            speed=shape.speed,
            output_format=shape.output_format,
        )
        task = asyncio.ensure_future(self.responder(host).respond(command, token))
        self._guess = _Guess(text, words, shape, host, token, task)
        self.counts.started += 1
        if self.on_outcome is not None:
            self.on_outcome("started", 0, 0.0)

    # ------------------------------------------------------------------ at commit

    async def release(
        self, command: StartResponse, token: CancelToken, adopt: Callable[[CancelToken], None]
    ) -> bool:
        """Answer ``command`` with the guess made for its turn, if it asked the same; True
        when it did (the guess's work has then finished as that response)."""
        if self._committed is not None:
            self._stop_watching()  # the committed turn's warming ends as its response starts
        elif self._warming is not None:
            self._warming[1].cancel()
        last = command.context_item_ids[-1] if command.context_item_ids else None
        guess = self._pending.pop(last, None) if last is not None else None
        for other in list(self._pending.values()):
            self._discard(other, "abandoned")
        self._pending.clear()
        skipped = self._skipped.pop(last, None) if last is not None else None
        self._skipped.clear()
        if skipped is not None:
            self.outcomes[command.response_id] = {"speculation": "skipped", **skipped}
        if guess is None:
            return False
        await self.runtime.context_ready(command)
        real = self.runtime.chat_request(command.response_id) if not token.cancelled else None
        shape = (command.modality, command.voice, command.speed, command.output_format)
        guess_shape_now = (
            guess.shape.modality,
            guess.shape.voice,
            guess.shape.speed,
            guess.shape.output_format,
        )
        if (
            real is None
            or guess.token.cancelled
            or shape != guess_shape_now
            or not same_request(guess.host.request, real)
        ):
            self._discard(guess, "miss", command.response_id)
            return False
        adopt(guess.token)
        if token.cancelled:
            guess.token.cancel()
        self.runtime.scheduler.keep(guess.token)
        head_start = round((time.monotonic() - guess.started) * 1000, 1)
        self.counts.hits += 1
        self.outcomes[command.response_id] = {"speculation": "hit", "speculation_head_start_ms": head_start}
        if self.on_outcome is not None:
            self.on_outcome("hit", 0, 0.0)
        log.info(
            "response %s answers with %s, made while the caller spoke",
            command.response_id,
            guess.host.guess_id,
        )
        guess.host.release(command.response_id)
        with contextlib.suppress(asyncio.CancelledError):
            await guess.task
        return True

    # ------------------------------------------------------------------ discarding

    def _discard_current(self, outcome: str) -> None:
        guess, self._guess = self._guess, None
        if guess is not None:
            self._discard(guess, outcome)

    def _discard(self, guess: _Guess, outcome: str, response_id: str | None = None) -> None:
        """Stop a guess; what it produced is dropped and counted as wasted."""
        guess.token.cancel()
        guess.task.cancel()
        tokens = guess.host.wasted_tokens()
        seconds = time.monotonic() - guess.started
        self.counts.wasted_tokens += tokens
        self.counts.wasted_seconds += seconds
        if outcome == "miss":
            self.counts.misses += 1
        else:
            self.counts.abandoned += 1
        if response_id is not None:
            self.outcomes[response_id] = {
                "speculation": outcome,
                "speculation_wasted_tokens": tokens,
                "speculation_wasted_s": round(seconds, 3),
            }
        log.debug("guess %r %s (%d tokens, %.2f s)", guess.text, outcome, tokens, seconds)
        if self.on_outcome is not None:
            self.on_outcome(outcome, tokens, seconds)

    def timing_fields(self, response_id: str) -> dict[str, Any]:
        """What speculation did for a response, for its turn timings record."""
        return self.outcomes.pop(response_id, {"speculation": None})

    async def aclose(self) -> None:
        self._stop_watching()
        self._discard_current("abandoned")
        for guess in list(self._pending.values()):
            self._discard(guess, "abandoned")
        self._pending.clear()
        if self._prefill is not None:
            self._prefill[1].cancel()
            self._prefill[0].cancel()
