"""ITU-T G.711 µ-law and A-law codecs, vectorised with numpy.

Telephony (SIP, Twilio-style WebSocket bridges) carries 8 kHz G.711; ``audioop`` is gone from
Python 3.13, so the codec lives here. Encoding follows the ITU-T G.191 reference software
(``ulaw_compress``/``alaw_compress``), which treats negative 16-bit samples by one's complement.
That makes µ-law symmetric around -0.5: it differs from the classic Sun ``linear2ulaw`` (and so
from ``audioop.lin2ulaw``) by one code at the quantisation boundaries of negative samples.
A-law is bit-identical to both. Decoding is the standard table, identical everywhere.

Both directions are 256- or 65536-entry lookup tables built once at import, so encoding or
decoding a buffer is a single numpy ``take``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "alaw_decode",
    "alaw_encode",
    "ulaw_decode",
    "ulaw_encode",
]

U8 = npt.NDArray[np.uint8]
I16 = npt.NDArray[np.int16]


def _ulaw_compress_reference(linear: npt.NDArray[np.int32]) -> U8:
    """G.191 ``ulaw_compress`` over int32-held 16-bit samples."""
    negative = linear < 0
    magnitude = np.where(negative, ~linear, linear) >> 2  # 14-bit right justified, 1's complement
    absno = np.minimum(magnitude + 33, 0x1FFF)
    # Segment number is 1 + the bit length of absno >> 6 (0..127).
    shifted = absno >> 6
    segno = np.ones_like(absno)
    for bit in range(7):
        segno += (shifted >> bit) > 0
    high = 8 - segno
    low = 0xF - ((absno >> segno) & 0xF)
    code = (high << 4) | low
    code = np.where(negative, code, code | 0x80)
    return np.asarray(code, dtype=np.uint8)


def _ulaw_expand_reference(codes: npt.NDArray[np.int32]) -> I16:
    """G.191 ``ulaw_expand``: 8-bit codes to 14-bit left-justified linear samples."""
    sign = np.where(codes < 0x80, -1, 1)
    mantissa = ~codes
    exponent = (mantissa >> 4) & 0x7
    segment = exponent + 1
    mantissa = mantissa & 0xF
    step = 4 << segment
    value = sign * ((0x80 << exponent) + step * mantissa + step // 2 - 4 * 33)
    return np.asarray(value, dtype=np.int16)


def _alaw_compress_reference(linear: npt.NDArray[np.int32]) -> U8:
    """G.191 ``alaw_compress`` over int32-held 16-bit samples."""
    negative = linear < 0
    ix = np.where(negative, ~linear, linear) >> 4  # 0..2047
    # Exponent/mantissa: for ix > 15, exponent is the bit length of ix minus 4.
    bits = np.zeros_like(ix)
    for bit in range(11):
        bits += (ix >> bit) > 0
    iexp = np.maximum(bits - 4, 0)
    mant = np.where(iexp > 0, (ix >> np.maximum(iexp - 1, 0)) - 16, ix)
    code = np.where(iexp > 0, mant + (iexp << 4), ix)
    code = np.where(negative, code, code | 0x80)
    return (code ^ 0x55).astype(np.uint8)


def _alaw_expand_reference(codes: npt.NDArray[np.int32]) -> I16:
    """G.191 ``alaw_expand``: 8-bit codes to 13-bit left-justified linear samples."""
    ix = (codes ^ 0x55) & 0x7F
    iexp = ix >> 4
    mant = ix & 0xF
    mant = np.where(iexp > 0, mant + 16, mant)
    mant = (mant << 4) + 8
    mant = np.where(iexp > 1, mant << np.maximum(iexp - 1, 0), mant)
    value = np.where(codes > 127, mant, -mant)
    return value.astype(np.int16)


_ALL_LINEAR = np.arange(-32768, 32768, dtype=np.int32)
_ALL_CODES = np.arange(256, dtype=np.int32)

# Encode tables are indexed by the int16 sample reinterpreted as uint16.
_ULAW_ENCODE = np.roll(_ulaw_compress_reference(_ALL_LINEAR), -32768)
_ALAW_ENCODE = np.roll(_alaw_compress_reference(_ALL_LINEAR), -32768)
_ULAW_DECODE = _ulaw_expand_reference(_ALL_CODES)
_ALAW_DECODE = _alaw_expand_reference(_ALL_CODES)
for _table in (_ULAW_ENCODE, _ALAW_ENCODE, _ULAW_DECODE, _ALAW_DECODE):
    _table.setflags(write=False)


def _as_index(pcm: npt.ArrayLike) -> npt.NDArray[np.uint16]:
    samples = np.asarray(pcm)
    if samples.dtype != np.int16:
        raise TypeError(f"G.711 encoding needs int16 samples, got {samples.dtype}")
    return samples.view(np.uint16)


def _as_codes(data: bytes | bytearray | memoryview | npt.ArrayLike) -> U8:
    if isinstance(data, bytes | bytearray | memoryview):
        return np.frombuffer(data, dtype=np.uint8)
    codes = np.asarray(data)
    if codes.dtype != np.uint8:
        raise TypeError(f"G.711 decoding needs uint8 codes or bytes, got {codes.dtype}")
    return codes


def ulaw_encode(pcm: npt.ArrayLike) -> U8:
    """Encode int16 samples to µ-law codes (one uint8 per sample)."""
    return _ULAW_ENCODE[_as_index(pcm)]


def ulaw_decode(data: bytes | bytearray | memoryview | npt.ArrayLike) -> I16:
    """Decode µ-law codes (bytes or uint8 array) to int16 samples."""
    return _ULAW_DECODE[_as_codes(data)]


def alaw_encode(pcm: npt.ArrayLike) -> U8:
    """Encode int16 samples to A-law codes (one uint8 per sample)."""
    return _ALAW_ENCODE[_as_index(pcm)]


def alaw_decode(data: bytes | bytearray | memoryview | npt.ArrayLike) -> I16:
    """Decode A-law codes (bytes or uint8 array) to int16 samples."""
    return _ALAW_DECODE[_as_codes(data)]
