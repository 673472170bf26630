"""What a benchmark's numbers were measured on: they mean little without it."""

from __future__ import annotations

import os
import platform
import time
from importlib import metadata
from typing import Any

__all__ = ["machine_info"]


def machine_info(*packages: str) -> dict[str, Any]:
    """CPU, core count, load, Python, the time, and the versions of ``packages``."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu
            )
    except OSError:
        pass
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    for name in packages:
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = None
    return info
