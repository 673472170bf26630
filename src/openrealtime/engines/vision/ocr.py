"""Text in images: PP-OCRv4 through ``rapidocr-onnxruntime==1.4.4`` (ONNX models in its wheel).

The three ONNX files are sha256-verified before they are loaded. The recogniser was trained on
Chinese and English and drops the spaces between English words, so words are split again
where the gap between two characters' boxes is wide (the per-character boxes it reports).
Detection runs on the image scaled so its long side is at most ``DETECT_SIDE`` pixels, which
keeps a call well under a second on one core.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..assets import MissingModelPackageError, ModelIntegrityError, sha256_file
from ..base import RecognizedText

__all__ = ["OCR_MODELS", "TextReader", "join_characters"]

OCR_MODELS = {
    "ch_PP-OCRv4_det_infer.onnx": "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
    "ch_PP-OCRv4_rec_infer.onnx": "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
    "ch_ppocr_mobile_v2.0_cls_infer.onnx": "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
}
DETECT_SIDE = 1024
MIN_CONFIDENCE = 0.6
SPACE_GAP = 0.8
"""A gap wider than this fraction of the median character width separates two words."""
PIP_INSTALL = "pip install --no-deps rapidocr-onnxruntime==1.4.4"


def _models_dir() -> Path:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise MissingModelPackageError(f"OCR needs the package rapidocr-onnxruntime; {PIP_INSTALL}")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def verify_models() -> Path:
    folder = _models_dir()
    for name, expected in OCR_MODELS.items():
        path = folder / name
        if not path.is_file():
            raise MissingModelPackageError(f"OCR model {path} is missing; reinstall: {PIP_INSTALL}")
        actual = sha256_file(path)
        if actual != expected:
            raise ModelIntegrityError(
                f"OCR model {path} has sha256 {actual}, expected {expected}; refusing to load it. "
                f"Reinstall: {PIP_INSTALL}"
            )
    return folder


def join_characters(chars: list[str], boxes: list[list[list[int]]]) -> str:
    """Characters of one line joined, with a space wherever the gap between boxes is wide."""
    if not chars or len(chars) != len(boxes):
        return "".join(chars)
    spans = [(min(p[0] for p in box), max(p[0] for p in box)) for box in boxes]
    widths = sorted(right - left for left, right in spans if right > left)
    if not widths:
        return "".join(chars)
    median = widths[len(widths) // 2]
    out = [chars[0]]
    for index in range(1, len(chars)):
        gap = spans[index][0] - spans[index - 1][1]
        if gap > SPACE_GAP * median and not out[-1].endswith(" "):
            out.append(" ")
        out.append(chars[index])
    return "".join(out)


class TextReader:
    """Reads the lines of text in an image, top to bottom; thread-safe, loaded on first use."""

    def __init__(self, *, threads: int = 1) -> None:
        self.threads = threads
        self._engine: Any = None
        self._lock = threading.RLock()

    def load(self) -> None:
        with self._lock:
            if self._engine is not None:
                return
            verify_models()
            from rapidocr_onnxruntime import RapidOCR

            self._engine = RapidOCR(
                intra_op_num_threads=self.threads,
                inter_op_num_threads=1,
                det_limit_type="max",
                det_limit_side_len=DETECT_SIDE,
            )

    def read(self, image: Image.Image) -> list[RecognizedText]:
        pixels = np.asarray(image.convert("RGB"))
        with self._lock:
            self.load()
            result, _elapsed = self._engine(pixels, return_word_box=True)
        lines: list[RecognizedText] = []
        for entry in result or ():
            text, confidence = str(entry[1]), float(entry[2])
            if len(entry) >= 5 and isinstance(entry[4], list) and len(entry[4]) == len(entry[3] or ()):
                text = join_characters([str(c) for c in entry[4]], entry[3])
            text = " ".join(text.split())
            if confidence >= MIN_CONFIDENCE and any(c.isalnum() for c in text):
                lines.append(RecognizedText(text, confidence))
        return lines
