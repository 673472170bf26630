"""``python -m tests.integration.clients NAME SPEC.json RESULT.json``: run one client's turn."""

from __future__ import annotations

import asyncio
import importlib
import sys

from .common import TurnResult, TurnSpec

RUNNERS = {
    "pipecat-openai": "pipecat_openai",
    "livekit-openai": "livekit_openai",
}
"""Client name → module in this package that has ``async def run(spec) -> TurnResult``."""


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in RUNNERS:
        print(f"usage: python -m tests.integration.clients {{{'|'.join(RUNNERS)}}} SPEC RESULT")
        return 2
    name, spec_path, result_path = argv
    module = importlib.import_module(f"{__package__}.{RUNNERS[name]}")
    spec = TurnSpec.load(spec_path)
    result: TurnResult = asyncio.run(asyncio.wait_for(module.run(spec), spec.timeout_s))
    result.save(result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
