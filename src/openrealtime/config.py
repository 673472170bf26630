"""Server configuration: environment variables ``OPENREALTIME_*``, a TOML file, CLI flags.

Precedence: CLI flags > environment > TOML file (``OPENREALTIME_CONFIG``) > defaults.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

RecordingMode = Literal["off", "metadata", "full"]
DTMF_KEYS = "0123456789*#"


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "openrealtime"


class Settings(BaseSettings):
    """Every knob of the server. See the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="OPENREALTIME_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Field(default_factory=_default_data_dir)
    model_dir: Path | None = None
    """Where assembled model files are cached (default ``~/.cache/openrealtime/models``)."""
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Comma-separated API keys; when empty a key is generated once into the data dir."""
    log_level: str = "info"
    log_format: Literal["text", "json"] = "text"
    """``json``: one JSON object per log line (timestamp, level, logger, message, ids)."""
    metrics_auth: bool = True
    """``GET /metrics`` requires an API key; false opens it (for a scraper on a private network)."""
    otlp_endpoint: str | None = None
    """OTLP/HTTP collector base URL for traces (else ``OTEL_EXPORTER_OTLP_ENDPOINT``); unset: off."""
    warm_up: bool = True
    """Run every engine once at start-up (and prime the LLM's prompt cache)."""
    preemptive: bool = True
    """Start answering a turn on its partial transcript while the caller pauses, invisibly,
    and release it when the committed turn says the same (runtime/speculation.py); only for
    turns whose silence window leaves time for it."""
    warm_while_speaking: Literal["auto", "always", "never"] = "auto"
    """Evaluate the prompt on the LLM up to the caller's words as they are transcribed, so the
    committed turn's response evaluates only its last words (with ``preemptive``). ``auto``:
    only while a core is idle and the LLM has nothing else to do."""

    # language model
    llm: str = "qwen2.5-0.5b"
    """Embedded profile (``qwen2.5-0.5b``, ``qwen2.5-1.5b``, ``smollm2-135m``) or a GGUF path."""
    llm_base_url: str | None = None
    """An OpenAI-compatible Chat Completions endpoint; when set it replaces the embedded LLM."""
    llm_model: str = "default"
    llm_fallback: str | None = None
    """Embedded profile (or GGUF path) that answers when ``llm_base_url`` fails before its
    first token; unset: such a turn gets a short apology instead."""
    llm_api_key: str | None = None
    llm_threads: int = 1
    llm_batch_threads: int = 1
    """Threads for prompt evaluation when no other engine is busy (decode stays on
    ``llm_threads``; with other work queued, prompt evaluation uses ``llm_threads`` too).
    2 halves the cached first token for a single caller on 2 idle cores, but worsened p95
    with two callers at once (bench/voice_latency.py), so the default is 1."""
    llm_context: int = 8192
    llm_parallel: int = Field(default=8, ge=1, le=64)
    """Generations the embedded LLM runs at once, decoded together in one batch per step
    (``engines/llm/batching.py``); 1 serves them one after another. With an ``llm_base_url``,
    ``remote_concurrency`` says how many requests go to the endpoint at once."""
    llm_seed: int | None = None
    """Fixed sampling seed for the embedded LLM (equal prompts give equal answers); unset
    draws a fresh one per process."""

    llm_vision: bool = False
    """The ``llm_base_url`` endpoint is a vision-language model: images go to it as
    ``image_url`` parts instead of the embedded describer's text analysis."""

    # images
    vision: Literal["embedded", "none"] = "embedded"
    """How images are described for a text-only LLM: ``embedded`` OCR + ImageNet labels, or
    ``none`` (the LLM is told an image was shared, nothing more)."""
    vision_threads: int = 1

    # speech
    asr: str = "whisper-base"
    """``whisper-base``, ``whisper-tiny.en`` or a CTranslate2 Whisper model directory."""
    asr_partials: Literal["whisper", "pocketsphinx", "none"] = "whisper"
    """How the turn is transcribed while the caller speaks: Whisper re-passes (default),
    PocketSphinx true streaming partials, or not at all (transcribe after the turn)."""
    asr_language: str = "en"
    """Language a session's speech is first transcribed in (``auto``: undecided until the first
    confident detection). A session switches only on a confident detection over a long enough
    utterance; a client's ``transcription.language`` overrides it. Default ``en``: the
    embedded voices speak English."""
    asr_threads: int = 1
    tts_threads: int = 1
    voices: dict[str, str] = Field(default_factory=dict)
    """Overrides of the voice table: ``{"marin": "piper:en_US-joe-medium", ...}``."""
    piper_voices: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    """Extra Piper voice files (``.onnx`` with ``.onnx.json`` beside them)."""
    vad_threads: int = 1
    kokoro: bool = Field(default="auto", validate_default=True)
    """Load the Kokoro voices: ``true``, ``false`` or ``auto`` (default): on when this process
    has the cores for them (``engines/tts/capacity.py``: 4 usable cores, counting CPU affinity
    and cgroup quotas), so off on a 2-core machine. Resolved to a bool when the settings load."""
    kokoro_model: Path | None = None
    """A user-supplied Kokoro ONNX model (default: the embedded int8 model)."""
    kokoro_voices: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    """User-supplied Kokoro voice files (``.npz`` / ``.bin``)."""

    # speech engines on a remote OpenAI-compatible audio API (local engines are the fallback)
    asr_base_url: str | None = None
    """``/v1`` base of an OpenAI-compatible transcription endpoint (another openrealtime,
    speaches, vLLM, OpenAI): turns are transcribed there, locally when it fails."""
    asr_model: str = "whisper-1"
    asr_api_key: str | None = None
    asr_timeout_seconds: float = Field(default=10.0, gt=0)
    """Longest wait for the remote transcription of one turn before it is done locally."""
    tts_base_url: str | None = None
    """``/v1`` base of an OpenAI-compatible speech endpoint (another openrealtime,
    Kokoro-FastAPI, speaches, OpenAI): answers are spoken there, locally when it fails."""
    tts_model: str = "tts-1"
    tts_api_key: str | None = None
    tts_timeout_seconds: float = Field(default=5.0, gt=0)
    """Longest wait for the remote's first (or next) audio bytes of a piece (a stall)."""
    tts_remote_voices: dict[str, str] = Field(default_factory=dict)
    """Voice names mapped to the remote's voice ids, e.g. ``{"marin": "af_heart"}``; unmapped
    names are sent as they are."""
    remote_concurrency: int = Field(default=4, ge=1)
    """Requests kept in flight per remote engine, the LLM endpoint's included (its scheduler's
    workers)."""

    # an upstream Realtime API answering the sessions' turns (runtime/upstream/)
    upstream_url: str | None = None
    """HTTP base of a Realtime API (``https://api.openai.com/v1``, an Azure ``…/openai/v1``,
    another openrealtime's ``/v1``): responses are generated there, over its WebSocket."""
    upstream_api_key: str | None = None
    upstream_model: str = "gpt-realtime"
    upstream_fallback: Literal["cascade", "none"] = "cascade"
    """When the upstream fails: answer with the local models from the next turn on
    (``cascade``), or end the session with the upstream's error (``none``)."""
    upstream_connect_timeout_seconds: float = Field(default=10.0, gt=0)
    upstream_stall_seconds: float = Field(default=20.0, gt=0)
    """A response whose upstream sends nothing for this long fails (the upstream is dropped)."""

    # the OpenAI audio endpoints this server offers (server/audio.py)
    max_audio_upload_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    """Largest ``/v1/audio/transcriptions`` upload (OpenAI's limit is 25 MB)."""
    max_transcription_seconds: float = Field(default=1500.0, gt=0)
    """Longest audio one transcription request may hold."""
    max_speech_input_chars: int = Field(default=4096, ge=1)
    """Longest ``input`` of ``/v1/audio/speech`` (OpenAI's limit)."""
    max_audio_requests_per_key: int = Field(default=4, ge=1)
    """Audio API requests one API key may have running at once; more get 429."""

    # engines on a Ray cluster (optional extra ``openrealtime[ray]``)
    ray_address: str | None = None
    """Ray cluster the engines run on: its GCS address ``HOST:6379`` or ``auto``; this process
    joins it as a driver (Ray Client ``ray://`` addresses are untested with streaming handles)."""
    ray_engines: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Engines called on Ray Serve instead of loaded here: a subset of ``llm,asr,tts,vision``
    (deployed with ``openrealtime engines up``); empty: everything runs in this process."""
    ray_app: str = "openrealtime"
    """Prefix of the Serve applications (``<ray_app>-llm``, ``-asr``, ``-tts``, ``-vision``)."""
    ray_concurrency: int = Field(default=4, ge=1)
    """Requests per engine this process keeps in flight on Ray (its scheduler's workers for the
    engines on Ray, published as ``EngineSet.in_flight``)."""

    # playground
    playground_enabled: bool = True
    """Serve the browser playground at ``/`` (sign-in with an API key, then a cookie)."""
    playground_session_hours: float = 12.0
    """How long a playground sign-in lasts."""

    # limits
    max_session_minutes: float = 60
    max_message_bytes: int = 24 * 1024 * 1024
    max_input_buffer_seconds: int = 15 * 60
    max_sessions: int = 100
    """Concurrent sessions on this server (all transports); more are refused with an error."""
    max_sessions_per_key: int = 20
    """Concurrent sessions per API key (an ephemeral key counts against its parent)."""
    max_events_per_second: float = 200.0
    """Client events per second per API key across its sessions (0: unlimited); bursts up to
    ``event_burst`` are allowed. Over the rate an event is refused with ``rate_limit_exceeded``."""
    event_burst: float = 1000.0
    max_text_responses: int = 8
    """Text-only sessions' responses in progress at once (waiting or generating); a
    ``response.create`` beyond that gets ``rate_limits.updated`` and a ``server_overloaded``
    error instead of a place in the queue (0: unlimited). Voice turns are never refused."""
    partial_asr_share: float = 0.5
    """At most this share of the ASR worker's time goes to partial transcripts while callers
    speak (over 10 s windows); none while a voice turn's work waits."""
    max_send_queue_bytes: int = 64 * 1024 * 1024
    idle_connection_seconds: float = 900.0
    """A WebSocket that sends nothing for this long while no response runs gets ``idle_timeout``
    and is closed (0: never)."""
    max_request_bytes: int = 1024 * 1024
    """Largest body accepted by the REST routes (SDP offers, session configs); more gets 413."""
    ssl_certfile: Path | None = None
    """TLS certificate (PEM) for ``serve``: some clients insist on ``https://``/``wss://``."""
    ssl_keyfile: Path | None = None
    beta_shape: bool = True
    """Serve clients of the retired beta shape (``OpenAI-Beta: realtime=v1``, the
    ``openai-beta.realtime-v1`` subprotocol, Azure's preview api-versions, ``/realtime/sessions``)
    by translating it at the edge; false refuses them with ``beta_api_shape_disabled`` (GA only)."""
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Origins allowed to call the REST routes from a browser page on another origin (none by
    default: the playground is same-origin)."""
    """Unsent output per connection before a client that stopped reading is disconnected (above
    twice the largest message: a big item is echoed in both `added` and `done`)."""

    # storage, usage ledger, budgets
    database_url: str | None = None
    """``sqlite:///path.db`` or ``postgresql://user:pass@host:port/db``; default
    ``openrealtime.db`` (SQLite) in the data dir."""
    prices: Annotated[dict[str, float] | str | None, NoDecode] = None
    """Price overrides in USD per 1M tokens: a JSON object or a JSON/TOML file path
    (default: gpt-realtime list prices, see telemetry/prices.py)."""
    budget_usd: float | None = None
    """Spending limit per API key per ``budget_period``; past it new responses are refused."""
    key_budgets_usd: dict[str, float] = Field(default_factory=dict)
    """Per-key limits by key id (``{"key_ab12…": 5.0}``), overriding ``budget_usd``."""
    budget_period: Literal["day", "month"] = "day"
    budget_warn_fraction: float = Field(default=0.8, ge=0.0, le=1.0)
    """Log a warning once a key has spent this fraction of its budget."""
    usage_admin_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """API keys (or their ``key_…`` ids) that may read every key's usage at ``/v1/usage``."""

    # recording and retention (recording/)
    recording: RecordingMode = "off"
    """What is kept of each session: ``off``; ``metadata`` (every event with timestamps,
    transcripts, tool calls, timings and usage, no audio); ``full`` (that plus the caller's
    audio and the assistant's audio as played). Encrypted at rest with ``recording_key``."""
    recording_keys: dict[str, RecordingMode] = Field(default_factory=dict)
    """Per-key modes overriding ``recording``: JSON ``{"key_ab12…" or the key: "full"}``."""
    recording_key: str | None = None
    """AES-256 key(s) that encrypt recordings: base64 of 32 bytes, optionally ``id:base64``,
    comma-separated, or a file path holding such lines (or 32 raw bytes). The last one encrypts
    new recordings, every one decrypts: append a key to rotate. Required unless recording is off."""
    recording_path: Path | None = None
    """Folder of the encrypted recording files (default ``recordings`` in the data dir); gateways
    sharing PostgreSQL must share it too (a network file system)."""
    retention_days: float = Field(default=30.0, ge=0)
    """Recordings older than this are deleted (at start-up and every ``recording_sweep_minutes``);
    0 keeps them until deleted through the API."""
    recording_sweep_minutes: float = Field(default=60.0, gt=0)

    # content safety (safety/)
    moderation: Literal["none", "rules", "endpoint"] = "none"
    """Checks caller transcripts and model text before it is spoken: ``rules`` (a rules file of
    ``block``/``redact`` patterns) or ``endpoint`` (an OpenAI-compatible ``/v1/moderations``)."""
    moderation_rules: Path | None = None
    """The rules file (YAML or JSON) for ``moderation=rules``."""
    moderation_url: str | None = None
    """The moderation endpoint for ``moderation=endpoint``, e.g. ``https://api.openai.com/v1/moderations``."""
    moderation_api_key: str | None = None
    moderation_model: str = "omni-moderation-latest"
    moderation_timeout_seconds: float = Field(default=2.0, gt=0)
    moderation_fail_closed: bool = True
    """When the endpoint fails or times out, treat the text as blocked (true) or let it pass."""
    moderation_refusal: str = "Sorry, I can't help with that."
    """What the assistant says instead of answering a blocked caller turn."""

    # AI disclosure and consent
    disclosure: str | None = None
    """A sentence spoken at the start of every SIP and WebRTC call before the first turn, e.g.
    "You are talking to an automated assistant; this call may be recorded." """
    recording_opt_out_dtmf: str | None = None
    """A DTMF key (``0``-``9``, ``*``, ``#``) SIP callers press to stop the recording of their
    call; what was recorded of the call is deleted."""

    @field_validator("recording_opt_out_dtmf", mode="before")
    @classmethod
    def _one_dtmf_key(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip() or None
        if value is not None and (not isinstance(value, str) or len(value) != 1 or value not in DTMF_KEYS):
            raise ValueError("recording_opt_out_dtmf must be one DTMF key: 0-9, * or #")
        return value

    @model_validator(mode="after")
    def _moderation_needs_its_source(self) -> Settings:
        if self.moderation == "rules" and self.moderation_rules is None:
            raise ValueError("moderation=rules needs moderation_rules (a YAML or JSON rules file)")
        if self.moderation == "endpoint" and not self.moderation_url:
            raise ValueError(
                "moderation=endpoint needs moderation_url (an OpenAI-compatible /v1/moderations)"
            )
        return self

    @property
    def recordings_dir(self) -> Path:
        """Where recording files live, default applied."""
        return self.recording_path or self.data_dir / "recordings"

    # gateway replicas (server/cluster.py)
    redis_url: str | None = None
    """``redis://host:port/db``: share ephemeral keys, per-key limits and the call registry with
    other gateways through Redis; unset: this process keeps them to itself."""
    gateway_url: str | None = None
    """This gateway's URL as the other gateways reach it (default ``http://{host}:{port}``)."""
    gateway_lease_seconds: float = Field(default=15.0, gt=0)
    """How long a gateway's session counts and call entries outlive its last heartbeat."""

    # MCP tools (run by the server)
    mcp_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Comma-separated hosts, IP addresses or CIDR networks MCP servers may be reached at even
    when they are not public (loopback, private, link-local; ``*``: anywhere); by default only
    public addresses are allowed (SSRF protection)."""
    mcp_timeout_seconds: float = Field(default=30.0, gt=0)
    """Longest one MCP operation (listing tools, or one call) may take before it fails."""

    # phone calls (SIP)
    sip_enabled: bool = False
    """Answer SIP calls (UDP, TCP, TLS) and hand them to the app through the webhook."""
    sip_host: str = "127.0.0.1"
    sip_port: int = 5060
    """The UDP and TCP port."""
    sip_transports: Annotated[list[Literal["udp", "tcp", "tls"]] | None, NoDecode] = None
    """Comma-separated SIP listeners among ``udp``, ``tcp``, ``tls`` (default: ``udp,tcp``, plus
    ``tls`` when ``sip_tls_certfile`` is set). ``tls`` alone: a TLS-only server."""
    sip_tls_port: int = 5061
    sip_tls_certfile: Path | None = None
    """PEM certificate chain of the SIP TLS listener (with its key unless ``sip_tls_keyfile``)."""
    sip_tls_keyfile: Path | None = None
    sip_tls_cafile: Path | None = None
    """CAs (PEM) for SIP peers' certificates: those of the callers we open a new connection to
    (default: the system's CAs), and callers' own with ``sip_tls_require_client_cert``."""
    sip_tls_require_client_cert: bool = False
    """Mutual TLS: SIP callers must present a certificate signed by ``sip_tls_cafile``."""
    sip_media_security: Literal["either", "srtp", "rtp"] = "either"
    """Call media: ``either`` (SRTP when the caller offers SDES keys, else plain RTP),
    ``srtp`` (plain-RTP offers get 488) or ``rtp`` (SRTP-only offers get 488)."""
    sip_allowed_sources: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Trunk addresses or networks (``203.0.113.0/24``) admitted without digest auth. With
    no allowlist and no digest user, only loopback callers are admitted."""
    sip_digest_user: str | None = None
    sip_digest_password: str | None = None
    sip_ring_timeout_s: float = 30.0
    """A call neither accepted nor rejected in this time is declined with 480."""
    webhook_url: str | None = None
    """Where ``realtime.call.incoming`` is POSTed."""
    webhook_secret: str | None = None
    """``whsec_<base64>``: the HMAC key that signs webhooks (Standard Webhooks)."""

    @field_validator("asr_language")
    @classmethod
    def _check_asr_language(cls, value: str) -> str:
        code = value.strip().lower()
        if code != "auto" and not (code.isalpha() and 2 <= len(code) <= 3):
            raise ValueError(
                f"asr_language must be a language code such as 'en' or 'es', or 'auto'; got {value!r}"
            )
        return code

    @field_validator("sip_allowed_sources", mode="before")
    @classmethod
    def _split_sources(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("sip_transports", mode="before")
    @classmethod
    def _split_sip_transports(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()] or None
        return value

    @model_validator(mode="after")
    def _sip_tls_needs_a_certificate(self) -> Settings:
        if "tls" in self.sip_listeners and self.sip_tls_certfile is None:
            raise ValueError("sip_transports includes tls: set sip_tls_certfile (and sip_tls_keyfile)")
        if self.sip_tls_require_client_cert and self.sip_tls_cafile is None:
            raise ValueError("sip_tls_require_client_cert needs sip_tls_cafile to check callers against")
        return self

    @property
    def sip_listeners(self) -> list[str]:
        """The SIP transports to listen on, defaults applied."""
        if self.sip_transports:
            return list(dict.fromkeys(self.sip_transports))
        return ["udp", "tcp"] + (["tls"] if self.sip_tls_certfile is not None else [])

    @field_validator(
        "api_keys", "piper_voices", "kokoro_voices", "usage_admin_keys", "cors_origins", mode="before"
    )
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("kokoro", mode="before")
    @classmethod
    def _kokoro_by_capacity(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
            import logging

            from .engines.tts.capacity import kokoro_capacity

            capacity = kokoro_capacity()
            logging.getLogger(__name__).info("KOKORO=auto: %s", capacity.explain())
            return capacity.enabled
        return value

    @field_validator("ray_engines", mode="before")
    @classmethod
    def _split_ray_engines(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip().lower() for part in value.split(",") if part.strip()]
        unknown = sorted(set(value or ()) - {"llm", "asr", "tts", "vision"})
        if unknown:
            raise ValueError(f"unknown engine(s) {unknown}: choose from llm, asr, tts, vision")
        return value

    @field_validator("mcp_allowed_hosts", mode="before")
    @classmethod
    def _split_mcp_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Settings from the TOML file named by ``OPENREALTIME_CONFIG``, env and overrides."""
        file_values: dict[str, Any] = {}
        path = os.environ.get("OPENREALTIME_CONFIG")
        if path:
            with open(path, "rb") as handle:
                file_values = tomllib.load(handle)
        env_names = {name for name in cls.model_fields if f"OPENREALTIME_{name.upper()}" in os.environ}
        merged = {k: v for k, v in file_values.items() if k not in env_names}
        merged.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**merged)
