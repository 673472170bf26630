"""The embedded LLM: a GGUF model run in-process by llama.cpp (llama-cpp-python).

One ``LlamaCppModel`` is shared by every session. Its context holds ``parallel`` sequences
(``batching.py``): up to that many generations run at once, each step evaluating the pending
tokens of those its policy picks in one batch (continuous batching: a new prompt is evaluated
in chunks between the running decodes; the more urgent class first). ``generate`` holds a
sequence from its first ``next()`` until the stream ends or is closed; with all of them held,
it waits. Drain or ``close()`` every stream (the runtime does); a stream abandoned half-way
keeps its sequence until it is garbage collected.

Latency is dominated by prompt processing, so prompts are reused at three levels:

* the live KV cache: a new prompt that shares a prefix with what a sequence holds (the same
  session's next turn lands on the sequence its last turn used) only evaluates the new suffix;
* another sequence's cache: a prefix another generation evaluated (the same instructions and
  tools) is shared cell by cell (``llama_memory_seq_cp``), not evaluated again;
* a RAM cache of KV snapshots (llama.cpp sequence state, without the logits that
  ``LlamaRAMCache`` would also copy): before a sequence's cache is overwritten by a different
  conversation, its state is saved keyed by its tokens; a later prompt that shares a longer
  prefix with a snapshot than with any live cache restores it. A stable system prompt and tool
  list therefore stay warm across sessions.

``GenerationDone.cached_prompt_tokens`` is exactly the number of prompt tokens that were not
evaluated again (llama.cpp always re-evaluates at least the last prompt token to get logits).

Tool calls (profiles whose chat template renders tools and whose vocabulary has a single
``<tool_call>`` token, i.e. Qwen2.5; SmolLM2 has no tool support, tools are ignored and it
answers in text). The tools are rendered by the model's own template, so the decision is the
model's, read at the first answer token:

1. *Intent*: the probability that the first token starts a call in any form the model uses
   (``<tool_call>``, bare JSON ``{"``, a code fence). Below ``tool_threshold`` the answer is
   text, streamed from the first token with no buffering (call and markup tokens are banned at
   that first position). The threshold is calibrated by ``bench/tool_accuracy.py``.
2. *Name*: the model writes the function name freely and it is mapped to the closest real
   tool (small models write ``track_order`` for ``lookup_order``).
3. *Arguments*: written greedily under a GBNF grammar built from that tool's JSON schema, so
   they always parse and fit the schema's shape.
4. *Plausibility* (``auto`` only): a call whose required arguments do not come from what the
   user said, or that repeats a function called since the user last spoke, is dropped and
   the model answers in words instead (``tool_calling.ungrounded_arguments``), after a short
   system note to reply in plain words (``NO_TOOL_GUIDANCE``): a model that wanted a call and
   is made to write words otherwise tends to write the call in words ("Tools: get_weather").

Text answers go out through a ``LeakGuard`` (``engines/llm/leaks.py``): tool names, call JSON,
talk about functions, system-prompt sentences and template tokens are caught before they are
emitted, taken back out of the KV cache and written differently (``bench/answer_leaks.py``
measures how often).

Calls are emitted only once complete. ``required`` and a named ``tool_choice`` skip steps 1,
4 (and 2 for a named one). ``max_tool_calls`` (default 1) bounds calls per response: small
models asked for more tend to repeat the first.
"""

from __future__ import annotations

import codecs
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from openrealtime.engines import assets
from openrealtime.engines.base import (
    CancelToken,
    ChatMessage,
    ChatRequest,
    GenerationDone,
    LLMEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
)
from openrealtime.engines.llm.batching import BatchedContext, LlmSequence, common_prefix, sample
from openrealtime.engines.llm.leaks import SAFE_ANSWER, Leak, LeakGuard
from openrealtime.engines.llm.tool_calling import (
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    closest_tool_name,
    forced_tool_name,
    parse_tool_call,
    to_chat_messages,
    to_chat_tools,
    tool_call_gbnf,
    ungrounded_arguments,
)

__all__ = [
    "DEFAULT_PROFILE",
    "DEFAULT_TOOL_THRESHOLD",
    "PROFILES",
    "GenerationStats",
    "LlamaCppModel",
    "LlamaProfile",
]

Tokens = npt.NDArray[np.intc]
FinishReason = Literal["stop", "length", "tool_calls", "cancelled"]


@dataclass(frozen=True)
class LlamaProfile:
    """A named embedded model: its weights, whether it may call tools, and its calibration.

    ``tool_threshold`` is the call intent above which ``auto`` calls, chosen per model with
    ``bench/tool_accuracy.py`` (the 1.5B model is more reluctant to start a call than the 0.5B).
    """

    name: str
    asset: str
    tools: bool
    description: str
    tool_threshold: float = 0.05


PROFILES: dict[str, LlamaProfile] = {
    p.name: p
    for p in (
        LlamaProfile(
            "qwen2.5-0.5b", "qwen2.5-0.5b", True, "Qwen2.5-Coder-0.5B-Instruct Q4_K_M: default", 0.05
        ),
        LlamaProfile(
            "qwen2.5-1.5b", "qwen2.5-1.5b", True, "Qwen2.5-Coder-1.5B-Instruct Q4_K_M: quality", 0.02
        ),
        LlamaProfile(
            "smollm2-135m", "smollm2-135m", False, "SmolLM2-135M-Instruct Q4_1: fast tests, no tools"
        ),
    )
}
DEFAULT_PROFILE = "qwen2.5-0.5b"
DEFAULT_TOOL_THRESHOLD = 0.05
"""Call-intent threshold for a GGUF given by path (profiles carry their own)."""

