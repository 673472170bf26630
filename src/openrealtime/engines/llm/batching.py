"""Continuous batching for the embedded LLM: many sequences in one llama.cpp context, one
``llama_decode`` per step for all of them.

Every generation (and every prompt prefill) holds a ``Sequence``: a llama.cpp sequence id in a
shared context whose KV cache is unified (any sequence may use any cell, so a prefix one
sequence evaluated can be shared with another by ``llama_memory_seq_cp`` without copying).
A generation's thread asks its sequence to evaluate tokens and blocks; one stepper thread
puts what the sequences have asked for into one batch (the single token of each decoding
sequence first, then a chunk of each waiting prompt), runs one decode and hands each sequence
the logits of its last token. So a new caller's prompt no longer waits for another caller's
whole answer (it is interleaved with the running decodes). Which requests a step takes is a
policy (``_urgent``, ``_cheapest``): the most urgent class of work, an answer that is starting
before answers already ahead of their listener, and several decodes in one step only where
that was measured cheaper than a step each (``_calibrate``: on a 2-core CPU it is not, below
about six sequences).

The stepper gives the sequences that took part in the last step a few milliseconds to ask
again before it decodes (each samples its next token in between), so decoding sequences stay
in step; one sequence alone never waits. A failed decode fails only the requests in that step:
on a full KV cache the cells of idle sequences are freed and the step is tried once more;
on any other failure the whole cache is cleared (every sequence starts again from an empty
cache, as a restarted server would) and the stepper goes on.
"""

from __future__ import annotations

import ctypes
import math
import threading
import time
from collections.abc import Sequence as Tokens
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["BatchedContext", "DecodeFailed", "LlmSequence", "common_prefix", "sample"]

TokenIds = Tokens[int] | npt.NDArray[np.intc]

GATHER_SECONDS = 0.004
"""How long the stepper waits for the sequences of its last step to ask again."""
LEAD_TOKENS = 24
"""Tokens after which an answer is ahead of its listener (~6 s of speech at ~4 tokens/s)."""
MAX_SIT_OUT_SECONDS = 0.25
"""Longest an answer that is ahead waits for steps while others start."""
SHARED_STEP_TOKENS = 64
"""Most tokens one step evaluates while several sequences are held (half of it per prompt)."""
MAX_BACKGROUND_WAIT_SECONDS = 1.0
"""Longest less urgent work (a text response beside a caller's turn, a prefill) waits for
steps while more urgent answers decode."""
LOWER_CLASS_PIECE_TOKENS = 8
"""Most prompt tokens a step takes from a response less urgent than the rest of the step (a
text response beside a caller's turn)."""
MAX_WAIT_BESIDE_A_START_SECONDS = 2.5
"""Longest a less urgent response (not a prefill) waits while a more urgent answer is starting
(its prompt, its first ``LEAD_TOKENS`` tokens): the caller hears nothing until that start is
done."""

_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)


class DecodeFailed(RuntimeError):
    """llama.cpp could not evaluate a step (the KV cache is full, or the decode failed)."""


@dataclass
class _Request:
    tokens: list[int]
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    queued: float = field(default_factory=time.monotonic)


