"""The exported image classifier is checked by what it does: the real export (from `make models`)
passes, a changed or damaged file is refused with a clear error, the sidecar makes later loads
cheap, and the reference inputs are bit-exact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from openrealtime.engines.assets import ModelIntegrityError, sha256_file
from openrealtime.engines.vision import classifier_check as check
from openrealtime.engines.vision.classifier import (
    ImageClassifier,
    classifier_path,
    preprocess,
    verified_classifier,
)


@pytest.fixture(scope="module")
def exported() -> Path:
    path = classifier_path()
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make models` (scripts/vision-model.sh)")
    return path


@pytest.fixture
def model_dir(tmp_path: Path, exported: Path) -> Path:
    """A private model folder holding a copy of the export, without a sidecar."""
    shutil.copyfile(exported, tmp_path / exported.name)
    return tmp_path


def test_the_export_behaves_as_recorded(exported: Path) -> None:
    report = check.check_behaviour(check.onnx_runner(exported))
    assert report.ok, report.problems
    assert report.max_logit_error < report.tolerance / 10  # same machine kind: far inside the tolerance


def test_the_reference_inputs_are_bit_exact() -> None:
    cases = check.reference()["inputs"]
    assert set(cases) == {"photo", *check.SYNTHETIC}
    for name, image in check.reference_inputs().items():
        assert check.input_digest(preprocess(image)) == cases[name]["input_sha256"], name


def test_the_reference_leaves_room_for_rounding() -> None:
    ref = check.reference()
    tolerance = ref["tolerance"]["logit_abs"]
    assert ref["source"]["version"] == "0.1.0" and len(ref["source"]["sha256"]) == 64
    for name, case in ref["inputs"].items():
        logits = [entry[2] for entry in case["top"]]
        assert len(logits) == check.RECORDED and logits == sorted(logits, reverse=True), name
        gaps = np.diff(logits[: check.TOP_K + 1])
        assert float(-gaps.max()) >= check.MIN_GAP_TOLERANCES * tolerance, name


def test_rounding_passes_and_real_changes_fail(exported: Path) -> None:
    run = check.onnx_runner(exported)
    rng = np.random.default_rng(3)

    def noisy(tensor: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:  # far above ISA noise
        return run(tensor) + rng.uniform(-2e-4, 2e-4, 1000)

    assert check.check_behaviour(noisy).ok

    scaled = check.check_behaviour(lambda t: run(t) * 1.01)
    assert not scaled.ok and any("logits differ by up to" in p for p in scaled.problems)

    def swapped(tensor: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        logits = run(tensor).copy()
        logits[[400, 667]] = logits[[667, 400]]  # academic gown <-> mortarboard
        return logits

    report = check.check_behaviour(swapped)
    assert any(p.startswith("photo: top-5 classes [667, 400") for p in report.problems), report.problems
    bad_shape = check.check_behaviour(lambda t: run(t)[:10])
    assert any("not 1000 finite logits" in p for p in bad_shape.problems)


def test_the_sidecar_makes_loads_cheap_and_catches_a_changed_file(model_dir: Path) -> None:
    model = model_dir / "efficientnet-lite0.onnx"
    sidecar = check.sidecar_path(model)
    assert not sidecar.exists()
    assert "behaviour re-checked" in check.ensure_verified(model, "hint")
    record = json.loads(sidecar.read_text())
    assert record["sha256"] == sha256_file(model)
    assert record["reference_sha256"] == sha256_file(check.reference_path())
    assert check.ensure_verified(model, "hint") == "sha256 matches its verified sidecar"

    # a stale sidecar (another file was verified) makes the next load check behaviour again
    sidecar.write_text(json.dumps({**record, "sha256": "0" * 64}))
    assert "behaviour re-checked" in check.ensure_verified(model, "hint")
    assert json.loads(sidecar.read_text())["sha256"] == record["sha256"]

    # weights overwritten in the middle of the file: refused, whatever onnxruntime makes of it
    data = bytearray(model.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(4096)
    model.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="does not behave like EfficientNet-Lite0") as error:
        verified_classifier(model_dir)
    assert "Refusing to load it" in str(error.value) and "make models" in str(error.value)
    assert json.loads(sidecar.read_text())["sha256"] == record["sha256"], "no sidecar for a bad file"

    # a truncated file onnxruntime cannot even parse: the same clear refusal
    model.write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(ModelIntegrityError, match="onnxruntime cannot run it"):
        ImageClassifier(model_dir).load()


def test_install_checks_a_fresh_export(tmp_path: Path, exported: Path) -> None:
    staged = tmp_path / ".efficientnet-lite0.abc123.onnx"
    target = tmp_path / "models" / "efficientnet-lite0.onnx"
    target.parent.mkdir()
    shutil.copyfile(exported, staged)
    provenance = {"source_sha256": check.reference()["source"]["sha256"], "torch": "2.13.0+cpu"}
    staged.with_name(staged.name + ".export.json").write_text(json.dumps(provenance))
    report = check.install_export(staged, target, "hint")
    assert report.ok and target.is_file() and not staged.exists()
    sidecar = json.loads(check.sidecar_path(target).read_text())
    assert sidecar["export"]["torch"] == "2.13.0+cpu" and sidecar["sha256"] == sha256_file(target)
    assert check.ensure_verified(target, "hint") == "sha256 matches its verified sidecar"

    # an export that names other weights is refused before anything is moved
    shutil.copyfile(exported, staged)
    staged.with_name(staged.name + ".export.json").write_text(json.dumps({"source_sha256": "f" * 64}))
    with pytest.raises(ModelIntegrityError, match=r"exported from weights with sha256 f{64}"):
        check.install_export(staged, tmp_path / "other.onnx", "hint")
    assert staged.exists() and not (tmp_path / "other.onnx").exists()


def test_the_classifier_names_the_photo(model_dir: Path) -> None:
    image = check.reference_inputs(("photo",))["photo"]
    labels = ImageClassifier(model_dir).classify(image)
    assert [x.label for x in labels[:3]] == ["academic gown", "mortarboard", "military uniform"]
