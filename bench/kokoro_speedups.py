"""Experiment: can onnxruntime settings or static int8 convolutions make Kokoro cheaper?

Two trials on the shipped ``kokoro-v1.0.int8.onnx`` (dynamically quantised: ``ConvInteger``
and ``MatMulInteger`` behind run-time ``DynamicQuantizeLinear``):

1. **Session options**: intra-op threads 1 / 2, ``execution_mode`` sequential / parallel,
   the CPU memory arena on / off, graph optimisation basic / all, spinning on / off. Each
   variant synthesises the same phonemes, interleaved, ``--repeats`` times; reported as wall
   real-time factor and CPU seconds per audio second (this process's CPU time).
2. **Static QDQ int8 decoder convolutions**: the decoder's ``ConvInteger`` nodes are turned
   back into float ``Conv`` (``kokoro_graph.convert``, restricted to the decoder), then
   ``onnxruntime.quantization.quantize_static`` quantises them with activation ranges
   calibrated on real phoneme inputs (sentences unlike the test ones, all five voices), in the
   QDQ format that onnxruntime fuses into ``QLinearConv`` (u8 activations, s8 per-channel
   weights: the u8s8 kernels AVX2 has). The derived graph is compared with the shipped one
   on cost, on the audio (log-mel distance, the same phonemes and style, so the same length)
   and on intelligibility (WER through Whisper base).

    python bench/kokoro_speedups.py [--repeats 3] [--skip-options] [--skip-qdq]

Writes bench/results/kokoro_speedups.json. Needs ``onnx`` (``pip install onnx==1.23.2``), not
a dependency of the server.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from machine import machine_info

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULTS = Path(__file__).resolve().parent / "results"

TEST_TEXT = (
    "Thanks for waiting. I found your order from last Tuesday: it contains two blue mugs and a "
    "tea kettle, and it left our warehouse this morning."
)
WER_SENTENCES = [
    "Please call me back when you get home tonight.",
    "I would like to book a table for four people at seven o'clock.",
    "The weather today is sunny with a light breeze from the west.",
    "Your package was delivered to the front door this morning.",
    "Thank you for calling, how can I help you today?",
]
CALIBRATION_SENTENCES = [
    "Sure, I can help with that.",
    "Your confirmation code is A, 7, X, dash, 4, 9, 2, 1.",
    "Hello! How are you doing today?",
    "The meeting was moved to Thursday afternoon, right after lunch.",
    "Sorry, could you repeat that?",
    "It is sunny and twenty two degrees in Paris, with a chance of rain tonight.",
    "One moment, please, while I look that up for you.",
    "Great, the message has been sent to Alex.",
]
VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


# --------------------------------------------------------------------------- kokoro plumbing


class Runner:
    """One onnxruntime session of a Kokoro graph, fed like kokoro-onnx feeds it."""

    def __init__(self, model: Path, options: dict[str, Any]) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(options.get("threads", 1))
        opts.inter_op_num_threads = int(options.get("inter_threads", 1))
        parallel = options.get("execution_mode") == "parallel"
        opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL if parallel else ort.ExecutionMode.ORT_SEQUENTIAL
        opts.enable_cpu_mem_arena = bool(options.get("arena", True))
        levels = {
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        opts.graph_optimization_level = levels[str(options.get("optimization", "all"))]
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.get("spin") else "0")
        self.session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])

    def run(
        self, tokens: list[int], style: npt.NDArray[np.float32], speed: float = 1.0
    ) -> npt.NDArray[np.float32]:
        feeds = {
            "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
            "style": np.asarray(style[min(len(tokens), len(style)) - 1], dtype=np.float32),
            "speed": np.array([speed], dtype=np.float32),
        }
        return np.asarray(self.session.run(None, feeds)[0], dtype=np.float32).ravel()


class Frontend:
    """Phonemes, tokens and styles exactly as the server's Kokoro engine makes them."""

    def __init__(self) -> None:
        from openrealtime.engines.tts.kokoro import KokoroSynthesizer

        self.engine = KokoroSynthesizer(onnx_threads=1)
        self.kokoro = self.engine._load()
        self.styles = self.engine._styles

    def tokens(self, text: str) -> list[int]:
        from openrealtime.engines.tts.chunker import split_sentences

        out: list[int] = []
        for sentence in split_sentences(text):
            out += list(self.kokoro.tokenizer.tokenize(self.engine.phonemize(sentence)))
        return out

    def sentence_tokens(self, text: str) -> Iterator[list[int]]:
        from openrealtime.engines.tts.chunker import split_sentences

        for sentence in split_sentences(text):
            tokens = list(self.kokoro.tokenizer.tokenize(self.engine.phonemize(sentence)))
            if tokens:
                yield tokens