class LlmSequence:
    """One sequence of a ``BatchedContext``: what its KV cells hold, its last logits.

    Methods are called from the one thread that acquired it; ``eval`` blocks until the stepper
    has evaluated the tokens. Memory operations run under the context lock, never during a
    decode."""

    def __init__(self, context: BatchedContext, seq_id: int) -> None:
        self.context = context
        self.seq_id = seq_id
        self.tokens: list[int] = []
        """The tokens the KV cache holds for this sequence, at positions 0..n-1."""
        self.logits: npt.NDArray[np.float32] | None = None
        """Logits after the last evaluated token (None before any evaluation)."""
        self.last_used = 0.0
        self.broken = False
        self.background = False
        """Work that only makes later answers faster (a prefill): served after every answer."""
        self.rank = 0
        """How soon its answer is needed, lower first (``ChatRequest.priority``)."""
        self.decoded = 0
        """Single tokens evaluated since the sequence was acquired (the answer's length so far)."""
        """The cache was reset under this sequence's generation: it can only fail now."""

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    def eval(self, tokens: Tokens[int]) -> None:
        """Append ``tokens`` to this sequence and evaluate them (with the other sequences' work).

        Raises ``DecodeFailed`` when the step could not be evaluated; the tokens are then not
        in the cache."""
        if not tokens:
            return
        self.context.evaluate(self, [int(t) for t in tokens])

    def truncate(self, keep: int) -> bool:
        """Keep the first ``keep`` tokens; False when llama.cpp could not (then all are gone)."""
        with self.context.lock:
            if keep >= len(self.tokens):
                return True
            ok = bool(self.context.lc.llama_memory_seq_rm(self.context.memory, self.seq_id, keep, -1))
            if not ok:
                self.context.lc.llama_memory_seq_rm(self.context.memory, self.seq_id, -1, -1)
                self.tokens = []
                self.logits = None
                return False
            del self.tokens[keep:]
            return True

    def clear(self) -> None:
        with self.context.lock:
            self.context.lc.llama_memory_seq_rm(self.context.memory, self.seq_id, -1, -1)
            self.tokens = []
            self.logits = None

    def save_state(self) -> bytes | None:
        """This sequence's KV state (llama.cpp sequence state, no logits)."""
        lc, ctx = self.context.lc, self.context.ctx
        with self.context.lock:
            size = int(lc.llama_state_seq_get_size(ctx, self.seq_id))
            if size <= 0:
                return None
            buf = (ctypes.c_uint8 * size)()
            written = int(lc.llama_state_seq_get_data(ctx, buf, size, self.seq_id))
            return ctypes.string_at(buf, written) if written > 0 else None

    def load_state(self, tokens: npt.NDArray[np.intc], state: bytes) -> bool:
        """Replace this sequence's cache with a saved state holding ``tokens``."""
        lc, ctx = self.context.lc, self.context.ctx
        with self.context.lock:
            lc.llama_memory_seq_rm(self.context.memory, self.seq_id, -1, -1)
            src = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
            if int(lc.llama_state_seq_set_data(ctx, src, len(state), self.seq_id)) == 0:
                self.tokens = []
                self.logits = None
                return False
            self.tokens = [int(t) for t in tokens]
            self.logits = None
            return True

    def share_from(self, other: LlmSequence, prompt: TokenIds, limit: int) -> int:
        """Make this sequence hold the prefix of ``prompt`` (at most ``limit`` tokens) that
        ``other`` holds, sharing its cells; the number of tokens now held (checked under the
        lock: ``other``'s generation may have moved on since it was chosen)."""
        with self.context.lock:
            count = min(common_prefix(other.tokens, prompt), limit)
            memory = self.context.memory
            self.context.lc.llama_memory_seq_rm(memory, self.seq_id, -1, -1)
            self.tokens = []
            self.logits = None
            if count <= 0:
                return 0
            self.context.lc.llama_memory_seq_cp(memory, other.seq_id, self.seq_id, 0, count)
            self.tokens = list(other.tokens[:count])
            return count


