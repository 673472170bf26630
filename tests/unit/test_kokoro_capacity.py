"""``KOKORO=auto``: Kokoro's voices only where the cores for them are, counted honestly."""

from __future__ import annotations

from pathlib import Path

import pytest

from openrealtime.config import Settings
from openrealtime.engines.tts import capacity
from openrealtime.engines.tts.capacity import cgroup_cpu_quota, kokoro_capacity


def test_threshold_follows_from_the_measured_cost() -> None:
    # 0.8 CPU-s per audio-s at RTF 0.35 and 0.8 efficiency: 2.9 -> 3 threads, + 1 other session
    assert kokoro_capacity(2).threads == 3
    assert kokoro_capacity(2).needed == 4
    assert not kokoro_capacity(2).enabled
    assert not kokoro_capacity(3.5).enabled
    assert kokoro_capacity(4).enabled and kokoro_capacity(64).enabled
    # a cheaper graph would need fewer cores
    assert kokoro_capacity(3, cost=0.5).needed == 3
    assert "2 usable cores, 4 needed" in kokoro_capacity(2).explain()


def test_this_machine_counts_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capacity, "cgroup_cpu_quota", lambda: None)
    monkeypatch.setattr(capacity.os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    assert capacity.usable_cpus() == 2
    monkeypatch.setattr(capacity, "cgroup_cpu_quota", lambda: 1.5)
    assert capacity.usable_cpus() == 1.5
    monkeypatch.setattr(capacity.os, "sched_getaffinity", lambda _pid: set(range(16)), raising=False)
    assert capacity.usable_cpus() == 1.5  # a container quota caps a big affinity mask


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text("0::/box/app\n")
    root = tmp_path / "fs"
    (root / "box" / "app").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory\n")
    (root / "box" / "app" / "cpu.max").write_text("250000 100000\n")
    assert cgroup_cpu_quota(proc, root) == 2.5
    (root / "box" / "app" / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(proc, root) is None


def test_cgroup_v1_quota(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text("4:memory:/x\n2:cpu,cpuacct:/docker/abc\n0::/\n")
    base = tmp_path / "fs" / "cpu,cpuacct" / "docker" / "abc"
    base.mkdir(parents=True)
    (base / "cpu.cfs_quota_us").write_text("300000\n")
    (base / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(proc, tmp_path / "fs") == 3.0
    (base / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(proc, tmp_path / "fs") is None
    assert cgroup_cpu_quota(tmp_path / "missing", tmp_path / "fs") is None


@pytest.mark.parametrize(("cpus", "expected"), [(2.0, False), (4.0, True)])
def test_settings_resolve_auto(monkeypatch: pytest.MonkeyPatch, cpus: float, expected: bool) -> None:
    monkeypatch.setattr(capacity, "usable_cpus", lambda: cpus)
    monkeypatch.delenv("OPENREALTIME_KOKORO", raising=False)
    assert Settings().kokoro is expected  # the default is auto
    assert Settings(kokoro="auto").kokoro is expected
    assert Settings(kokoro="AUTO").kokoro is expected
    monkeypatch.setenv("OPENREALTIME_KOKORO", "auto")
    assert Settings().kokoro is expected
    monkeypatch.setenv("OPENREALTIME_KOKORO", "true")
    assert Settings().kokoro is True
    monkeypatch.setenv("OPENREALTIME_KOKORO", "false")
    assert Settings().kokoro is False


def test_settings_refuse_other_values(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.delenv("OPENREALTIME_KOKORO", raising=False)
    with pytest.raises(ValidationError):
        Settings(kokoro="sometimes")


def test_kokoro_gets_the_threads_the_rule_gives_it(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("kokoro_onnx")
    from openrealtime.engines.base import Synthesizer
    from openrealtime.engines.tts.kokoro import KokoroSynthesizer
    from openrealtime.engines.tts.voices import default_engines

    def threads(engine: Synthesizer) -> int:
        assert isinstance(engine, KokoroSynthesizer)
        return engine.onnx_threads

    monkeypatch.setattr(capacity, "usable_cpus", lambda: 8.0)
    # the Kokoro weights come with the set-up (requirements/models.txt): missing ones fail here
    roomy = default_engines(kokoro=True, espeak=False, piper=False, onnx_threads=1)
    monkeypatch.setattr(capacity, "usable_cpus", lambda: 2.0)
    small = default_engines(kokoro=True, espeak=False, piper=False, onnx_threads=1)
    assert threads(roomy["kokoro"]) == 3
    assert threads(small["kokoro"]) == 1
    explicit = default_engines(kokoro=True, espeak=False, piper=False, onnx_threads=1, kokoro_threads=2)
    assert threads(explicit["kokoro"]) == 2
