"""``openrealtime engines up|down``: put the engine deployments on a Ray cluster or take
them off (one named Serve application per engine, HTTP proxy disabled: handles only)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from openrealtime.config import Settings
from openrealtime.engines.ray.adapters import connect
from openrealtime.engines.ray.deployments import (
    ENGINES,
    EngineOptions,
    ReplicaResources,
    app_name,
    build_application,
)

log = logging.getLogger("openrealtime.engines.ray")


def engine_options(settings: Settings, resources: dict[str, ReplicaResources]) -> EngineOptions:
    """The replica-side engine settings, taken from this machine's configuration."""
    return EngineOptions(
        llm=settings.llm,
        llm_threads=settings.llm_threads,
        llm_context=settings.llm_context,
        llm_parallel=settings.llm_parallel,
        llm_seed=settings.llm_seed,
        asr=settings.asr,
        asr_threads=settings.asr_threads,
        tts_threads=settings.tts_threads,
        piper_voices=tuple(str(p) for p in settings.piper_voices),
        kokoro=settings.kokoro,
        kokoro_model=str(settings.kokoro_model) if settings.kokoro_model else None,
        kokoro_voices=tuple(str(p) for p in settings.kokoro_voices),
        vision_threads=settings.vision_threads,
        model_dir=str(settings.model_dir) if settings.model_dir else None,
        resources=resources,
    )


def check_engines(engines: Iterable[str]) -> list[str]:
    chosen = [e.strip() for e in engines if e.strip()]
    unknown = sorted(set(chosen) - set(ENGINES))
    if unknown:
        raise ValueError(f"unknown engine(s) {unknown}; choose from {', '.join(ENGINES)}")
    return chosen


def engines_up(
    address: str,
    engines: Iterable[str],
    options: EngineOptions,
    *,
    prefix: str = "openrealtime",
    timeout_s: float = 600.0,
) -> dict[str, str]:
    """Deploy (or update in place) each engine's application and wait until all are
    running; returns each application's status."""
    from ray import serve

    chosen = check_engines(engines)
    connect(address)
    serve.start(proxy_location="Disabled")
    for engine in chosen:
        serve.run(
            build_application(engine, options),
            name=app_name(prefix, engine),
            route_prefix=None,
            blocking=False,
        )
        log.info("deploying %s", app_name(prefix, engine))
    return wait_running([app_name(prefix, e) for e in chosen], timeout_s)


def wait_running(apps: list[str], timeout_s: float) -> dict[str, str]:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while True:
        statuses = serve.status().applications
        states = {name: str(statuses[name].status) if name in statuses else "MISSING" for name in apps}
        if all(state.endswith("RUNNING") for state in states.values()):
            return states
        failed = {n: s for n, s in states.items() if s.endswith("DEPLOY_FAILED")}
        if failed:
            messages = "; ".join(f"{n}: {statuses[n].message}" for n in failed)
            raise RuntimeError(f"deployment failed: {messages}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"deployments not running after {timeout_s:.0f}s: {states}")
        time.sleep(0.5)


def engines_down(address: str, engines: Iterable[str], *, prefix: str = "openrealtime") -> list[str]:
    """Delete the engines' applications (replicas stop, models unload); returns those deleted."""
    from ray import serve

    chosen = check_engines(engines)
    connect(address)
    present = serve.status().applications
    deleted = []
    for engine in chosen:
        name = app_name(prefix, engine)
        if name in present:
            serve.delete(name)
            deleted.append(name)
    return deleted