class BatchedContext:
    """A llama.cpp context of ``n_seq`` sequences over one model, and the stepper that
    evaluates all of their requests together (see the module doc)."""

    def __init__(
        self,
        model: Any,
        *,
        n_ctx: int,
        n_seq: int,
        n_batch: int,
        n_threads: int,
        n_threads_batch: int,
        prompt_chunk: int = 64,
        verbose: bool = False,
    ) -> None:
        import llama_cpp
        from llama_cpp import _internals

        self.lc: Any = llama_cpp
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = n_seq
        params.kv_unified = True
        params.n_threads = n_threads
        params.n_threads_batch = n_threads_batch
        params.no_perf = True
        self._context: Any = _internals.LlamaContext(model=model, params=params, verbose=verbose)
        self.ctx: Any = self._context.ctx
        self.memory: Any = llama_cpp.llama_get_memory(self.ctx)
        self.n_ctx = int(llama_cpp.llama_n_ctx(self.ctx))
        self.n_batch = n_batch
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model.model)))
        self.prompt_chunk = max(1, prompt_chunk)
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self.lock = threading.RLock()
        """Held by every decode and every memory operation."""
        self.sequences = [LlmSequence(self, i) for i in range(n_seq)]
        self._free = list(self.sequences)
        self._cond = threading.Condition()
        self._pending: dict[int, _Request] = {}
        self._last_step: set[int] = set()
        self._closed = False
        self.steps = 0
        self.batched_steps = 0
        """Steps that evaluated more than one sequence's tokens."""
        self.failed_steps = 0
        self.resets = 0
        """Times the whole cache was cleared after a failed decode."""
        self.min_batch = self._calibrate() if n_seq > 1 else 2
        """Fewest decoding sequences worth one batched step rather than one step each (see
        ``_calibrate``); with fewer, one sequence decodes per step."""
        self._stepper = threading.Thread(target=self._run, name="llm-batch", daemon=True)
        self._stepper.start()

    def _calibrate(self) -> int:
        """Time a one-token step and batched steps of 2 and 4 sequences, and return the
        fewest sequences whose batched step costs less than one step each.

        On a CPU the batched kernels cost a fixed part more than the one-token path (on a
        2-core EPYC with a Q4_K model: 17 ms for one token, 56 ms for two sequences, 75 ms for
        four), so there a few answers decode faster one after another, interleaved step by
        step; where batching is cheap (a GPU) this returns 2."""
        probe = self.sequences[: min(4, self.n_seq)]
        bos = int(self.lc.llama_vocab_bos(self.lc.llama_model_get_vocab(self.lc.llama_get_model(self.ctx))))
        parts = [(s, _Request([bos]), [bos], True) for s in probe]

        def timed(count: int) -> float:
            times = []
            for _ in range(3):
                started = time.perf_counter()
                status = self._decode(parts[:count])
                times.append(time.perf_counter() - started)
                if status != 0:
                    return math.inf
                for sequence, _, chunk, _ in parts[:count]:
                    sequence.tokens.extend(chunk)
            return sorted(times)[1]

        try:
            timed(len(probe))  # warm the batched kernels up
            one, two, four = timed(1), timed(2), timed(len(probe))
        finally:
            self.lc.llama_memory_clear(self.memory, True)
            for sequence in self.sequences:
                sequence.tokens = []
        per_token = max(0.0, (four - two) / max(1, len(probe) - 2))
        fixed = two - 2 * per_token
        for count in range(2, 65):
            if fixed + per_token * count <= count * one:
                return count
        return 65

    @property
    def n_seq(self) -> int:
        return len(self.sequences)

    # ------------------------------------------------------------------ sequences

    def acquire(self, prompt: TokenIds | None = None, *, timeout: float | None = None) -> LlmSequence | None:
        """A free sequence, preferring the one whose cache shares the longest prefix with
        ``prompt`` (a session's next turn lands where its last one is cached); None after
        ``timeout`` seconds without one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._free:
                left = None if deadline is None else deadline - time.monotonic()
                if self._closed or (left is not None and left <= 0):
                    return None
                self._cond.wait(left)
            wanted: TokenIds = () if prompt is None else prompt
            best = max(self._free, key=lambda s: (common_prefix(s.tokens, wanted), -s.last_used))
            if not common_prefix(best.tokens, wanted):
                # nothing shared: take an empty one, else the least recently used
                best = min(self._free, key=lambda s: (bool(s.tokens), s.last_used))
            self._free.remove(best)
            best.last_used = time.monotonic()
            best.decoded = 0
            best.background = False
            best.rank = 0
            return best

    def release(self, sequence: LlmSequence) -> None:
        with self._cond:
            sequence.last_used = time.monotonic()
            sequence.broken = False
            if sequence not in self._free:
                self._free.append(sequence)
            self._last_step.discard(sequence.seq_id)
            self._cond.notify_all()

    def longest_shared(
        self, prompt: TokenIds, exclude: LlmSequence | None = None
    ) -> tuple[LlmSequence | None, int]:
        """The other sequence whose cache shares the longest prefix with ``prompt``."""
        best: LlmSequence | None = None
        length = 0
        with self.lock:
            for sequence in self.sequences:
                if sequence is exclude:
                    continue
                n = common_prefix(sequence.tokens, prompt)
                if n > length:
                    best, length = sequence, n
        return best, length

    def set_threads(self, n_threads: int, n_threads_batch: int) -> None:
        with self.lock:
            self.lc.llama_set_n_threads(self.ctx, n_threads, n_threads_batch)

    # ------------------------------------------------------------------ stepping

    def evaluate(self, sequence: LlmSequence, tokens: list[int]) -> None:
        request = _Request(tokens)
        with self._cond:
            if self._closed:
                raise DecodeFailed("the LLM context is closed")
            if sequence.broken:
                raise DecodeFailed("the LLM cache was reset during this generation")
            self._pending[sequence.seq_id] = request
            self._cond.notify_all()
        request.done.wait()
        if request.error is not None:
            raise request.error

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    for request in self._pending.values():
                        request.error = DecodeFailed("the LLM context is closed")
                        request.done.set()
                    self._pending.clear()
                    return
                deadline = time.monotonic() + GATHER_SECONDS
                while len(self._pending) < self.min_batch:  # else: enough to step at once
                    busy = {s.seq_id for s in self.sequences if s not in self._free}
                    expected = (self._last_step & busy) - self._pending.keys()
                    left = deadline - time.monotonic()
                    if not expected or left <= 0:
                        break
                    self._cond.wait(left)
                work = dict(self._pending)
            if not self._step(work):
                with self._cond:  # everything waiting defers to a more urgent generation
                    self._cond.wait(GATHER_SECONDS)

    def _step(self, work: dict[int, _Request]) -> bool:
        """Evaluate one batch: every single-token request, then prompt chunks while they fit;
        answers well ahead of their listener sit out while a new one starts (``_urgent``), and
        fewer than ``min_batch`` decoding sequences take one step each (``_cheapest``)."""
        chosen = self._urgent(work)
        if not chosen:
            return False
        order = sorted(
            self._cheapest(chosen).items(),
            key=lambda item: (len(item[1].tokens) > 1, item[1].queued),
        )
        parts: list[tuple[LlmSequence, _Request, list[int], bool]] = []
        # a step blocks every sequence until it ends: while others wait, prompts go in smaller
        # pieces (a step of 64 prompt tokens takes ~0.4 s on one 2-core EPYC thread)
        alone = len(self.sequences) - len(self._free) <= 1
        budget = self.n_batch if alone else SHARED_STEP_TOKENS
        piece = self.prompt_chunk if alone else SHARED_STEP_TOKENS // 2
        top = min(self._rank(k) for k, _ in order)
        for seq_id, request in order:
            if budget <= 0:
                break
            # work let in beside a more urgent one only after waiting (``_urgent``) goes in
            # small pieces, so that it delays the urgent one by little
            lower = self._rank(seq_id) > top and not self.sequences[seq_id].background
            size = LOWER_CLASS_PIECE_TOKENS if lower else piece
            take = min(len(request.tokens), budget, size if len(request.tokens) > 1 else 1)
            parts.append(
                (self.sequences[seq_id], request, request.tokens[:take], take == len(request.tokens))
            )
            budget -= take
        try:
            with self.lock:
                status = self._decode(parts)
                if status == 1:
                    self._free_idle_cells()
                    status = self._decode(parts)
                if status != 0:
                    raise DecodeFailed(f"llama_decode returned {status}")
                finished: list[_Request] = []
                index = -1
                for sequence, request, chunk, last in parts:
                    index += len(chunk)  # logits rows are addressed by batch position
                    sequence.tokens.extend(chunk)
                    if len(chunk) == 1 and last:
                        sequence.decoded += 1
                    if last:
                        row = self.lc.llama_get_logits_ith(self.ctx, index)
                        sequence.logits = np.ctypeslib.as_array(row, shape=(self.n_vocab,)).copy()
                        finished.append(request)
                    else:
                        del request.tokens[: len(chunk)]
        except BaseException as exc:  # a failed step fails its requests, never the stepper
            self.failed_steps += 1
            failure = exc if isinstance(exc, DecodeFailed) else DecodeFailed(f"decode failed: {exc!r}")
            full = isinstance(exc, DecodeFailed) and str(exc).endswith("returned 1")
            with self._cond:
                if full:  # llama.cpp restored the cache: only this step's requests fail
                    failed = [(s.seq_id, r) for s, r, _, _ in parts]
                else:  # the cache is in an unknown state: every generation in flight fails
                    failed = list(self._pending.items())
                    self._reset()
                for seq_id, request in failed:
                    self._pending.pop(seq_id, None)
                    request.error = failure
                    request.done.set()
                self._last_step = set()
            return True
        self.steps += 1
        if len(parts) > 1:
            self.batched_steps += 1
        with self._cond:
            self._last_step = {sequence.seq_id for sequence, _, _, _ in parts}
            for request in finished:
                for seq_id, pending in list(self._pending.items()):
                    if pending is request:
                        del self._pending[seq_id]
                request.done.set()
        return True

    def _urgent(self, work: dict[int, _Request]) -> dict[int, _Request]:
        """The requests this step serves. On a CPU a step costs about as much per sequence as
        alone, so every sequence in it slows the others. So only the most urgent class of
        work present is served (``LlmSequence.rank``: a caller's turn before a text response;
        background work such as a prefill last), and within it, while an answer is starting
        (its prompt, its first ``LEAD_TOKENS`` tokens, which its first spoken clause waits
        for), answers already ``LEAD_TOKENS`` ahead (seconds of speech their listener has not
        heard yet) sit out. The class counts while its generation holds a sequence, asking or
        not (between two of its steps it samples). Whatever sits out is served anyway once it
        has waited ``MAX_SIT_OUT_SECONDS`` (an answer that is ahead) or
        ``MAX_BACKGROUND_WAIT_SECONDS`` (a lower class; ``MAX_WAIT_BESIDE_A_START_SECONDS``
        while an answer of the top class is starting); the result may be empty (wait)."""
        now = time.monotonic()
        with self._cond:
            held = [s for s in self.sequences if s not in self._free and not s.background]
        foreground = {k: r for k, r in work.items() if not self.sequences[k].background}
        if not held and not foreground:
            return work
        top = min([s.rank for s in held] + [self.sequences[k].rank for k in foreground])
        first = {k: r for k, r in foreground.items() if self.sequences[k].rank == top}
        starting = {
            k: r for k, r in first.items() if self.sequences[k].decoded < LEAD_TOKENS or len(r.tokens) > 1
        }
        # a held answer of the top class that has not decoded its first tokens yet (it may be
        # sampling between two steps, so it is not always in ``work``)
        top_starting = any(s.rank == top and s.decoded < LEAD_TOKENS for s in held)
        lower_limit = MAX_WAIT_BESIDE_A_START_SECONDS if top_starting else MAX_BACKGROUND_WAIT_SECONDS
        serve = dict(starting or first)
        for k, r in work.items():
            if k in first:
                limit = MAX_SIT_OUT_SECONDS
            elif self.sequences[k].background:  # a prefill readies a later turn: not held longer
                limit = MAX_BACKGROUND_WAIT_SECONDS
            else:
                limit = lower_limit
            if k not in serve and now - r.queued >= limit:
                serve[k] = r
        return serve

    def _rank(self, seq_id: int) -> float:
        sequence = self.sequences[seq_id]
        return math.inf if sequence.background else float(sequence.rank)

    def _cheapest(self, work: dict[int, _Request]) -> dict[int, _Request]:
        """All of ``work`` when a batched step pays (the most urgent class has a prompt chunk
        in it, or at least ``min_batch`` sequences decode), else the one decoding sequence that
        is most urgent: the most urgent class, an answer still starting before one that is
        ahead, then the longest waiting."""

        def urgency(k: int) -> tuple[float, bool, float]:
            return (self._rank(k), self.sequences[k].decoded >= LEAD_TOKENS, work[k].queued)

        top = min(urgency(k)[0] for k in work)
        prompt = any(len(r.tokens) > 1 for k, r in work.items() if urgency(k)[0] == top)
        if prompt or len(work) >= self.min_batch:
            return work
        first = min(work, key=urgency)
        return {first: work[first]}

    def _decode(self, parts: list[tuple[LlmSequence, _Request, list[int], bool]]) -> int:
        batch = self._batch
        i = 0
        for sequence, _, chunk, last in parts:
            start = len(sequence.tokens)
            for j, token in enumerate(chunk):
                batch.token[i] = token
                batch.pos[i] = start + j
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = sequence.seq_id
                batch.logits[i] = last and j == len(chunk) - 1
                i += 1
        batch.n_tokens = i
        return int(self.lc.llama_decode(self.ctx, batch))

    def _free_idle_cells(self) -> None:
        """Free the cells of sequences no generation holds (their caches are only a hope)."""
        with self._cond:  # held throughout: none of them may be acquired meanwhile
            for sequence in self._free:
                if sequence.tokens:
                    sequence.clear()

    def _reset(self) -> None:
        """After a failed decode the cache's state is unknown: start every sequence afresh.
        A generation holding a sequence now fails at its next evaluation (its prompt is gone);
        the next acquirer starts from an empty cache."""
        with self.lock:
            self.lc.llama_memory_clear(self.memory, True)
            self.resets += 1
            for sequence in self.sequences:
                sequence.tokens = []
                sequence.logits = None
                sequence.broken = sequence not in self._free

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._stepper.join(timeout=5)
        with self.lock:
            self.lc.llama_batch_free(self._batch)
            self._context.close()


def sample(sampler: Any, logits: npt.NDArray[np.float32]) -> int:
    """Sample one token from ``logits`` with a llama.cpp sampler chain and accept it (what
    ``llama_sampler_sample`` does, from logits kept after the step instead of the context's)."""
    import llama_cpp

    data = np.empty(len(logits), dtype=_TOKEN_DATA)
    data["id"] = np.arange(len(logits), dtype=np.int32)
    data["logit"] = logits
    data["p"] = 0.0
    candidates = llama_cpp.llama_token_data_array(
        data=data.ctypes.data_as(llama_cpp.llama_token_data_p),
        size=len(logits),
        selected=-1,
        sorted=False,
    )
    llama_cpp.llama_sampler_apply(sampler.sampler, ctypes.byref(candidates))
    if not 0 <= candidates.selected < candidates.size:
        raise RuntimeError("the sampler selected no token")
    token = int(candidates.data[candidates.selected].id)
    llama_cpp.llama_sampler_accept(sampler.sampler, token)
    return token


def common_prefix(a: TokenIds, b: TokenIds) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n
