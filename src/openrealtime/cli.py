"""The ``openrealtime`` command: serve, keys, models, bench, replay, usage, engines."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from .config import Settings

app = typer.Typer(add_completion=False, help="A self-hosted OpenAI Realtime API server on local models.")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port.")] = None,
    llm: Annotated[str | None, typer.Option(help="LLM profile or GGUF path.")] = None,
    text_only: Annotated[bool, typer.Option(help="Load no speech engines (text sessions only).")] = False,
    ssl_certfile: Annotated[
        Path | None, typer.Option(help="TLS certificate (PEM): serve https:// and wss://.")
    ] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
) -> None:
    """Start the server on the configured engines."""
    from .engines.registry import build_engines
    from .server.app import create_app
    from .server.auth import KeyStore
    from .telemetry.logs import configure_logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = Settings.load(host=host, port=port, llm=llm)
    secrets = [
        *settings.api_keys,
        *settings.usage_admin_keys,
        settings.llm_api_key or "",
        *(part.strip() for part in (settings.recording_key or "").split(",")),
        settings.moderation_api_key or "",
    ]
    configure_logging(settings.log_level, settings.log_format, secrets)
    keys, generated = KeyStore.load(settings.api_keys, settings.data_dir)
    if generated:
        typer.echo(
            f"Generated an API key (stored in {settings.data_dir}/api_keys, shown only now):\n  {generated}"
        )
    application = create_app(
        settings, keys=keys, engines=lambda: build_engines(settings, speech=not text_only)
    )
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        ws_max_size=settings.max_message_bytes,
        log_level=settings.log_level,
        log_config=None,  # uvicorn's loggers go through the handler configured above
        ssl_certfile=str(ssl_certfile or settings.ssl_certfile or "") or None,
        ssl_keyfile=str(ssl_keyfile or settings.ssl_keyfile or "") or None,
    )


@app.command()
def keys(
    data_dir: Annotated[Path | None, typer.Option(help="Data directory.")] = None,
) -> None:
    """Show where the API keys come from (never prints configured keys)."""
    from .server.auth import KeyStore

    settings = Settings.load(data_dir=data_dir)
    store, generated = KeyStore.load(settings.api_keys, settings.data_dir)
    if settings.api_keys:
        typer.echo(f"{len(store)} key(s) from OPENREALTIME_API_KEYS")
    elif generated:
        typer.echo(f"Generated a new key (stored in {settings.data_dir}/api_keys):\n  {generated}")
    else:
        typer.echo(f"{len(store)} key(s) in {settings.data_dir}/api_keys")


@app.command()
def models(
    names: Annotated[list[str] | None, typer.Argument(help="Assets to assemble and verify.")] = None,
) -> None:
    """Assemble and verify the embedded model files."""
    from .engines import assets

    raise typer.Exit(assets.main(names or []))


@app.command()
def bench(
    audio: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Audio files to speak (wav, flac, ...; default: the bundled real-speech samples)."
        ),
    ] = None,
    url: Annotated[str | None, typer.Option(help="A running server (default: start one here).")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="OPENAI_API_KEY", help="Key for --url.")] = None,
    max_concurrency: Annotated[int, typer.Option(min=1, help="Highest level of the sweep.")] = 8,
    p95_limit_ms: Annotated[
        float, typer.Option(help="A level holds at p95 voice-to-voice <= this.")
    ] = 1500.0,
    keep_going: Annotated[bool, typer.Option(help="Run every level even after one missed.")] = False,
    turns: Annotated[int, typer.Option(min=1, help="Turns per session.")] = 3,
    min_turns: Annotated[int, typer.Option(min=1, help="Turns per level at least.")] = 8,
    silence_ms: Annotated[int, typer.Option(help="server_vad silence_duration_ms.")] = 300,
    turn_detection: Annotated[
        list[str] | None,
        typer.Option(
            help="server_vad or semantic_vad; give it twice to measure both on one server (default server_vad)."
        ),
    ] = None,
    eagerness: Annotated[str, typer.Option(help="semantic_vad eagerness: low, medium, high, auto.")] = "auto",
    warm_up: Annotated[bool, typer.Option(help="One uncounted turn first.")] = True,
    compare: Annotated[
        str | None,
        typer.Option(
            help="preemptive or batching: run everything with preemptive generation (or LLM batching) on and off, side by side."
        ),
    ] = None,
    server_arg: Annotated[
        list[str] | None, typer.Option(help="Extra argument for the self-started `serve`.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: bench/results in a checkout).")
    ] = None,
) -> None:
    """Voice-to-voice latency over concurrent real-speech sessions; writes JSON and a PNG plot."""
    import sys

    from .benchmark.runner import BenchOptions, run_benchmark

    options = BenchOptions(
        audio=audio or [],
        url=url,
        api_key=api_key,
        max_concurrency=max_concurrency,
        p95_limit_ms=p95_limit_ms,
        keep_going=keep_going,
        turns=turns,
        min_turns=min_turns,
        silence_ms=silence_ms,
        turn_detection=turn_detection or ["server_vad"],
        eagerness=eagerness,
        warm_up=warm_up,
        compare=compare,
        serve_args=server_arg or [],
        out=out,
        command=" ".join(["openrealtime", *sys.argv[1:]]),
    )
    modes = options.turn_detection
    if any(mode not in ("server_vad", "semantic_vad") for mode in modes) or len(set(modes)) != len(modes):
        raise typer.BadParameter("server_vad and/or semantic_vad, each once", param_hint="--turn-detection")
    if eagerness not in ("low", "medium", "high", "auto"):
        raise typer.BadParameter("low, medium, high or auto", param_hint="--eagerness")
    try:
        run_benchmark(options)
    except (ValueError, RuntimeError, OSError) as error:
        typer.echo(f"bench failed: {error}", err=True)
        raise typer.Exit(1) from error


@app.command()
def replay(
    recordings: Annotated[
        list[str],
        typer.Argument(help="Recording bundles (from GET /v1/recordings/{id}) or recording ids (rec_...)."),
    ],
    url: Annotated[str, typer.Option(help="The server to replay against (http(s)://host:port).")],
    api_key: Annotated[str | None, typer.Option(envvar="OPENAI_API_KEY", help="API key for --url.")] = None,
    session_config: Annotated[
        Path | None,
        typer.Option(help="JSON or YAML session object merged over the recorded configuration."),
    ] = None,
    server_log: Annotated[
        Path | None, typer.Option(help="The server's log, for its per-stage timings (optional).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: bench/results in a checkout).")
    ] = None,
    name: Annotated[str, typer.Option(help="Output file stem.")] = "replay",
    turn_timeout: Annotated[float, typer.Option(help="Longest wait for an answer, seconds.")] = 60.0,
) -> None:
    """Speak recorded caller turns into a server at real-time pace and report what changed."""
    import sys

    from .recording.replay import ReplayOptions, run_replay

    options = ReplayOptions(
        recordings=recordings,
        url=url,
        api_key=api_key or "",
        session_config=session_config,
        server_log=server_log,
        out=out,
        name=name,
        turn_timeout_s=turn_timeout,
        command=" ".join(["openrealtime", *sys.argv[1:]]),
    )
    try:
        run_replay(options)
    except (ValueError, RuntimeError, OSError) as error:
        typer.echo(f"replay failed: {error}", err=True)
        raise typer.Exit(1) from error


@app.command()
def usage(
    group_by: Annotated[str, typer.Option(help="key, session or day, or a comma list (key,day).")] = "key",
    days: Annotated[float | None, typer.Option(help="Only the last N days.")] = None,
    start: Annotated[float | None, typer.Option(help="From this time (epoch seconds).")] = None,
    end: Annotated[float | None, typer.Option(help="Before this time (epoch seconds).")] = None,
    key_id: Annotated[str | None, typer.Option(help="Only this key id (key_...).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    data_dir: Annotated[Path | None, typer.Option(help="Data directory.")] = None,
    database_url: Annotated[str | None, typer.Option(help="Database URL (default: the data dir's).")] = None,
) -> None:
    """Token usage and cost from the usage ledger (reads the database directly)."""
    import time

    from .server.usage import BadQuery, parse_group_by
    from .storage import UsageQuery
    from .storage.report import print_usage

    settings = Settings.load(data_dir=data_dir, database_url=database_url)
    try:
        groups = parse_group_by(group_by)
    except BadQuery as err:
        raise typer.BadParameter(str(err), param_hint="--group-by") from None
    since = time.time() - days * 86_400 if days is not None else start
    query = UsageQuery(group_by=groups, key_ids=[key_id] if key_id else None, start=since, end=end)
    raise typer.Exit(print_usage(settings.database_url, settings.data_dir, query, as_json=as_json))


engines_app = typer.Typer(help="Engines on a Ray cluster (needs the `ray` extra).")
app.add_typer(engines_app, name="engines")
_ENGINE_LIST_HELP = "Comma list of engines: llm,asr,tts,vision."


@engines_app.command("up")
def engines_up(
    address: Annotated[
        str | None,
        typer.Option(help="Ray cluster: GCS HOST:PORT or auto (default RAY_ADDRESS)."),
    ] = None,
    engines: Annotated[
        str | None, typer.Option(help=_ENGINE_LIST_HELP + " Default RAY_ENGINES or all.")
    ] = None,
    cpus: Annotated[float, typer.Option(help="CPUs each replica reserves.")] = 1.0,
    gpus: Annotated[float, typer.Option(help="GPUs each replica reserves (0: CPU only).")] = 0.0,
    min_replicas: Annotated[int, typer.Option(min=1, help="Replicas per engine at least.")] = 1,
    max_replicas: Annotated[int, typer.Option(min=1, help="Replicas per engine at most.")] = 1,
    target_ongoing: Annotated[
        float, typer.Option(help="Autoscaling target: requests in flight per replica.")
    ] = 1.0,
    upscale_delay: Annotated[
        float | None, typer.Option(help="Seconds above target before adding a replica (Serve's default: 30).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the replicas to run.")] = 600.0,
) -> None:
    """Deploy (or update) the engine deployments on a Ray cluster with Ray Serve."""
    try:
        from .engines.ray.deploy import check_engines, engine_options
        from .engines.ray.deploy import engines_up as deploy
        from .engines.ray.deployments import ENGINES, ReplicaResources
    except ImportError as err:
        typer.echo(f"engines up needs Ray Serve: pip install 'openrealtime[ray]' ({err})", err=True)
        raise typer.Exit(1) from err

    settings = Settings.load()
    try:
        chosen = check_engines((engines or ",".join(settings.ray_engines or ENGINES)).split(","))
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--engines") from None
    replica = ReplicaResources(
        num_cpus=cpus,
        num_gpus=gpus,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        target_ongoing_requests=target_ongoing,
        upscale_delay_s=upscale_delay,
    )
    options = engine_options(settings, {engine: replica for engine in chosen})
    try:
        states = deploy(
            address or settings.ray_address or "auto",
            chosen,
            options,
            prefix=settings.ray_app,
            timeout_s=timeout,
        )
    except (RuntimeError, ConnectionError) as err:
        typer.echo(f"engines up failed: {err}", err=True)
        raise typer.Exit(1) from err
    for name, state in states.items():
        typer.echo(f"{name}: {state.rsplit('.', 1)[-1]}")


@engines_app.command("down")
def engines_down(
    address: Annotated[str | None, typer.Option(help="Ray cluster (default RAY_ADDRESS).")] = None,
    engines: Annotated[str, typer.Option(help=_ENGINE_LIST_HELP)] = "llm,asr,tts,vision",
) -> None:
    """Delete the engine deployments from the Ray cluster."""
    try:
        from .engines.ray.deploy import check_engines
        from .engines.ray.deploy import engines_down as undeploy
    except ImportError as err:
        typer.echo(f"engines down needs Ray Serve: pip install 'openrealtime[ray]' ({err})", err=True)
        raise typer.Exit(1) from err

    settings = Settings.load()
    try:
        chosen = check_engines(engines.split(","))
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--engines") from None
    try:
        deleted = undeploy(address or settings.ray_address or "auto", chosen, prefix=settings.ray_app)
    except (RuntimeError, ConnectionError) as err:
        typer.echo(f"engines down failed: {err}", err=True)
        raise typer.Exit(1) from err
    for name in deleted:
        typer.echo(f"{name}: deleted")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
