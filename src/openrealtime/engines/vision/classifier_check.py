"""Check the exported EfficientNet-Lite0 ONNX file by what it does, not by its bytes.

An ONNX export is not byte-reproducible across machines (the same torch, weights and script
gave another sha256 on another machine), so the export cannot be pinned by hash. What is pinned
is its source (the weights package's version and the sha256 of the ``.pth`` inside it, checked
by ``scripts/export_efficientnet_lite0.py`` before it loads anything) and its behaviour: fixed,
deterministic inputs (a photo shipped beside this module and synthetic patterns built from
integer arithmetic, none resampled) must give the top-5 labels and logits recorded in
``classifier_reference.json`` within the tolerance stored there.

The verified file gets a sidecar (``efficientnet-lite0.onnx.verified.json``) with its own
sha256. A load hashes the 19 MB file (about 0.1 s) and trusts it while the hash and the
reference still match the sidecar; otherwise it checks the behaviour again and refuses the file
with a clear error when that fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from ..assets import ModelIntegrityError, sha256_file

__all__ = [
    "REFERENCE_FILE",
    "SYNTHETIC",
    "BehaviourReport",
    "check_behaviour",
    "ensure_verified",
    "input_digest",
    "install_export",
    "onnx_runner",
    "reference",
    "reference_inputs",
    "reference_path",
    "sidecar_path",
    "write_reference",
]

REFERENCE_FILE = "classifier_reference.json"
PHOTO_FILE = "classifier_photo.png"
"""Grace Hopper in uniform (US Navy photograph, public domain; the sample in matplotlib's
data), reduced to 256x300 so that preprocessing crops it without resampling; PNG, so
decoding is exact everywhere (a JPEG decoder may differ by one level, which moves logits by
0.005)."""
SIDECAR_SUFFIX = ".verified.json"
SIDECAR_VERSION = 1
TOP_K = 5
RECORDED = 10
"""Logits recorded per input: the reference top 10."""
MIN_GAP_TOLERANCES = 5.0
"""A reference input qualifies only if its top 6 logits lie at least this many tolerances apart,
so logits within tolerance cannot reorder the top 5 (the label check cannot flake)."""

Logits = npt.NDArray[np.float64]
Runner = Callable[[npt.NDArray[np.float32]], Logits]


def reference_path() -> Path:
    return Path(str(resources.files(__package__).joinpath(REFERENCE_FILE)))


def reference() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(reference_path().read_text(encoding="utf-8"))
    return data


def sidecar_path(model: Path) -> Path:
    return model.with_name(model.name + SIDECAR_SUFFIX)


# --------------------------------------------------------------------------- inputs


def _synthetic(name: str) -> Image.Image:
    """256x256 RGB patterns from integer arithmetic only: bit-identical on every machine."""
    y, x = np.mgrid[0:256, 0:256].astype(np.int64)
    if name == "checkerboard":
        grey = ((x // 32 + y // 32) % 2) * 255
        rgb = np.stack([grey, grey, grey], axis=-1)
    elif name == "rings":
        ring = ((x - 128) ** 2 + (y - 128) ** 2) // 300 % 2
        rgb = np.stack([ring * 230 + 20, ring * 120 + 60, 200 - ring * 150], axis=-1)
    elif name == "grid":
        grey = np.where((x % 16 == 0) | (y % 16 == 0), 0, 230)
        rgb = np.stack([grey, grey, grey], axis=-1)
    elif name == "waves":
        rgb = np.stack([(x * x + 7 * y) // 64 % 256, y * y // 128 % 256, x * y // 256 % 256], axis=-1)
    elif name == "noise":
        channel = np.arange(3, dtype=np.int64)[None, None, :]
        mixed = (x[..., None] * 73856093) ^ (y[..., None] * 19349663) ^ (channel * 83492791)
        rgb = ((mixed & 0xFFFFFF) * 2654435761) >> 20 & 255
    elif name == "stripes":
        palette = np.array(
            [[255, 255, 255], [255, 255, 0], [0, 255, 255], [0, 255, 0], [255, 0, 255], [255, 0, 0],
             [0, 0, 255], [0, 0, 0]]
        )  # fmt: skip
        rgb = palette[x // 32]
    else:
        raise KeyError(name)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


SYNTHETIC = ("checkerboard", "rings", "stripes", "grid", "waves", "noise")


def reference_inputs(names: tuple[str, ...] | None = None) -> dict[str, Image.Image]:
    """The check's inputs by name: ``photo`` and the synthetic patterns."""
    wanted = names or ("photo", *SYNTHETIC)
    images: dict[str, Image.Image] = {}
    for name in wanted:
        if name == "photo":
            with resources.files(__package__).joinpath(PHOTO_FILE).open("rb") as fh:
                images[name] = Image.open(fh).convert("RGB")
        else:
            images[name] = _synthetic(name)
    return images