RESULT_GUIDANCE = "Answer the user's question from the function result above, in plain words."
"""System turn placed after a function result that ends the prompt."""
NO_TOOL_GUIDANCE = "Now reply to the user yourself, in plain spoken words."
"""System turn added when the model reached for a call that was dropped as implausible, or
that ``tool_choice: "none"`` does not allow: the prompt still lists the tools, and without it
the model tends to name the tool in words or write JSON talk. It
does not mention functions: a note saying none fits made the model say so ("there is no
function that fits the last message")."""
_MAX_LEAK_RETRIES = 4
"""Leaks taken back and rewritten per answer before it ends (see ``_text``)."""

_PROMPT_CHUNK = 64
"""Prompt tokens evaluated between cancellation checks."""
_PREFILL_CHUNK = 16
"""Prompt tokens a background prefill evaluates between cancellation checks: a committed turn
waits for at most this many (64 kept a turn waiting 4.1 s at load ~6, where one thread
evaluated ~15 tokens a second)."""
_SNAPSHOT_MIN_TOKENS = 48
"""Only snapshot live KV state whose discarded part is at least this long."""
_RESTORE_MIN_GAIN = 32
"""Restore a snapshot only when it saves at least this many tokens over the live cache."""
_MAX_NAME_TOKENS = 12
_MAX_CALL_TOKENS = 384
"""A call's JSON never needs more; stops a model looping inside a string."""


@dataclass(frozen=True)
class GenerationStats:
    """Timings of the last generation, for benchmarks and logs."""

    prompt_tokens: int
    cached_prompt_tokens: int
    cache_source: Literal["none", "live", "ram"]
    prompt_seconds: float
    first_token_seconds: float | None
    completion_tokens: int
    decode_seconds: float
    tool_probability: float | None


# --------------------------------------------------------------------------- helpers


