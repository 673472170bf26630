"""smart-turn v3.2 end-of-turn detection: features, determinism, cost, and honest accuracy.

The model separates complete from cut-off utterances only weakly on our real clips (AUC about
0.65 here, 0.63 in models.md), so accuracy is asserted on two clips where it clearly works
and as "better than chance" over all of them; the numbers are printed for the record.
"""

from __future__ import annotations

import importlib.util
import statistics
import time
import wave
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from openrealtime.engines import assets
from openrealtime.engines.base import TurnDetector
from openrealtime.engines.turn.smart_turn import SmartTurnDetector, log_mel_features, prepare_audio

AUDIO_DIR = Path(__file__).resolve().parents[3] / "shared" / "audio"
PINNED_SHA256 = "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"

# Hand-annotated speech edges (ms), as in tests/integration/test_vad_real_speech.py.
EDGES = {
    "cards-001": (180, 950),
    "cards-002": (120, 1700),
    "cards-003": (100, 1240),
    "cards-004": (200, 1220),
    "cards-005": (210, 3230),
    "goforward": (510, 2120),
    "librivox-0870": (240, 6750),
    "librivox-0880": (260, 2780),
    "librivox-0890": (275, 5070),
    "librivox-0920": (270, 5780),
    "librivox-0930": (275, 2950),
}

needs_audio = pytest.mark.skipif(not AUDIO_DIR.is_dir(), reason="shared real-speech clips not present")


def load(name: str) -> np.ndarray:
    with wave.open(str(AUDIO_DIR / f"{name}.wav")) as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float32) / 32768


def turn_audio(clip: np.ndarray, onset_ms: int, end_sample: int) -> np.ndarray:
    """What the segmenter hands over: 300 ms before the onset up to the cut, then 200 ms of silence."""
    start = max(0, (onset_ms - 300) * 16)
    return np.concatenate([clip[start:end_sample], np.zeros(3200, dtype=np.float32)])


