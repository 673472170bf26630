"""What a benchmark's numbers were measured on (kept here for the bench scripts' imports)."""

from __future__ import annotations

from openrealtime.benchmark.machine import machine_info

__all__ = ["machine_info"]
