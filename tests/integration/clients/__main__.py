"""``python -m tests.integration.clients NAME SPEC.json RESULT.json``: run one client's turn."""

from __future__ import annotations

import asyncio
import importlib
import sys

from .common import TurnResult, TurnSpec

RUNNERS = {
    "pipecat-openai": "pipecat_openai",
    "livekit-openai": "livekit_openai",
    "pipecat-azure": "pipecat_azure",
    "livekit-azure": "livekit_azure",
    "livekit-azure-preview": "livekit_azure:run_preview",
    "agents-openai": "agents_openai",
    "agents-openai-tool": "agents_openai:run_tool",
    "agents-openai-barge-in": "agents_openai:run_barge_in",
}
"""Client name → module in this package that has ``async def run(spec) -> TurnResult`` (or
``module:function`` for another runner in it)."""


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in RUNNERS:
        print(f"usage: python -m tests.integration.clients {{{'|'.join(RUNNERS)}}} SPEC RESULT")
        return 2
    name, spec_path, result_path = argv
    module_name, _, function = RUNNERS[name].partition(":")
    module = importlib.import_module(f"{__package__}.{module_name}")
    spec = TurnSpec.load(spec_path)
    runner = getattr(module, function or "run")
    result: TurnResult = asyncio.run(asyncio.wait_for(runner(spec), spec.timeout_s))
    result.save(result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
