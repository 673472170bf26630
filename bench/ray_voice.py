"""Voice-to-voice with the engines on Ray Serve vs in-process, on the same machine and clips.

    python bench/ray_voice.py --max-concurrency 2

Starts a one-node Ray cluster (token auth, loopback driver), deploys the engines with
``openrealtime engines up``, then runs ``openrealtime bench`` twice, levels 1..N: once with the
server calling the engines on Ray, once with the engines in the server process. Writes both
reports under ``bench/results/ray-voice/`` and prints the p50/p95 per level side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "ray-voice"
HEAD = """
import sys, ray
ray.init(address="local", num_cpus=4, include_dashboard=False, _temp_dir=sys.argv[1],
         _node_ip_address="127.0.0.1", configure_logging=False)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()
ray.shutdown()
"""


def bench(label: str, env: dict[str, str], max_concurrency: int) -> dict[str, object]:
    out = OUT / label
    command = [
        *(sys.executable, "-m", "openrealtime.cli", "bench", "--keep-going"),
        *("--max-concurrency", str(max_concurrency), "--out", str(out)),
    ]
    subprocess.run(command, env={**os.environ, **env}, check=True)
    report: dict[str, object] = json.loads((out / "bench-latest.json").read_text())
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-concurrency", type=int, default=2)
    args = parser.parse_args()
    ray_env = {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": os.urandom(32).hex(),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    head = subprocess.Popen(
        [sys.executable, "-c", HEAD, temp], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, **ray_env},
    )  # fmt: skip
    try:
        assert head.stdout is not None
        address = head.stdout.readline().strip()
        env = {**ray_env, "OPENREALTIME_RAY_APP": "orbench"}
        subprocess.run(
            [sys.executable, "-m", "openrealtime.cli", "engines", "up", "--address", address,
             "--engines", "llm,asr,tts", "--cpus", "0.5"],
            env={**os.environ, **env}, check=True,
        )  # fmt: skip
        on_ray = bench(
            "ray",
            {**env, "OPENREALTIME_RAY_ADDRESS": address, "OPENREALTIME_RAY_ENGINES": "llm,asr,tts"},
            args.max_concurrency,
        )
        subprocess.run(
            [sys.executable, "-m", "openrealtime.cli", "engines", "down", "--address", address],
            env={**os.environ, **env}, check=True,
        )  # fmt: skip
    finally:
        if head.stdin is not None:
            head.stdin.close()
        head.wait(timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
    in_process = bench("in-process", {}, args.max_concurrency)
    rows = []
    for where, report in (("in-process", in_process), ("ray", on_ray)):
        for level in report["levels"]:  # type: ignore[attr-defined]
            v2v = level["voice_to_voice_ms"]
            rows.append(
                {"where": where, "sessions": level["concurrency"], "p50": v2v["p50"], "p95": v2v["p95"]}
            )
    summary = {"command": " ".join(["python", *sys.argv]), "rows": rows}
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