def cost(runner: Runner, front: Frontend, voice: str = "jf_alpha") -> tuple[float, float]:
    """(wall RTF, CPU s per audio s) of the test text, sentence by sentence as served."""
    wall, cpu, samples = time.perf_counter(), _cpu(), 0
    for tokens in front.sentence_tokens(TEST_TEXT):
        samples += len(runner.run(tokens, front.styles[voice]))
    audio = samples / 24000
    return (time.perf_counter() - wall) / audio, (_cpu() - cpu) / audio


def compare(variants: dict[str, Callable[[], Runner]], front: Frontend, repeats: int) -> dict[str, Any]:
    runners = {name: make() for name, make in variants.items()}
    for runner in runners.values():
        cost(runner, front)  # warm-up: first runs allocate
    rtfs: dict[str, list[float]] = {name: [] for name in runners}
    cpus: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, runner in runners.items():
            r, c = cost(runner, front)
            rtfs[name].append(r)
            cpus[name].append(c)
    out = {}
    for name in runners:
        out[name] = {
            "rtf_median": round(statistics.median(rtfs[name]), 3),
            "rtf_min": round(min(rtfs[name]), 3),
            "rtf_all": [round(v, 3) for v in rtfs[name]],
            "cpu_per_audio_s_median": round(statistics.median(cpus[name]), 3),
            "cpu_all": [round(v, 3) for v in cpus[name]],
        }
        print(
            f"{name:34} RTF {out[name]['rtf_median']:.2f}  CPU s/audio s {out[name]['cpu_per_audio_s_median']:.2f}"
            f"  ({' '.join(f'{v:.2f}' for v in cpus[name])})",
            flush=True,
        )
    return out


# --------------------------------------------------------------------------- QDQ derivation


def decoder_float(int8: Path, out: Path, prefix: str) -> list[str]:
    """The shipped graph with only the ``ConvInteger`` nodes whose names start with ``prefix``
    (a part of the decoder) made float again; returns the names of those float ``Conv``s."""
    import onnx

    from kokoro_graph import convert

    model = onnx.load(str(int8))
    convert(model, select=lambda node: node.name.startswith(prefix) and node.op_type == "ConvInteger")
    onnx.save(model, str(out))
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "Conv" and n.name.startswith(prefix) and n.name.endswith("_float")
    ]


def calibration_feeds(front: Frontend) -> list[dict[str, npt.NDArray[Any]]]:
    feeds = []
    for i, sentence in enumerate(CALIBRATION_SENTENCES):
        voice = VOICES[i % len(VOICES)]
        tokens = front.tokens(sentence)
        style = front.styles[voice]
        feeds.append(
            {
                "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
                "style": np.asarray(style[min(len(tokens), len(style)) - 1], dtype=np.float32),
                "speed": np.array([1.0], dtype=np.float32),
            }
        )
    return feeds


def quantise(
    float_model: Path, out: Path, nodes: list[str], feeds: list[dict[str, Any]], method: str
) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(feeds)

        def get_next(self) -> dict[str, Any] | None:
            return next(self.items, None)

    quantize_static(
        str(float_model),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["Conv"],
        nodes_to_quantize=nodes,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.Percentile if method == "percentile" else CalibrationMethod.MinMax,
        extra_options={"CalibPercentile": 99.999} if method == "percentile" else {},
    )


def log_mel(audio: npt.NDArray[np.float32], rate: int = 24000, bands: int = 80) -> npt.NDArray[np.float64]:
    """log10 mel power spectrogram (1024-point frames, 256 hop), for comparing two renderings."""
    frame, hop = 1024, 256
    if len(audio) < frame:
        audio = np.pad(audio, (0, frame - len(audio)))
    count = 1 + (len(audio) - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(count)[:, None]
    spec = np.abs(np.fft.rfft(audio[idx] * np.hanning(frame), axis=1)) ** 2
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    edges = np.linspace(mel(40), mel(rate / 2), bands + 2)
    hz = 700 * (10 ** (edges / 2595) - 1)
    bins = np.fft.rfftfreq(frame, 1 / rate)
    fb = np.zeros((bands, len(bins)))
    for b in range(bands):
        lo, mid, hi = hz[b], hz[b + 1], hz[b + 2]
        fb[b] = np.clip(np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)), 0, None)
    return np.log10(spec @ fb.T + 1e-8)