def input_digest(tensor: npt.NDArray[np.float32]) -> str:
    return hashlib.sha256(np.ascontiguousarray(tensor, dtype="<f4").tobytes()).hexdigest()


# --------------------------------------------------------------------------- running


def onnx_runner(model: Path, threads: int = 1) -> Runner:
    """Logits of one preprocessed image, with the engine's own onnxruntime settings."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])

    def run(tensor: npt.NDArray[np.float32]) -> Logits:
        return np.asarray(session.run(None, {"image": tensor})[0][0], dtype=np.float64)

    return run


@dataclass(frozen=True)
class BehaviourReport:
    """How the model did on the reference inputs."""

    max_logit_error: float
    tolerance: float
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_behaviour(run: Runner, expected: dict[str, Any] | None = None) -> BehaviourReport:
    """Compare ``run``'s logits on the reference inputs with the recorded ones."""
    from .classifier import preprocess

    ref = expected or reference()
    tolerance = float(ref["tolerance"]["logit_abs"])
    problems: list[str] = []
    worst = 0.0
    cases: dict[str, Any] = ref["inputs"]
    for name, image in reference_inputs(tuple(cases)).items():
        case = cases[name]
        tensor = preprocess(image)
        logits = run(tensor)
        if logits.shape != (1000,) or not np.all(np.isfinite(logits)):
            problems.append(f"{name}: the output is not 1000 finite logits (shape {logits.shape})")
            continue
        top = [int(i) for i in np.argsort(-logits, kind="stable")[:TOP_K]]
        want_top = [int(entry[0]) for entry in case["top"][:TOP_K]]
        errors = [abs(float(logits[int(entry[0])]) - float(entry[2])) for entry in case["top"]]
        errors.append(abs(float(logits.mean()) - float(case["mean"])))
        errors.append(abs(float(logits.std()) - float(case["std"])))
        error = max(errors)
        worst = max(worst, error)
        if top != want_top:
            labels = {int(e[0]): e[1] for e in case["top"]}
            problems.append(
                f"{name}: top-{TOP_K} classes {top} "
                f"({', '.join(labels.get(i, str(i)) for i in top)}), expected {want_top}"
            )
        if error > tolerance:
            problems.append(f"{name}: logits differ by up to {error:.4f} (tolerance {tolerance})")
        if problems and input_digest(tensor) != case.get("input_sha256"):
            problems.append(f"{name}: note: the preprocessed input itself differs from the reference's")
    return BehaviourReport(max_logit_error=worst, tolerance=tolerance, problems=tuple(problems))


# --------------------------------------------------------------------------- sidecar


def _reference_digest() -> str:
    return sha256_file(reference_path())


def _sidecar_ok(model: Path, digest: str) -> bool:
    try:
        data = json.loads(sidecar_path(model).read_text())
        return bool(
            data.get("version") == SIDECAR_VERSION
            and data.get("sha256") == digest
            and data.get("reference_sha256") == _reference_digest()
        )
    except (OSError, ValueError, AttributeError):
        return False


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_sidecar(model: Path, digest: str, report: BehaviourReport, provenance: dict[str, Any]) -> bool:
    """Record that ``model`` (with ``digest``) passed the check; False if it cannot be written."""
    import onnxruntime as ort

    payload = {
        "version": SIDECAR_VERSION,
        "file": model.name,
        "sha256": digest,
        "size": model.stat().st_size,
        "reference_sha256": _reference_digest(),
        "max_logit_error": round(report.max_logit_error, 6),
        "tolerance": report.tolerance,
        "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "checked_with": {"onnxruntime": ort.__version__, "cpu": _cpu_name()},
        "export": provenance,
    }
    target = sidecar_path(model)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=2)
            fh.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        return True
    except OSError:
        return False


