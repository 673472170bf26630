"""The ``openrealtime`` command: serve, keys, models."""

from __future__ import annotations

import logging
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
) -> None:
    """Start the server on the configured engines."""
    from .runtime.engines import build_engines
    from .server.app import create_app
    from .server.auth import KeyStore

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = Settings.load(host=host, port=port, llm=llm)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
