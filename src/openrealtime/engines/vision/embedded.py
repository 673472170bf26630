"""The embedded ``VisionDescriber``: OCR lines plus ImageNet labels, stated as exactly that.

No vision-language model ships on the package registries, so a text-only LLM is told what two
narrow models found: the text PP-OCRv4 read (with confidences) and EfficientNet-Lite0's top
ImageNet classes (with probabilities), and, just as plainly, what nobody looked at (colours,
people, layout, ...), so it answers "what's the order number?" or "what animal is this?" and
does not invent the rest. ``detail: "low"`` analyses a 512 px thumbnail, as OpenAI's low
detail does.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from pathlib import Path
from typing import Literal

from PIL import Image

from ...images.data_url import FORMATS, open_image
from ...images.tokens import image_tokens
from ..assets import AssetError
from ..base import ImageAnalysis, ImageLabel, RecognizedText
from .classifier import ImageClassifier
from .ocr import TextReader

__all__ = ["EmbeddedDescriber", "compose_analysis"]

log = logging.getLogger("openrealtime.vision")

TOP_LABELS = 3
MIN_LABEL_PROBABILITY = 0.05
LOW_DETAIL_SIDE = 512
MAX_OCR_LINES = 40
NOT_RECOGNISED = (
    "Unknown (not analysed): colours, people and faces, layout, actions, and anything else "
    "not listed here. If asked about them, say the image analysis cannot tell."
)


def compose_analysis(
    *,
    fmt: str,
    width: int,
    height: int,
    ocr: list[RecognizedText] | None,
    labels: list[ImageLabel] | None,
    problems: list[str],
) -> str:
    """The text the language model reads in place of the image."""
    lines = [
        f"[Image shared by the user ({fmt}, {width}x{height} pixels). Automatic analysis by text "
        "recognition (OCR) and an ImageNet object classifier, not full image understanding."
    ]
    if ocr is not None:
        if ocr:
            shown = ocr[:MAX_OCR_LINES]
            read = "; ".join(f'"{line.text}" ({line.confidence:.0%})' for line in shown)
            more = f" (and {len(ocr) - len(shown)} more lines)" if len(ocr) > len(shown) else ""
            lines.append(f"Text read in the image (OCR confidence): {read}{more}.")
        else:
            lines.append("No readable text was found in the image.")
    if labels is not None:
        kept = [label for label in labels[:TOP_LABELS] if label.probability >= MIN_LABEL_PROBABILITY]
        if kept:
            guesses = ", ".join(f"{label.label} {label.probability:.0%}" for label in kept)
            hedge = " (uncertain)" if kept[0].probability < 0.3 else ""
            lines.append(f"The classifier's best guesses for what the image shows{hedge}: {guesses}.")
        else:
            lines.append("The classifier could not tell what the image shows.")
    lines.extend(problems)
    lines.append(NOT_RECOGNISED + "]")
    return "\n".join(lines)


class EmbeddedDescriber:
    """OCR (rapidocr-onnxruntime) + ImageNet labels (EfficientNet-Lite0 ONNX), on the CPU.

    Either part may be unavailable (e.g. the classifier was never exported); the analysis then
    says so instead of failing the image. Thread-safe; models load on first use.
    """

    name = "embedded"

    def __init__(self, model_dir: Path | None = None, *, threads: int = 1) -> None:
        self.reader = TextReader(threads=threads)
        self.classifier = ImageClassifier(model_dir, threads=threads)
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def check(self) -> list[str]:
        """Problems that would make part of the analysis unavailable (for a start-up warning)."""
        problems = []
        for part, load in (("OCR", self.reader.load), ("classifier", self.classifier.load)):
            try:
                load()
            except (AssetError, ImportError, OSError) as exc:
                problems.append(f"{part}: {exc}")
        return problems

    def describe(
        self,
        image: bytes | Image.Image,
        *,
        question_hint: str | None = None,
        detail: Literal["auto", "low", "high"] = "auto",
    ) -> ImageAnalysis:
        """Analyse one image. ``question_hint`` is not used: the same facts are reported
        whatever was asked, so the model can answer follow-up questions from the cache."""
        start = time.monotonic()
        if isinstance(image, bytes):
            fmt = _format_of(image)
            picture = open_image(image)
        else:
            fmt = image.format or "image"
            picture = image.convert("RGB")
        width, height = picture.size
        view = picture
        if detail == "low":
            view = picture.copy()
            view.thumbnail((LOW_DETAIL_SIDE, LOW_DETAIL_SIDE), Image.Resampling.LANCZOS)
        problems: list[str] = []
        ocr: list[RecognizedText] | None = None
        labels: list[ImageLabel] | None = None
        try:
            ocr = self.reader.read(view)
        except (AssetError, ImportError, OSError) as exc:
            self._warn_once("ocr", f"OCR unavailable: {exc}")
            problems.append("Text recognition was unavailable, so any text in the image is unknown.")
        try:
            labels = self.classifier.classify(view)
        except (AssetError, ImportError, OSError) as exc:
            self._warn_once("classifier", f"image classifier unavailable: {exc}")
            problems.append("The object classifier was unavailable, so what the image shows is unknown.")
        text = compose_analysis(
            fmt=fmt, width=width, height=height, ocr=ocr, labels=labels, problems=problems
        )
        return ImageAnalysis(
            text=text,
            image_tokens=image_tokens(width, height, detail),
            ocr=tuple(ocr or ()),
            labels=tuple(labels or ()),
            seconds=time.monotonic() - start,
        )

    def _warn_once(self, key: str, message: str) -> None:
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        log.warning("%s", message)


def _format_of(data: bytes) -> str:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WebP", "image/gif": "GIF"}.get(
                FORMATS.get(img.format or "", ""), img.format or "image"
            )
    except (OSError, ValueError):
        return "image"