def mel_distance(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    """Mean absolute log-mel difference in dB over the loud frames of ``a``."""
    n = min(len(a), len(b))
    ma, mb = log_mel(a[:n]), log_mel(b[:n])
    loud = ma.max(axis=1) > ma.max() - 5
    return float(10 * np.mean(np.abs(ma[loud] - mb[loud])))


def quality(runners: dict[str, Runner], front: Frontend) -> dict[str, Any]:
    """WER through Whisper base per graph, and log-mel distance to the shipped graph."""
    import soxr

    from openrealtime.engines.asr.wer import corpus_wer
    from openrealtime.engines.asr.whisper import WhisperTranscriber

    asr = WhisperTranscriber("whisper-base", cpu_threads=1)
    out: dict[str, Any] = {}
    reference: dict[tuple[str, str], npt.NDArray[np.float32]] = {}
    for name, runner in runners.items():
        hyps, distances = [], []
        for voice in ("jf_alpha", "jm_kumo"):
            for sentence in WER_SENTENCES:
                audio = np.concatenate(
                    [runner.run(t, front.styles[voice]) for t in front.sentence_tokens(sentence)]
                )
                key = (voice, sentence)
                if key not in reference:
                    reference[key] = audio
                distances.append(mel_distance(reference[key], audio))
                pcm = soxr.resample(audio, 24000, 16000).astype(np.float32)
                hyps.append((sentence, str(asr.transcribe(pcm, language="en").text)))
        out[name] = {
            "wer": round(corpus_wer(hyps), 4),
            "log_mel_db_vs_shipped_mean": round(statistics.mean(distances), 3),
            "log_mel_db_vs_shipped_max": round(max(distances), 3),
            "hypotheses": [h for _, h in hyps],
        }
        print(
            f"{name:20} WER {100 * out[name]['wer']:.1f}%  log-mel vs shipped {out[name]['log_mel_db_vs_shipped_mean']:.2f} dB",
            flush=True,
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-options", action="store_true")
    parser.add_argument("--skip-qdq", action="store_true")
    parser.add_argument("--calibration", choices=("minmax", "percentile"), default="minmax")
    parser.add_argument(
        "--prefix",
        default="/decoder/",
        help="quantise the convolutions under this node-name prefix (e.g. /decoder/decoder/generator/resblocks)",
    )
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "kokoro-speedups")
    parser.add_argument("--out", type=Path, default=RESULTS / "kokoro_speedups.json")
    args = parser.parse_args(argv)

    from openrealtime.engines.tts.kokoro import kokoro_assets

    info = machine_info("onnxruntime", "kokoro-onnx", "onnx")
    info["load_average_start"] = os.getloadavg()
    print("machine:", json.dumps(info), flush=True)
    shipped = kokoro_assets(voices=False).model
    front = Frontend()
    result: dict[str, Any] = {"machine": info, "test_text": TEST_TEXT}

    if not args.skip_options:
        base: dict[str, Any] = {"threads": 1}
        variants = {
            "shipped, 1 thread (server default)": base,
            "2 threads": {"threads": 2},
            "2 threads, spinning": {"threads": 2, "spin": True},
            "parallel execution, 2 inter-op": {
                "threads": 1,
                "execution_mode": "parallel",
                "inter_threads": 2,
            },
            "memory arena off": {"threads": 1, "arena": False},
            "optimisation basic": {"threads": 1, "optimization": "basic"},
        }
        result["session_options"] = compare(
            {name: (lambda o=o: Runner(shipped, o)) for name, o in variants.items()}, front, args.repeats
        )

    if not args.skip_qdq:
        args.work.mkdir(parents=True, exist_ok=True)
        tag = args.prefix.strip("/").replace("/", "_")
        float_model = args.work / f"kokoro-{tag}-float.onnx"
        qdq_model = args.work / f"kokoro-{tag}-qdq-{args.calibration}.onnx"
        start = time.perf_counter()
        nodes = decoder_float(shipped, float_model, args.prefix)
        quantise(float_model, qdq_model, nodes, calibration_feeds(front), args.calibration)
        result["qdq_derivation_seconds"] = round(time.perf_counter() - start, 1)
        result["qdq_nodes"] = len(nodes)
        result["qdq_prefix"] = args.prefix
        print(
            f"derived {qdq_model} ({len(nodes)} decoder convolutions) in {result['qdq_derivation_seconds']} s"
        )
        graphs = {"shipped int8": shipped, "decoder float": float_model, "decoder QDQ int8": qdq_model}
        result["graphs"] = compare(
            {name: (lambda p=p: Runner(p, {"threads": 1})) for name, p in graphs.items()}, front, args.repeats
        )
        result["quality"] = quality({name: Runner(p, {"threads": 1}) for name, p in graphs.items()}, front)

    info["load_average_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