def midword_cuts(clip: np.ndarray, onset_ms: int, offset_ms: int) -> list[int]:
    """Cut points in the middle of a word: the loudest 10 ms near 35 %, 50 % and 65 % of the turn."""
    energy = (clip[: clip.size // 160 * 160].reshape(-1, 160) ** 2).mean(1)
    cuts = []
    for fraction in (0.35, 0.5, 0.65):
        centre = int((onset_ms + (offset_ms - onset_ms) * fraction) / 10)
        k = centre - 10 + int(np.argmax(energy[centre - 10 : centre + 10]))
        cuts.append(k * 160 + 80)
    return cuts


@pytest.fixture(scope="module")
def detector() -> SmartTurnDetector:
    return SmartTurnDetector()


def test_is_a_turn_detector(detector: SmartTurnDetector) -> None:
    assert isinstance(detector, TurnDetector)
    assert detector.sample_rate == 16000
    assert detector.model_path == assets.resolve("smart-turn-v3.2")


def test_prepare_audio_keeps_the_last_eight_seconds() -> None:
    short = np.ones(16000, dtype=np.float32)
    window = prepare_audio(short)
    assert window.shape == (128000,) and window[:-16000].max() == 0 and window[-16000:].min() == 1
    long = np.arange(200000, dtype=np.float32)
    assert np.array_equal(prepare_audio(long), long[-128000:])
    assert prepare_audio(np.zeros(0, dtype=np.float32)).shape == (128000,)


def test_features_match_pipecats_reference_bit_for_bit() -> None:
    """pipecat's numpy feature code, loaded from its file (not importing the pipecat package)."""
    try:
        files = metadata.files("pipecat-ai") or []
    except metadata.PackageNotFoundError:
        pytest.skip("pipecat-ai wheel not installed")
    source = next((f for f in files if f.as_posix().endswith("smart_turn/_whisper_features.py")), None)
    if source is None:
        pytest.skip("pipecat's feature extractor not found")
    spec = importlib.util.spec_from_file_location("_pipecat_whisper_features", str(source.locate()))
    assert spec is not None and spec.loader is not None
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    rng = np.random.default_rng(0)
    for audio in (rng.standard_normal(40000).astype(np.float32) * 0.1, np.zeros(10, dtype=np.float32)):
        window = prepare_audio(audio)
        ours = log_mel_features(window)
        assert ours.shape == (80, 800) and ours.dtype == np.float32
        assert np.array_equal(ours, reference.compute_whisper_log_mel_features(window, do_normalize=True))


def test_probabilities_are_in_range_and_deterministic(detector: SmartTurnDetector) -> None:
    rng = np.random.default_rng(1)
    for audio in (np.zeros(16000, dtype=np.float32), rng.standard_normal(48000).astype(np.float32) * 0.05):
        first = detector.end_of_turn_probability(audio)
        assert 0.0 <= first <= 1.0
        assert detector.end_of_turn_probability(audio) == first
    assert SmartTurnDetector().end_of_turn_probability(audio) == first  # a second session agrees


@needs_audio
def test_cost_per_call(detector: SmartTurnDetector) -> None:
    audio = load("librivox-0870")
    cpu, wall = [], []
    for _ in range(5):
        c0, w0 = time.process_time(), time.perf_counter()
        detector.end_of_turn_probability(audio)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    cpu_ms, wall_ms = statistics.median(cpu) * 1000, statistics.median(wall) * 1000
    print(f"smart-turn: cpu {cpu_ms:.0f} ms, wall {wall_ms:.0f} ms")
    # ~140-190 ms on one thread here; the bound leaves room for a shared, busy machine.
    assert cpu_ms < 300


@needs_audio
@pytest.mark.parametrize("name", ["librivox-0920", "librivox-0870"])
def test_complete_turn_scores_higher_than_mid_word_cuts(detector: SmartTurnDetector, name: str) -> None:
    clip = load(name)
    onset, offset = EDGES[name]
    complete = detector.end_of_turn_probability(turn_audio(clip, onset, offset * 16))
    cuts = midword_cuts(clip, onset, offset)
    cut_scores = [detector.end_of_turn_probability(turn_audio(clip, onset, c)) for c in cuts]
    # Single cuts sit near the decision boundary and move with the CPU's kernels and the
    # onnxruntime release (librivox-0920's 65 % cut: 0.70 with onnxruntime 1.30+ on AVX2, under
    # 0.5 with 1.23), so the claim is about the cuts together: clearly below the complete turn.
    assert complete > 0.9
    assert statistics.fmean(cut_scores) < complete - 0.25, (complete, cut_scores)
    assert min(cut_scores) < 0.5, cut_scores


@needs_audio
@pytest.mark.slow
def test_better_than_chance_over_all_clips(detector: SmartTurnDetector) -> None:
    complete, cut = [], []
    for name, (onset, offset) in EDGES.items():
        clip = load(name)
        complete.append(detector.end_of_turn_probability(turn_audio(clip, onset, offset * 16)))
        cut += [
            detector.end_of_turn_probability(turn_audio(clip, onset, c))
            for c in midword_cuts(clip, onset, offset)
        ]
    pairs = [(a > b) + 0.5 * (a == b) for a in complete for b in cut]
    auc = sum(pairs) / len(pairs)
    print(f"smart-turn AUC complete vs mid-word cut on {len(complete)} clips: {auc:.2f}")
    assert auc > 0.5


def test_refuses_a_model_with_the_wrong_hash(tmp_path: Path) -> None:
    original = assets.resolve("smart-turn-v3.2")
    tampered = tmp_path / "smart-turn.onnx"
    data = bytearray(original.read_bytes())
    data[-1] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(assets.ModelIntegrityError):
        SmartTurnDetector(tampered, expected_sha256=PINNED_SHA256)
    with pytest.raises(FileNotFoundError):
        SmartTurnDetector(tmp_path / "missing.onnx")
    with pytest.raises(ValueError):
        SmartTurnDetector(intra_op_num_threads=0)