class _StateCache:
    """LRU of llama.cpp sequence-state snapshots keyed by the tokens they contain."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self._entries: OrderedDict[bytes, tuple[Tokens, bytes]] = OrderedDict()

    @property
    def size(self) -> int:
        return sum(len(state) for _, state in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def best(self, tokens: Tokens) -> tuple[Tokens, bytes, int] | None:
        found: tuple[bytes, int] | None = None
        for key, (keyed, _) in self._entries.items():
            length = common_prefix(keyed, tokens)
            if length > 0 and (found is None or length > found[1]):
                found = (key, length)
        if found is None:
            return None
        self._entries.move_to_end(found[0])
        keyed, state = self._entries[found[0]]
        return keyed, state, found[1]

    def covers(self, tokens: Tokens) -> bool:
        """Whether a snapshot already holds all of ``tokens``."""
        return any(
            len(keyed) >= len(tokens) and common_prefix(keyed, tokens) == len(tokens)
            for keyed, _ in self._entries.values()
        )

    def put(self, tokens: Tokens, state: bytes) -> None:
        if len(state) > self.capacity_bytes:
            return
        # A snapshot whose tokens are a prefix of the new one can never be the better match.
        for key in [
            k for k, (keyed, _) in self._entries.items() if common_prefix(keyed, tokens) == len(keyed)
        ]:
            del self._entries[key]
        self._entries[tokens.tobytes()] = (tokens.copy(), state)
        while self.size > self.capacity_bytes and self._entries:
            self._entries.popitem(last=False)


def _sandboxed_template(source: str) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    def tojson(value: Any, indent: int | None = None) -> str:
        # Hugging Face semantics (unsorted keys, no HTML escaping), not Jinja's default.
        return json.dumps(value, ensure_ascii=False, indent=indent)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


# --------------------------------------------------------------------------- the engine


class LlamaCppModel:
    """A ``LanguageModel`` running a GGUF model on the CPU.

    ``model`` is a profile name (see ``PROFILES``) or a path to any local GGUF file.
    ``n_threads`` defaults to 1: on a small shared CPU, more threads contend with ASR/TTS and
    stall decoding. ``tool_threshold`` overrides the profile's calibrated call-intent threshold;
    ``tool_guidance`` (off by default: it made the 0.5B model call on greetings) is appended to
    the system prompt when tools are offered. ``result_guidance`` follows a function result that
    ends the prompt as a short system turn: without it the 0.5B model described the result's
    JSON instead of answering from it in one reply in five; appended at the end, it keeps the
    cached prompt prefix intact. ``seed`` fixes sampling (each generation starts
    from the same seed, so equal prompts give equal answers); None draws a fresh one.
    ``guard_leaks`` (default on) keeps scaffolding out of text answers (see the module doc).
    ``parallel`` generations decode together (see the module doc); their caches share
    ``kv_tokens`` cells (default: ``n_ctx`` each, at most 16384 in all unless ``n_ctx`` is larger),
    each sequence up to ``n_ctx``.
    """

    def __init__(
        self,
        model: str | Path = DEFAULT_PROFILE,
        *,
        n_threads: int = 1,
        n_threads_batch: int | None = None,
        n_ctx: int = 8192,
        n_batch: int = 256,
        parallel: int = 1,
        kv_tokens: int | None = None,
        seed: int | None = None,
        model_dir: Path | None = None,
        ram_cache_bytes: int = 256 << 20,
        tool_threshold: float | None = None,
        tool_guidance: str | None = None,
        result_guidance: str | None = RESULT_GUIDANCE,
        max_tool_calls: int = 1,
        chat_template: str | None = None,
        tools: bool | None = None,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        guard_leaks: bool = True,
        verbose: bool = False,
    ) -> None:
        import llama_cpp
        from llama_cpp import _internals

        profile = PROFILES.get(str(model))
        if profile is not None:
            path = assets.resolve(profile.asset, model_dir)
            self.name = profile.name
        else:
            path = Path(model).expanduser()
            if not path.is_file():
                known = ", ".join(PROFILES)
                raise FileNotFoundError(f"{model!r} is neither a model profile ({known}) nor a GGUF file")
            self.name = path.stem
        self.model_path = path
        self.n_threads = n_threads
        self.seed = seed
        self.tool_threshold: float = (
            tool_threshold
            if tool_threshold is not None
            else profile.tool_threshold
            if profile is not None
            else DEFAULT_TOOL_THRESHOLD
        )
        self.tool_guidance = tool_guidance
        self.result_guidance = result_guidance
        self.max_tool_calls = max_tool_calls
        self.guard_leaks = guard_leaks
        self.steer_dropped_calls = True
        """Add ``NO_TOOL_GUIDANCE`` before the words that replace a dropped call (with
        ``guard_leaks``; off only to measure the guard alone)."""
        self.leak_stats: dict[str, int] = {"steered": 0, "regenerated": 0, "fallback": 0}
        """How often answers were steered to words, had a leak taken back, or fell back."""
        self._preamble: str | None = None
        self._sampling = (top_k, top_p, min_p)
        from llama_cpp._logger import set_verbose

        set_verbose(verbose)
        llama_cpp.llama_backend_init()
        self._model: Any = _internals.LlamaModel(
            path_model=str(path), params=llama_cpp.llama_model_default_params(), verbose=verbose
        )
        self.parallel = max(1, parallel)
        # every sequence may grow to n_ctx; together they share at most 16384 cells (or 2 * n_ctx)
        # unless told: idle sequences' caches are freed when a step needs their cells
        total = kv_tokens or (
            n_ctx if self.parallel == 1 else min(n_ctx * self.parallel, max(2 * n_ctx, 16384))
        )
        self._batch = BatchedContext(
            self._model,
            n_ctx=total,
            n_seq=self.parallel,
            n_batch=n_batch,
            n_threads=n_threads,
            n_threads_batch=n_threads_batch or n_threads,
            prompt_chunk=_PROMPT_CHUNK,
            verbose=verbose,
        )
        self.n_ctx: int = min(n_ctx, self._batch.n_ctx)
        self._n_vocab: int = int(self._model.n_vocab())
        self._vocab: Any = self._model.vocab
        self._metadata: dict[str, str] = self._model.metadata()
        self._cache = _StateCache(ram_cache_bytes)
        self._cache_lock = threading.Lock()
        self.last_generation: GenerationStats | None = None
        self._call_start_ids: npt.NDArray[np.intp] | None = None
        self._text_ban_ids: npt.NDArray[np.intp] | None = None
        self._syntax_ids: npt.NDArray[np.intp] | None = None

        self._lc: Any = llama_cpp
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self._bos: int = int(self._model.token_bos())
        source = chat_template or self._metadata.get("tokenizer.chat_template")
        if not source:
            raise ValueError(f"{path} has no chat template; pass chat_template=")
        self._template = _sandboxed_template(source)
        self._bos_text = self._token_text(self._bos)
        self._eos_text = self._token_text(int(self._model.token_eos()))
        self._tool_open = self._single_token(TOOL_CALL_OPEN)
        template_has_tools = "tools" in source
        can_call = template_has_tools and self._tool_open is not None
        wanted = profile.tools if profile is not None else can_call
        self.supports_tools: bool = bool(wanted if tools is None else tools) and can_call
        if self.supports_tools:
            self._call_starts()

    # ------------------------------------------------------------------ tokens

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return bytes(self._model.detokenize([token], special=True)).decode("utf-8", "replace")

    def _tokenize(self, text: str, *, special: bool = True) -> list[int]:
        return list(self._model.tokenize(text.encode("utf-8"), add_bos=False, special=special))

    def _single_token(self, text: str) -> int | None:
        ids = self._tokenize(text)
        return ids[0] if len(ids) == 1 else None

    def set_threads(self, n_threads: int, n_threads_batch: int) -> None:
        """Change decode / prompt-evaluation threads between generations (the scheduler gives
        prompt evaluation more threads when no other engine needs the CPU)."""
        self._batch.set_threads(n_threads, n_threads_batch)

    def batch_stats(self) -> dict[str, int]:
        """Decode steps so far: all, those that evaluated several sequences, failed ones, and
        how often the whole cache was cleared after a failure."""
        b = self._batch
        return {"steps": b.steps, "batched": b.batched_steps, "failed": b.failed_steps, "resets": b.resets}

    def count_tokens(self, text: str) -> int:
        """Exact count in this model's tokenizer (special-token text counted as plain text)."""
        return len(self._tokenize(text, special=False)) if text else 0

    # ------------------------------------------------------------------ prompt

    def _render(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec], *, generation_prompt: bool = True
    ) -> str:
        chat = to_chat_messages(messages, arguments_as_object=True)
        if tools and self.tool_guidance:
            if chat and chat[0]["role"] == "system":
                chat[0] = {**chat[0], "content": f"{chat[0]['content']}\n\n{self.tool_guidance}".strip()}
            else:
                chat.insert(0, {"role": "system", "content": self.tool_guidance})
        if self.result_guidance and messages and messages[-1].role == "tool":
            chat.append({"role": "system", "content": self.result_guidance})
        rendered: str = self._template.render(
            messages=chat,
            tools=to_chat_tools(tools) if tools else None,
            add_generation_prompt=generation_prompt,
            bos_token=self._bos_text,
            eos_token=self._eos_text,
        )
        return rendered

    def _prompt(self, request: ChatRequest, tools: Sequence[ToolSpec], reserve: int) -> Tokens | None:
        """The prompt's tokens; the oldest turns are dropped when it would not fit."""
        messages = list(request.messages)
        while True:
            ids = self._tokenize(self._render(messages, tools))
            if self._add_bos and (not ids or ids[0] != self._bos):
                ids.insert(0, self._bos)
            if len(ids) + reserve <= self.n_ctx:
                return np.asarray(ids, dtype=np.intc)
            first = next((i for i, m in enumerate(messages) if m.role != "system"), None)
            if first is None or first == len(messages) - 1:
                return None
            del messages[first]
            # A tool result without its call confuses templates: drop it with its call.
            while first < len(messages) - 1 and messages[first].role == "tool":
                del messages[first]

    # ------------------------------------------------------------------ KV cache

    def _snapshot(self, seq: LlmSequence) -> None:
        tokens = np.asarray(seq.tokens, dtype=np.intc)
        with self._cache_lock:
            if len(tokens) == 0 or self._cache.covers(tokens):
                return
        state = seq.save_state()
        if state is not None:
            with self._cache_lock:
                self._cache.put(tokens, state)

    def _prepare(self, seq: LlmSequence, prompt: Tokens) -> tuple[int, Literal["none", "live", "ram"]]:
        """Bring the longest reusable prefix of ``prompt`` into ``seq``'s cache: its own cache,
        another sequence's (shared cells) or a RAM snapshot. Return the prefix's length."""
        live = common_prefix(np.asarray(seq.tokens, dtype=np.intc), prompt)
        source: Literal["none", "live", "ram"] = "live" if live else "none"
        other, shared = self._batch.longest_shared(prompt, exclude=seq)
        with self._cache_lock:
            best = self._cache.best(prompt)
        if other is not None and shared >= live + _RESTORE_MIN_GAIN and shared >= (best[2] if best else 0):
            if seq.n_tokens - live >= _SNAPSHOT_MIN_TOKENS:
                self._snapshot(seq)
            live = seq.share_from(other, prompt, len(prompt) - 1)
            source = "live" if live else "none"
        elif best is not None and best[2] >= live + _RESTORE_MIN_GAIN:
            if seq.n_tokens - live >= _SNAPSHOT_MIN_TOKENS:
                self._snapshot(seq)
            if seq.load_state(best[0], best[1]):
                live, source = best[2], "ram"
            else:
                live, source = 0, "none"
        elif seq.n_tokens - live >= _SNAPSHOT_MIN_TOKENS:
            self._snapshot(seq)
        reuse = min(live, len(prompt) - 1)
        if reuse <= 0:
            seq.clear()
            return 0, "none"
        if not seq.truncate(reuse):
            return 0, "none"
        return reuse, source

    # ------------------------------------------------------------------ sampling

    def _sampler(
        self, *, temperature: float, bias: dict[int, float] | None = None, grammar: str | None = None
    ) -> Any:
        from llama_cpp import _internals
        from llama_cpp.llama_grammar import LlamaGrammar

        # The sampler chain wrapper is untyped; keep it behind Any.
        sampler_class: Any = _internals.LlamaSampler
        sampler = sampler_class()
        if bias:
            sampler.add_logit_bias(self._n_vocab, bias)
        if grammar is not None:
            sampler.add_grammar(self._model, LlamaGrammar.from_string(grammar, verbose=False))
        if temperature <= 0:
            sampler.add_greedy()
        else:
            top_k, top_p, min_p = self._sampling
            sampler.add_top_k(top_k)
            sampler.add_top_p(top_p, 1)
            sampler.add_min_p(min_p, 1)
            sampler.add_temp(temperature)
            sampler.add_dist(self.seed if self.seed is not None else 0xFFFFFFFF)
        return sampler

    def _probabilities(self, seq: LlmSequence) -> npt.NDArray[np.float64]:
        logits = seq.logits
        if logits is None:
            raise RuntimeError("no logits: nothing was evaluated")
        p: npt.NDArray[np.float64] = np.exp(logits.astype(np.float64) - float(logits.max()))
        p /= p.sum()
        return p

    def _call_starts(self) -> npt.NDArray[np.intp]:
        """Tokens that begin a tool call in any form the model uses (tag, bare JSON, code fence)."""
        if self._call_start_ids is None:
            starts: list[int] = []
            syntax: list[int] = []
            silent: list[int] = []
            for t in range(self._n_vocab):
                text = self._token_text(t).lstrip()
                if text.startswith(("{", "`", TOOL_CALL_OPEN)):
                    starts.append(t)
                elif not text or self._lc.llama_vocab_is_eog(self._vocab, t):
                    # end-of-generation tokens look like markup (``<|im_end|>``) but must stay
                    # allowed after the first token, or a text answer could never end
                    silent.append(t)
                elif any(c in text for c in "{}`") or text.startswith(("<", ">")):
                    syntax.append(t)
            self._call_start_ids = np.asarray(starts, dtype=np.intp)
            self._syntax_ids = np.asarray(starts + syntax, dtype=np.intp)
            self._text_ban_ids = np.asarray(starts + syntax + silent, dtype=np.intp)
        return self._call_start_ids

    def _text_ban(self) -> npt.NDArray[np.intp]:
        """First-token ban once the decision is 'text': no call, no markup, no empty answer."""
        self._call_starts()
        assert self._text_ban_ids is not None
        return self._text_ban_ids

    def _call_intent(self, seq: LlmSequence) -> float:
        """Probability that the answer's first token starts a tool call."""
        return float(self._probabilities(seq)[self._call_starts()].sum())

    def _is_end(self, token: int) -> bool:
        return bool(
            self._lc.llama_vocab_is_eog(self._vocab, token)
            or self._lc.llama_vocab_is_control(self._vocab, token)
        )

    def _eval(self, seq: LlmSequence, tokens: Sequence[int]) -> bool:
        """Evaluate ``tokens``; False (nothing done) when they would overflow the context.

        Raises ``DecodeFailed`` when the step failed (the response fails; see batching.py)."""
        if seq.n_tokens + len(tokens) > self.n_ctx:
            return False
        seq.eval(tokens)
        return True

    def _sample(self, sampler: Any, seq: LlmSequence) -> int:
        logits = seq.logits
        if logits is None:
            raise RuntimeError("no logits: nothing was evaluated")
        return sample(sampler, logits)

    def prefill(
        self,
        request: ChatRequest,
        cancel: CancelToken,
        *,
        keep: bool = True,
        threads: Callable[[], int] | None = None,
        chunk: int = _PREFILL_CHUNK,
    ) -> int:
        """Evaluate the prompt prefix ``request`` renders (its messages and tools, no
        generation prompt), so a later prompt that starts with it evaluates only the rest; the
        number of tokens evaluated (0 when already cached). ``keep`` also saves it as a
        snapshot (a session's instructions and tools, which every turn reuses); without it,
        it stays in the live cache only (a turn's words so far, soon outdated). ``threads``,
        asked before every chunk, says how many threads may evaluate it (the CPU's load
        changes while a long prefix is evaluated). ``chunk``: tokens evaluated between checks
        of ``cancel`` (a turn that needs the engine waits for at most one chunk)."""
        if cancel.cancelled:
            return 0  # given up before it started: the caches are left as they are
        tools = request.tools if self.supports_tools else ()
        ids = self._tokenize(self._render(request.messages, tools, generation_prompt=False))
        if self._add_bos and (not ids or ids[0] != self._bos):
            ids.insert(0, self._bos)
        prefix = np.asarray(ids, dtype=np.intc)
        with self._cache_lock:
            covered = self._cache.covers(prefix)
        if len(prefix) < 2 or len(prefix) + 256 > self.n_ctx or covered:
            return 0
        if self._batch.longest_shared(prefix)[1] >= len(prefix):
            return 0  # a sequence's cache holds it already
        seq = self._acquire(prefix, cancel)
        if seq is None:
            return 0
        seq.background = True
        try:
            cached, _ = self._prepare(seq, prefix)
            used = 0
            try:
                for offset in range(cached, len(prefix), chunk):
                    if cancel.cancelled:
                        return offset - cached
                    wanted = threads() if threads is not None else 0
                    if wanted and wanted != used:
                        self._batch.set_threads(self.n_threads, wanted)
                        used = wanted
                    self._eval(seq, prefix[offset : offset + chunk].tolist())
            finally:
                if used:
                    self._batch.set_threads(self.n_threads, self.n_threads)
            if keep:
                self._snapshot(seq)
            return len(prefix) - cached
        finally:
            self._batch.release(seq)

    def _acquire(self, prompt: Tokens, cancel: CancelToken, rank: int = 0) -> LlmSequence | None:
        """A sequence for ``prompt`` (waiting while all are busy); None once ``cancel`` is set.
        ``rank``: how soon the answer is needed (``ChatRequest.priority``), lower first."""
        while True:
            seq = self._batch.acquire(prompt, timeout=0.05)
            if seq is not None:
                seq.rank = rank
                return seq
            if cancel.cancelled:
                return None

    # ------------------------------------------------------------------ generation

    def generate(self, request: ChatRequest, cancel: CancelToken) -> Iterator[LLMEvent]:
        """Stream text or complete tool calls; ends with exactly one ``GenerationDone``.

        Holds one of the ``parallel`` sequences for the stream's whole life (see the module
        doc); with all of them held, it waits for one.
        """
        started = time.perf_counter()
        tools = request.tools if self.supports_tools else ()
        reserve = min(request.max_output_tokens or 256, 1024)
        prompt = self._prompt(request, tools, reserve)
        if prompt is None:
            yield GenerationDone("length", prompt_tokens=0, cached_prompt_tokens=0, completion_tokens=0)
            return
        seq = self._acquire(prompt, cancel, request.priority)
        if seq is None:
            yield GenerationDone(
                "cancelled", prompt_tokens=len(prompt), cached_prompt_tokens=0, completion_tokens=0
            )
            return
        try:
            yield from self._generate(seq, request, tools, prompt, cancel, started)
        finally:
            self._batch.release(seq)

    def _generate(
        self,
        seq: LlmSequence,
        request: ChatRequest,
        tools: Sequence[ToolSpec],
        prompt: Tokens,
        cancel: CancelToken,
        started: float,
    ) -> Iterator[LLMEvent]:
        forced = forced_tool_name(request.tool_choice, tools) if tools else None
        cached, source = self._prepare(seq, prompt)
        state = _Run(prompt_tokens=len(prompt), cached=cached, source=source, started=started)

        for offset in range(cached, len(prompt), _PROMPT_CHUNK):
            if cancel.cancelled:
                yield state.done("cancelled", self)
                return
            self._eval(seq, prompt[offset : offset + _PROMPT_CHUNK].tolist())
        state.prompt_done = time.perf_counter()

        if not tools:
            yield from self._text(seq, request, cancel, state, first_ban=None)
            return
        starts = self._call_starts()
        probs = self._probabilities(seq)
        state.tool_probability = float(probs[starts].sum())
        if request.tool_choice == "none":
            # Words only, from a model that reached for a call (a call still pending, a tool
            # that would fit): steered first, as after a dropped call, or it writes JSON talk
            # or a stray name ("Here is a json response:", "Mozilla") for most seeds.
            steer = (
                state.tool_probability >= self.tool_threshold
                and self.guard_leaks
                and self.steer_dropped_calls
            )
            if steer and not self._steer_to_words(seq, request, tools):
                self._load(seq, prompt)
            yield from self._text(seq, request, cancel, state, first_ban=self._text_ban(), tools=tools)
            return
        auto = forced is None and request.tool_choice != "required"
        if auto and state.tool_probability < self.tool_threshold:
            yield from self._text(seq, request, cancel, state, first_ban=self._text_ban(), tools=tools)
            return
        called = yield from self._tool_calls(
            seq, request, tools, forced, cancel, state, _Plausibility.of(request) if auto else None
        )
        if not called:
            # The model reached for a tool with made-up arguments: answer in words instead.
            state.completion = 0
            self._rewind(seq, prompt)
            if (
                self.guard_leaks
                and self.steer_dropped_calls
                and not self._steer_to_words(seq, request, tools)
            ):
                self._load(seq, prompt)
            yield from self._text(seq, request, cancel, state, first_ban=self._text_ban(), tools=tools)

    def _rewind(self, seq: LlmSequence, prompt: Tokens) -> None:
        """Drop everything after the prompt and recompute the prompt's last logits."""
        seq.truncate(len(prompt) - 1)
        self._eval(seq, [int(prompt[-1])])

    def _text(
        self,
        seq: LlmSequence,
        request: ChatRequest,
        cancel: CancelToken,
        state: _Run,
        first_ban: npt.NDArray[np.intp] | None,
        tools: Sequence[ToolSpec] = (),
    ) -> Iterator[LLMEvent]:
        """Sample a plain answer; ``first_ban`` keeps the first token from starting a call.

        With ``guard_leaks`` the text goes out through a :class:`LeakGuard`: a piece that
        would leak scaffolding is never emitted; its tokens are taken back out of the KV cache
        and the answer continues from there with the leak's first token banned, at most
        ``_MAX_LEAK_RETRIES`` times, after which the answer ends (with ``SAFE_ANSWER`` when
        nothing was said yet).
        """
        bias: dict[int, float] = {}
        if first_ban is not None:
            # Tools were offered and the answer is text: no pseudo-call or markup anywhere in it
            # (small models otherwise echo the call or the tool result as JSON).
            self._call_starts()
            assert self._syntax_ids is not None
            bias = dict.fromkeys(self._syntax_ids.tolist(), -math.inf)
        elif self._tool_open is not None:
            bias = {self._tool_open: -math.inf}
        first_bias = bias
        if first_ban is not None:
            first_bias = {**bias, **dict.fromkeys(first_ban.tolist(), -math.inf)}
        sampler = self._sampler(temperature=request.temperature, bias=bias)
        first_sampler = sampler
        if first_ban is not None:
            first_sampler = self._sampler(temperature=request.temperature, bias=first_bias)
        guard = self._leak_guard(request, tools) if self.guard_leaks else None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        limit = request.max_output_tokens
        emitted = False
        finish: FinishReason = "stop"
        held: list[int] = []  # sampled tokens whose text the guard still holds
        length = 0  # tokens of the answer as it stands (taken-back tokens excluded)
        banned: dict[int, float] = {}  # after a leak: what may not come next at this position
        retries = 0
        while True:
            if cancel.cancelled:
                finish = "cancelled"
                break
            if banned:
                chosen = self._sampler(
                    temperature=request.temperature, bias={**(first_bias if length == 0 else bias), **banned}
                )
            else:
                chosen = first_sampler if length == 0 else sampler
            token = self._sample(chosen, seq)
            end = self._is_end(token)
            if not end:
                state.completion += 1
                length += 1
            text = "" if end else decoder.decode(bytes(self._model.detokenize([token])))
            if guard is None:
                if end:
                    break
                if not emitted:
                    text = text.lstrip()
                if text:
                    state.first_token(emitted)
                    emitted = True
                    yield TextDelta(text)
            else:
                if not end:
                    if not guard.emitted.strip() and not "".join(guard.held).strip():
                        text = text.lstrip()
                    held.append(token)
                out = guard.finish() if end else guard.push(text)
                if isinstance(out, Leak):
                    retries += 1
                    self.leak_stats["regenerated"] += 1
                    # the newest token was sampled, not evaluated: only the others are in the KV
                    evaluated = len(held) - (0 if end else 1)
                    first_held = held[0] if held else token
                    length -= len(held)
                    held.clear()
                    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
                    out_of_budget = limit is not None and state.completion >= limit
                    if retries > _MAX_LEAK_RETRIES or out_of_budget or not self._take_back(seq, evaluated):
                        self.leak_stats["fallback"] += 1
                        if not guard.emitted.strip():
                            state.first_token(False)
                            emitted = True
                            yield TextDelta(SAFE_ANSWER)
                        break
                    banned = {first_held: -math.inf}
                    continue
                banned = {}
                del held[: len(out)]
                released = "".join(out)
                if released:
                    state.first_token(emitted)
                    emitted = True
                    yield TextDelta(released)
                if end:
                    break
            if limit is not None and state.completion >= limit:
                finish = "length"
                break
            if not self._eval(seq, [token]):
                finish = "length"
                break
        if guard is not None and finish == "length":
            out = guard.finish()
            if not isinstance(out, Leak) and "".join(out):
                yield TextDelta("".join(out))
            elif isinstance(out, Leak) and not guard.emitted.strip():
                # the whole answer was held and leaked: say something rather than nothing
                self.leak_stats["fallback"] += 1
                state.first_token(False)
                yield TextDelta(SAFE_ANSWER)
        tail = decoder.decode(b"", final=True)
        if tail and finish != "cancelled":
            yield TextDelta(tail)
        yield state.done(finish, self)

    def _take_back(self, seq: LlmSequence, count: int) -> bool:
        """Remove the last ``count`` evaluated tokens and recompute the logits before them."""
        if count <= 0:
            return True
        keep = seq.n_tokens - count - 1
        if keep < 0:
            return False
        last = seq.tokens[keep]
        if not seq.truncate(keep):
            return False
        return self._eval(seq, [last])

    def _leak_guard(self, request: ChatRequest, tools: Sequence[ToolSpec]) -> LeakGuard:
        """A guard against this request's scaffolding: its system text, its tools, the template."""
        protected = [m.content for m in request.messages if m.role == "system" and m.content]
        protected += [t.description for t in tools if t.description]
        protected += [g for g in (self.tool_guidance, self.result_guidance, NO_TOOL_GUIDANCE) if g]
        if tools:
            protected.append(self._tool_preamble())
        return LeakGuard(tool_names=[t.name for t in tools], protected=protected)

    def _tool_preamble(self) -> str:
        """The text the chat template wraps around tools (Qwen: "# Tools ... <tools>")."""
        if self._preamble is None:
            probe = ToolSpec("zz_probe_tool", "zz probe", {"type": "object", "properties": {}})
            rendered = self._template.render(
                messages=[{"role": "user", "content": "zz"}],
                tools=to_chat_tools([probe]),
                add_generation_prompt=True,
                bos_token=self._bos_text,
                eos_token=self._eos_text,
            )
            self._preamble = "\n".join(line for line in str(rendered).splitlines() if "zz" not in line)
        return self._preamble

    def _load(self, seq: LlmSequence, prompt: Tokens) -> bool:
        """Make the KV cache hold exactly ``prompt`` (reusing what it shares with it)."""
        cached, _ = self._prepare(seq, prompt)
        for offset in range(cached, len(prompt), _PROMPT_CHUNK):
            if not self._eval(seq, prompt[offset : offset + _PROMPT_CHUNK].tolist()):
                return False
        return True

    def _steer_to_words(self, seq: LlmSequence, request: ChatRequest, tools: Sequence[ToolSpec]) -> bool:
        """After the model reached for a call that was dropped: add a short system note that no
        function fits, so the words that follow answer the user instead of naming the tool.
        Only the note is evaluated (the prompt before it is still in the KV cache)."""
        messages = (*request.messages, ChatMessage("system", NO_TOOL_GUIDANCE))
        reserve = min(request.max_output_tokens or 256, 1024)
        prompt = self._prompt(replace(request, messages=messages), tools, reserve)
        if prompt is None or not self._load(seq, prompt):
            return False
        self.leak_stats["steered"] += 1
        return True

    def _tool_calls(
        self,
        seq: LlmSequence,
        request: ChatRequest,
        tools: Sequence[ToolSpec],
        forced: str | None,
        cancel: CancelToken,
        state: _Run,
        check: _Plausibility | None,
    ) -> Generator[LLMEvent, None, bool]:
        """Write calls; False (nothing emitted, KV to be rewound) when the model's call is bogus.

        The opening tag is written only when the model itself prefers it to bare JSON
        (Qwen2.5-Coder answers with bare JSON; forcing the tag makes it pick worse tools).
        The name is written freely and mapped to the closest real tool, then the arguments
        are written under the grammar of that tool's schema.
        """
        limit = min(request.max_output_tokens or _MAX_CALL_TOKENS, _MAX_CALL_TOKENS)
        calls: list[ToolCall] = []
        finish: FinishReason = "tool_calls"
        starts = self._call_starts()
        probs = self._probabilities(seq)
        while True:
            mark = seq.n_tokens
            tagged = self._tool_open is not None and probs[self._tool_open] * 2 >= probs[starts].sum()
            opener = (f"{TOOL_CALL_OPEN}\n" if tagged else "") + '{"name": "'
            name = forced
            if name is None:
                name = self._free_name(seq, opener, tools, cancel)
                seq.truncate(mark)
                if name is None:
                    if not calls and not cancel.cancelled:
                        return False
                    break
            tool = next(t for t in tools if t.name == name)
            head = self._tokenize(f'{opener}{name}", "arguments": ')
            if not self._eval(seq, head):
                finish = "length"
                break
            state.completion += len(head)
            arguments, pending, finish = self._grammar_json(
                seq, tool_call_gbnf([tool], arguments_only=True), limit, cancel, state
            )
            if pending is None:
                break
            call = parse_tool_call(f'{{"name": "{name}", "arguments": {arguments}}}', tools)
            if call is None or any(c.name == call.name and c.arguments == call.arguments for c in calls):
                break
            if check is not None and not check.accepts(tool, call):
                if not calls:
                    return False
                break
            calls.append(call)
            state.first_token(len(calls) > 1)
            yield ToolCallDelta(call)
            # Keep the KV cache close to what the template renders for this turn, and look
            # for a further call (parallel tool calls) when allowed.
            if forced is not None or len(calls) >= self.max_tool_calls or cancel.cancelled:
                break
            closer = "}" + (f"\n{TOOL_CALL_CLOSE}" if tagged else "") + "\n"
            if not self._eval(seq, [pending, *self._tokenize(closer)]):
                break
            probs = self._probabilities(seq)
            if probs[starts].sum() < max(self.tool_threshold, 0.5):
                break
        if cancel.cancelled:
            finish = "cancelled"
        elif calls:
            finish = "tool_calls"
        elif finish == "tool_calls":
            finish = "stop"
        yield state.done(finish, self)
        return True

    def _free_name(
        self, seq: LlmSequence, opener: str, tools: Sequence[ToolSpec], cancel: CancelToken
    ) -> str | None:
        """Let the model name the function unconstrained, then snap to the closest tool."""
        if not self._eval(seq, self._tokenize(opener)):
            return None
        sampler = self._sampler(temperature=0.0)
        name = ""
        for _ in range(_MAX_NAME_TOKENS):
            if cancel.cancelled:
                return None
            token = self._sample(sampler, seq)
            if self._is_end(token):
                break
            name += self._token_text(token)
            if '"' in name:
                break
            if not self._eval(seq, [token]):
                break
        return closest_tool_name(name.split('"', 1)[0].strip(), tools)

    def _grammar_json(
        self, seq: LlmSequence, grammar: str, limit: int | None, cancel: CancelToken, state: _Run
    ) -> tuple[str, int | None, FinishReason]:
        """Write one JSON value under ``grammar``; return it and its last, unevaluated token."""
        sampler = self._sampler(temperature=0.0, grammar=grammar)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        body = ""
        while True:
            if cancel.cancelled:
                return body, None, "cancelled"
            token = self._sample(sampler, seq)
            if self._is_end(token):
                return body, None, "stop"
            state.completion += 1
            body += decoder.decode(bytes(self._model.detokenize([token])))
            if body.rstrip().endswith("}"):
                try:
                    json.loads(body)
                    return body, token, "tool_calls"
                except ValueError:
                    pass
            if limit is not None and state.completion >= limit:
                return body, None, "length"
            if not self._eval(seq, [token]):
                return body, None, "length"

    def close(self) -> None:
        """Free the model (the engine is unusable afterwards)."""
        self._batch.close()
        self._model.close()


