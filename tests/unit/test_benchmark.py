"""The pure parts of ``openrealtime bench``: percentiles, underrun accounting, the stop rule,
the server-log parser, the level summary and the bundled samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from openrealtime.benchmark.audio import RATE, bundled_utterances, load_utterance, room_tone
from openrealtime.benchmark.caller import TurnResult
from openrealtime.benchmark.report import level_summary
from openrealtime.benchmark.runner import default_out_dir
from openrealtime.benchmark.server import BenchServer, parse_turn_timings
from openrealtime.benchmark.stats import PlaybackClock, judge_level, percentile, summarize, sweep_levels

# --- percentiles ------------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.95) == 95.0
    assert percentile(values, 1.0) == 100.0
    assert percentile(values, 0.0) == 1.0


def test_percentile_of_a_small_sample_is_conservative() -> None:
    assert percentile([300.0, 100.0, 200.0], 0.95) == 300.0
    assert percentile([300.0, 100.0, 200.0], 0.5) == 200.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.0


def test_percentile_of_nothing_and_bad_q() -> None:
    assert percentile([], 0.5) is None
    with pytest.raises(ValueError):
        percentile([1.0], 1.5)


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1), st.floats(min_value=0, max_value=1))
def test_percentile_is_a_member_with_at_least_q_at_or_below(values: list[float], q: float) -> None:
    result = percentile(values, q)
    assert result in values
    assert sum(v <= result for v in values) >= q * len(values)


def test_summarize_rounds_and_handles_empty() -> None:
    assert summarize([]) == {"n": 0, "p50": None, "p95": None, "mean": None, "max": None}
    assert summarize([1.04, 2.06]) == {"n": 2, "p50": 1.0, "p95": 2.1, "mean": 1.6, "max": 2.1}


# --- underruns -------------------------------------------------------------------------


def test_deltas_arriving_ahead_of_playback_never_underrun() -> None:
    clock = PlaybackClock()
    # 0.2 s pieces arriving every 0.1 s: the buffer only grows
    for i in range(10):
        assert clock.add(10.0 + i * 0.1, 0.2) is False
    assert clock.underruns == 0
    assert clock.playback_end == pytest.approx(12.0)
    assert clock.played_s == pytest.approx(2.0)


def test_a_delta_after_the_buffer_ran_dry_is_one_underrun_with_its_gap() -> None:
    clock = PlaybackClock()
    clock.add(0.0, 0.5)  # plays 0.0-0.5
    clock.add(0.3, 0.5)  # queued: plays 0.5-1.0
    assert clock.add(1.25, 0.5) is True  # 0.25 s of silence heard
    assert clock.add(1.5, 0.5) is False  # plays 1.75-2.25
    assert clock.underruns == 1
    assert clock.gap_s == pytest.approx(0.25)
    assert clock.playback_end == pytest.approx(2.25)


def test_a_delta_exactly_at_the_end_of_playback_is_not_an_underrun() -> None:
    clock = PlaybackClock()
    clock.add(1.0, 0.5)
    assert clock.add(1.5, 0.5) is False
    assert clock.underruns == 0


def test_real_time_synthesis_too_slow_underruns_every_piece() -> None:
    clock = PlaybackClock()
    # each 0.1 s piece takes 0.15 s to make: every later one comes 0.05 s late
    for i in range(5):
        clock.add(i * 0.15, 0.1)
    assert clock.underruns == 4
    assert clock.gap_s == pytest.approx(0.2)


# --- the sweep -------------------------------------------------------------------------


def test_sweep_levels_double_and_end_at_the_maximum() -> None:
    assert sweep_levels(1) == [1]
    assert sweep_levels(2) == [1, 2]
    assert sweep_levels(8) == [1, 2, 4, 8]
    assert sweep_levels(6) == [1, 2, 4, 6]
    with pytest.raises(ValueError):
        sweep_levels(0)


def test_a_level_holds_within_the_limit_without_underruns() -> None:
    verdict = judge_level([800.0, 900.0, 1400.0], turns=3, underruns=0, p95_limit_ms=1500)
    assert verdict.held


def test_a_level_misses_on_p95_over_the_limit() -> None:
    verdict = judge_level([800.0] * 19 + [1600.0], turns=20, underruns=0, p95_limit_ms=1500)
    assert verdict.held  # the one slow turn is above p95 of 20
    verdict = judge_level([800.0] * 18 + [1600.0] * 2, turns=20, underruns=0, p95_limit_ms=1500)
    assert not verdict.held and "p95 1600" in verdict.reason


def test_a_level_misses_on_underruns_or_unanswered_turns() -> None:
    assert not judge_level([800.0, 900.0], turns=2, underruns=1, p95_limit_ms=1500).held
    missed = judge_level([800.0], turns=2, underruns=0, p95_limit_ms=1500)
    assert not missed.held and "1 of 2" in missed.reason
    assert not judge_level([], turns=0, underruns=0, p95_limit_ms=1500).held


# --- server log and level summary ----------------------------------------------------------


def test_turn_timings_are_read_from_a_server_log() -> None:
    record = {"response_id": "resp_1", "from": "speech_stopped", "llm_first_token_ms": 150.0}
    log = "\n".join(
        [
            "2026-01-01 INFO uvicorn: started",
            f"2026-01-01 INFO openrealtime.runtime: turn timings {json.dumps(record)}",
            "2026-01-01 INFO openrealtime.runtime: turn timings {not json",
            'turn timings {"no_id": 1}',
        ]
    )
    assert parse_turn_timings(log) == {"resp_1": record}


def test_realtime_url_of_a_base_url() -> None:
    assert BenchServer("http://127.0.0.1:8000", "k").realtime_url == (
        "ws://127.0.0.1:8000/v1/realtime?model=gpt-realtime"
    )
    assert BenchServer("https://host/v1/", "k").realtime_url == "wss://host/v1/realtime?model=gpt-realtime"


def test_level_summary_places_server_stages_after_the_end_of_speech() -> None:
    turns = [
        TurnResult(0, 0, "a", voice_to_voice_ms=900.0, speech_stopped_ms=300.0, transcript_ms=320.0),
        TurnResult(1, 0, "b", voice_to_voice_ms=1100.0, speech_stopped_ms=310.0, underruns=2),
        TurnResult(2, 0, "c", error="no answer", reference="ten of clubs", transcript="10 of clubs"),
    ]
    turns[0].server = {"from": "speech_stopped", "llm_first_token_ms": 200.0, "tts_first_chunk_ms": 550.0}
    summary = level_summary(3, turns, p95_limit_ms=1500)
    assert summary["turn_count"] == 3 and summary["answered"] == 2
    assert summary["p50_ms"] == 900.0 and summary["p95_ms"] == 1100.0
    assert summary["underruns"] == 2 and summary["underrun_turns"] == 1
    assert not summary["held"]
    stages = summary["stages_ms_after_speech_end"]
    assert stages["llm_first_token"]["p50"] == 500.0
    assert stages["tts_first_chunk"]["p50"] == 850.0
    assert stages["first_audio_received"]["n"] == 2
    assert summary["server_stages_ms_after_speech_stopped"]["llm_first_token_ms"]["n"] == 1
    assert summary["asr_wer"] == 0.0  # "10" and "ten" score alike
    assert summary["errors"] == ["no answer"]
    json.dumps(summary)


# --- audio ---------------------------------------------------------------------------


def test_bundled_samples_are_real_speech_with_edges_inside_them() -> None:
    utterances = bundled_utterances()
    assert 3 <= len(utterances) <= 5
    for utterance in utterances:
        assert utterance.pcm.dtype == np.int16
        assert 0 < utterance.speech_end_ms < utterance.duration_s * 1000
        assert utterance.transcript
        assert np.abs(utterance.pcm.astype(np.float64)).max() > 3000  # not silence


def test_a_file_without_annotation_gets_its_end_from_the_vad(tmp_path: Path) -> None:
    import soundfile

    clip = bundled_utterances()[0]  # cards-001, speech ends at 950 ms
    path = tmp_path / "call.wav"
    soundfile.write(str(path), clip.pcm, RATE)
    path.with_suffix(".txt").write_text("ten of clubs\n")
    loaded = load_utterance(path)
    assert loaded.transcript == "ten of clubs"
    assert abs(loaded.speech_end_ms - clip.speech_end_ms) <= 150
    assert loaded.pcm.size == pytest.approx(clip.pcm.size, abs=2)


def test_room_tone_is_quiet_noise_of_the_length_asked() -> None:
    clip = bundled_utterances()[0].pcm
    tone = room_tone(clip, 4800, seed=3)
    assert tone.dtype == np.int16 and tone.size == 4800
    rms = float(np.sqrt((tone.astype(np.float64) ** 2).mean()))
    assert 0 < rms < float(np.sqrt((clip.astype(np.float64) ** 2).mean()))


def test_results_go_to_bench_results_in_a_checkout(tmp_path: Path) -> None:
    (tmp_path / "bench").mkdir()
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "openrealtime"\n')
    (tmp_path / "src").mkdir()
    assert default_out_dir(tmp_path / "src") == tmp_path / "bench" / "results"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "other"\n')
    assert default_out_dir(elsewhere) == elsewhere


# --- the plot ----------------------------------------------------------------------------


def _report(levels: list[dict[str, object]]) -> dict[str, object]:
    return {
        "levels": levels,
        "config": {"p95_limit_ms": 1500.0, "silence_ms": 300},
        "held_concurrency": None,
        "machine": {"cpu": "test", "logical_cpus": 2, "load_average": [0.0, 0.0, 0.0]},
    }


@pytest.mark.parametrize("answered", [True, False])
def test_the_plot_is_a_png_with_or_without_answers(tmp_path: Path, answered: bool) -> None:
    from openrealtime.benchmark.report import plot_report

    levels = []
    for concurrency in (1, 2):
        turns = [
            TurnResult(i, 0, "a", voice_to_voice_ms=800.0 + 100 * i if answered else None, error=None)
            for i in range(concurrency)
        ]
        levels.append(level_summary(concurrency, turns, p95_limit_ms=1500))
    path = tmp_path / "plot.png"
    plot_report(_report(levels), path)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and path.stat().st_size > 10_000


def test_caller_asks_for_the_turn_detection_it_measures() -> None:
    from openrealtime.benchmark.caller import CallerSettings, turn_detection_config

    assert turn_detection_config(CallerSettings(silence_ms=400)) == {
        "type": "server_vad",
        "silence_duration_ms": 400,
    }
    semantic = CallerSettings(turn_detection="semantic_vad", eagerness="high")
    assert turn_detection_config(semantic) == {"type": "semantic_vad", "eagerness": "high"}
    with pytest.raises(ValueError):
        turn_detection_config(CallerSettings(turn_detection="push_to_talk"))


def test_bench_command_rejects_unknown_turn_detection() -> None:
    from typer.testing import CliRunner

    from openrealtime.cli import app

    result = CliRunner().invoke(app, ["bench", "--turn-detection", "magic"])
    assert result.exit_code != 0
    result = CliRunner().invoke(app, ["bench", "--turn-detection", "semantic_vad", "--eagerness", "eager"])
    assert result.exit_code != 0