def _check_file(model: Path, threads: int = 1) -> BehaviourReport:
    """``check_behaviour`` on an ONNX file; a file onnxruntime cannot load or run fails too."""
    try:
        return check_behaviour(onnx_runner(model, threads))
    except Exception as exc:  # onnxruntime raises its own types for a damaged file
        tolerance = float(reference()["tolerance"]["logit_abs"])
        problem = f"onnxruntime cannot run it ({type(exc).__name__}: {str(exc)[:300]})"
        return BehaviourReport(max_logit_error=float("inf"), tolerance=tolerance, problems=(problem,))


def _refusal(model: Path, report: BehaviourReport, hint: str) -> ModelIntegrityError:
    return ModelIntegrityError(
        f"image classifier {model} does not behave like EfficientNet-Lite0 "
        f"(checked against {REFERENCE_FILE}): {'; '.join(report.problems)}. Refusing to load it. {hint}"
    )


def ensure_verified(model: Path, hint: str, *, threads: int = 1) -> str:
    """Raise ``ModelIntegrityError`` unless ``model`` is the verified export (cheap when its
    sidecar matches); returns how it was verified."""
    digest = sha256_file(model)
    if _sidecar_ok(model, digest):
        return "sha256 matches its verified sidecar"
    report = _check_file(model, threads)
    if not report.ok:
        raise _refusal(model, report, hint)
    previous: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError, AttributeError):
        previous = json.loads(sidecar_path(model).read_text()).get("export", {})
    write_sidecar(model, digest, report, previous if isinstance(previous, dict) else {})
    return f"behaviour re-checked (max logit error {report.max_logit_error:.4f})"


def install_export(staged: Path, target: Path, hint: str) -> BehaviourReport:
    """Check a fresh export by behaviour, then move it to ``target`` and write its sidecar.

    The exporter's provenance (``STAGED.export.json``: torch version, source hash) goes into the
    sidecar; a provenance naming other weights than the reference's is refused.
    """
    provenance_file = staged.with_name(staged.name + ".export.json")
    provenance: dict[str, Any] = {}
    if provenance_file.is_file():
        provenance = json.loads(provenance_file.read_text())
    pinned = reference()["source"]["sha256"]
    if provenance and provenance.get("source_sha256") != pinned:
        raise ModelIntegrityError(
            f"{staged} was exported from weights with sha256 {provenance.get('source_sha256')}, "
            f"expected {pinned}; refusing it. {hint}"
        )
    report = _check_file(staged)
    if not report.ok:
        raise _refusal(staged, report, hint)
    digest = sha256_file(staged)
    os.chmod(staged, 0o644)
    os.replace(staged, target)
    write_sidecar(target, digest, report, provenance)
    provenance_file.unlink(missing_ok=True)
    return report


# --------------------------------------------------------------------------- making the reference


def write_reference(model: Path, out: Path, labels: list[str]) -> dict[str, Any]:
    """Record ``model``'s answers on the reference inputs into ``out`` (keeps its other keys).

    For a developer, once, from an export whose provenance is known. Refuses an input whose top
    6 logits lie closer than ``MIN_GAP_TOLERANCES`` tolerances: its top 5 could reorder.
    """
    from .classifier import preprocess

    data: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
    tolerance = float(data["tolerance"]["logit_abs"])
    run = onnx_runner(model)
    cases: dict[str, Any] = {}
    for name, image in reference_inputs().items():
        tensor = preprocess(image)
        logits = run(tensor)
        order = np.argsort(-logits, kind="stable")
        gaps = -np.diff(logits[order[: TOP_K + 1]])
        if float(gaps.min()) < MIN_GAP_TOLERANCES * tolerance:
            raise ValueError(f"{name}: top-{TOP_K + 1} logits {logits[order[: TOP_K + 1]]} are too close")
        cases[name] = {
            "top": [[int(i), labels[int(i)], round(float(logits[i]), 4)] for i in order[:RECORDED]],
            "mean": round(float(logits.mean()), 5),
            "std": round(float(logits.std()), 5),
            "input_sha256": input_digest(tensor),
        }
    data["inputs"] = cases
    out.write_text(_dump(data))
    return data


def _dump(data: dict[str, Any]) -> str:
    """JSON with two-space indents and each innermost list on one line."""
    text = json.dumps(data, indent=2, ensure_ascii=False)
    flat = re.sub(
        r"\[\n\s+([^\[\]{}]*?)\n\s+\]",
        lambda m: "[" + ", ".join(item.strip() for item in m.group(1).split(",\n")) + "]",
        text,
    )
    return flat + "\n"
