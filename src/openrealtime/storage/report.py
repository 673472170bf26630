"""``openrealtime usage``: the ledger's aggregates as a table (or JSON), read from storage."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from . import database_url, make_storage
from .base import GroupColumn, UsageAggregate, UsageQuery
from .sqlite import SqliteStorage


async def read_usage(url: str, query: UsageQuery) -> list[UsageAggregate]:
    storage = make_storage(url)
    await storage.open()
    try:
        return await storage.aggregate_usage(query)
    finally:
        await storage.close()


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M")


def usage_table(rows: Sequence[UsageAggregate], groups: Sequence[GroupColumn]) -> Table:
    table = Table(title="Usage (tokens, USD at the configured prices)")
    shown = [g for g in ("key", "session", "day") if g in groups or (g == "key" and "session" in groups)]
    for name in shown:
        table.add_column(name)
    for name in ("responses", "input text", "input audio", "cached", "output text", "output audio", "total"):
        table.add_column(name, justify="right")
    table.add_column("cost $", justify="right")
    table.add_column("last (UTC)")
    totals = [0] * 7
    cost = 0.0
    for row in rows:
        values = [
            row.responses,
            row.input_text_tokens,
            row.input_audio_tokens,
            row.cached_text_tokens + row.cached_audio_tokens + row.cached_image_tokens,
            row.output_text_tokens,
            row.output_audio_tokens,
            row.total_tokens,
        ]
        totals = [a + b for a, b in zip(totals, values, strict=True)]
        cost += row.cost_usd
        labels = {"key": row.key_id, "session": row.session_id, "day": row.day}
        table.add_row(
            *[labels[g] or "" for g in shown],
            *[f"{v:,}" for v in values],
            f"{row.cost_usd:.4f}",
            _when(row.last_at),
        )
    if len(rows) > 1:
        table.add_row(*(["total"] + [""] * (len(shown) - 1)), *[f"{v:,}" for v in totals], f"{cost:.4f}", "")
    return table


def print_usage(
    configured_url: str | None,
    data_dir: Path,
    query: UsageQuery,
    *,
    as_json: bool = False,
) -> int:
    """Print the aggregates; returns the exit status."""
    url = database_url(configured_url, data_dir)
    storage = make_storage(url)
    if isinstance(storage, SqliteStorage) and not storage.path.exists():
        Console(stderr=True).print(f"no usage database at {storage.path}")
        return 1
    rows = asyncio.run(read_usage(url, query))
    if as_json:
        print(json.dumps([row.__dict__ for row in rows], indent=2))
    else:
        console = Console()
        if not console.is_terminal:  # piped: do not squeeze the table into 80 columns
            console = Console(width=200)
        console.print(usage_table(rows, query.group_by))
    return 0
