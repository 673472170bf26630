"""Images as clients send them: base64 data URLs of PNG, JPEG, WebP or GIF.

The server never fetches a remote URL (no outbound network is assumed, and fetching on a
client's behalf is a server-side request forgery risk), so only ``data:`` URLs are accepted.
Checking a URL reads every byte of the file (so truncated or corrupt data is refused at once)
but computes little: PNG chunk checksums, JPEG at 1/8 scale; the full decode happens later, on
the vision worker, in :func:`open_image`.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

__all__ = [
    "FORMATS",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_SIDE",
    "CheckedImage",
    "ImageInputError",
    "check_data_url",
    "open_image",
]

MAX_IMAGE_BYTES = 10 * 1024 * 1024
"""Largest decoded image file accepted (the base64 text is a third bigger)."""
MAX_IMAGE_SIDE = 8192
MAX_IMAGE_PIXELS = 36_000_000
"""Larger images are refused before decoding (decompression bombs)."""
FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
_MIME_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[^;,]*)*?);base64,", re.IGNORECASE)


class ImageInputError(ValueError):
    """An image a client sent cannot be used; ``code`` is the error code to report."""

    def __init__(self, message: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class CheckedImage:
    """An accepted image: its file bytes, real format and size in pixels."""

    data: bytes
    mime: str
    width: int
    height: int


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def check_data_url(url: str) -> CheckedImage:
    """Parse and check a ``data:image/...;base64,...`` URL, or raise :class:`ImageInputError`."""
    if not isinstance(url, str) or not url.strip():
        raise ImageInputError(
            "Invalid 'image_url': it is empty; send a data URL (data:image/png;base64,...)."
        )
    url = url.strip()
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in ("http", "https", "ftp", "file"):
        raise ImageInputError(
            "Invalid 'image_url': remote URLs are not fetched by this server; send the image inline as a "
            "base64 data URL (data:image/png;base64,...)."
        )
    match = _DATA_URL.match(url)
    if match is None:
        raise ImageInputError(
            "Invalid 'image_url': expected a base64 data URL such as data:image/png;base64,... "
            "(PNG, JPEG, WebP or GIF)."
        )
    declared = (match.group("mime") or "").lower()
    declared = _MIME_ALIASES.get(declared, declared)
    if declared not in FORMATS.values():
        raise ImageInputError(
            f"Invalid 'image_url': unsupported image type '{declared or 'none'}'; "
            "supported: image/png, image/jpeg, image/webp, image/gif."
        )
    payload = url[match.end() :]
    if len(payload) > (MAX_IMAGE_BYTES * 4) // 3 + 4:
        raise ImageInputError(
            f"Image too large: about {_megabytes(len(payload) * 3 // 4)}; the limit is "
            f"{_megabytes(MAX_IMAGE_BYTES)} per image.",
            code="image_too_large",
        )
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageInputError("Invalid 'image_url': the data after 'base64,' is not valid base64.") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageInputError(
            f"Image too large: {_megabytes(len(data))}; the limit is {_megabytes(MAX_IMAGE_BYTES)} per image.",
            code="image_too_large",
        )
    return _inspect(data)


def _inspect(data: bytes) -> CheckedImage:
    undecodable = ImageInputError(
        "Invalid 'image_url': the image data could not be decoded as PNG, JPEG, WebP or GIF."
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt = img.format or ""
                width, height = img.size
                if fmt not in FORMATS:
                    raise ImageInputError(
                        f"Invalid 'image_url': the data is a {fmt or 'unknown'} image; "
                        "supported: PNG, JPEG, WebP, GIF."
                    )
                _check_size(width, height)
                img.verify()
            if fmt != "PNG":  # verify() checks PNG chunk CRCs; the others need their data read
                with Image.open(io.BytesIO(data)) as img:
                    if fmt == "JPEG":  # decode at 1/8 scale: every byte is read, little is computed
                        img.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                    img.load()
    except ImageInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageInputError(
            f"Image too large: more than {MAX_IMAGE_PIXELS:,} pixels.", code="image_too_large"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise undecodable from None
    return CheckedImage(data=data, mime=FORMATS[fmt], width=width, height=height)


def _check_size(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise ImageInputError("Invalid 'image_url': the image has no pixels.")
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
        raise ImageInputError(
            f"Image too large: {width}x{height} pixels; the limit is {MAX_IMAGE_SIDE} pixels per side "
            f"and {MAX_IMAGE_PIXELS:,} pixels in all.",
            code="image_too_large",
        )


def open_image(data: bytes) -> Image.Image:
    """Decode every pixel (first frame of a GIF) into RGB; raises ``ImageInputError``."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            _check_size(*img.size)
            img.seek(0)
            rgb = img.convert("RGB")
            rgb.load()
            return rgb
    except ImageInputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
        raise ImageInputError("The image data could not be decoded.") from None