@dataclass(frozen=True)
class _Plausibility:
    """What an ``auto`` call must satisfy to be believed (see ``ungrounded_arguments``)."""

    context: str
    latest: str
    just_called: frozenset[str]

    @classmethod
    def of(cls, request: ChatRequest) -> _Plausibility:
        last_user = max((i for i, m in enumerate(request.messages) if m.role == "user"), default=-1)
        return cls(
            context=" ".join(m.content for m in request.messages if m.role in ("user", "tool")),
            latest=request.messages[last_user].content if last_user >= 0 else "",
            # Functions already called since the user last spoke: calling one again without
            # new input is the small-model loop, not a need.
            just_called=frozenset(
                c.name
                for m in request.messages[last_user + 1 :]
                for c in m.tool_calls
                if m.role == "assistant"
            ),
        )

    def accepts(self, tool: ToolSpec, call: ToolCall) -> bool:
        if call.name in self.just_called:
            return False
        return not ungrounded_arguments(tool, call.arguments, self.context, self.latest)


@dataclass
class _Run:
    """Per-generation counters and timings."""

    prompt_tokens: int
    cached: int
    source: Literal["none", "live", "ram"]
    started: float
    prompt_done: float | None = None
    first: float | None = None
    completion: int = 0
    tool_probability: float | None = None

    def first_token(self, already: bool) -> None:
        if not already and self.first is None:
            self.first = time.perf_counter()

    def done(self, finish: FinishReason, engine: LlamaCppModel) -> GenerationDone:
        now = time.perf_counter()
        prompt_done = self.prompt_done or now
        engine.last_generation = GenerationStats(
            prompt_tokens=self.prompt_tokens,
            cached_prompt_tokens=self.cached,
            cache_source=self.source,
            prompt_seconds=prompt_done - self.started,
            first_token_seconds=None if self.first is None else self.first - self.started,
            completion_tokens=self.completion,
            decode_seconds=now - prompt_done,
            tool_probability=self.tool_probability,
        )
        return GenerationDone(
            finish_reason=finish,
            prompt_tokens=self.prompt_tokens,
            cached_prompt_tokens=self.cached,
            completion_tokens=self.completion,
        )
