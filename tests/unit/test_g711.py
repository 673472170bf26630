"""G.711 µ-law / A-law against the ITU-T G.191 reference algorithm and known code points."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from openrealtime.audio import g711

ALL_LINEAR = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = np.arange(256, dtype=np.uint8)


# Scalar transcriptions of G.191 g711.c (ulaw_compress/expand, alaw_compress/expand), kept
# deliberately literal so the vectorised tables are checked against independent code.
def ref_ulaw_compress(lin: int) -> int:
    absno = ((~lin) >> 2) + 33 if lin < 0 else (lin >> 2) + 33
    absno = min(absno, 0x1FFF)
    i = absno >> 6
    segno = 1
    while i != 0:
        segno += 1
        i >>= 1
    high = 0x8 - segno
    low = 0xF - ((absno >> segno) & 0xF)
    code = (high << 4) | low
    return code | 0x80 if lin >= 0 else code


def ref_ulaw_expand(code: int) -> int:
    sign = -1 if code < 0x80 else 1
    mantissa = ~code
    exponent = (mantissa >> 4) & 0x7
    segment = exponent + 1
    mantissa &= 0xF
    step = 4 << segment
    return sign * ((0x80 << exponent) + step * mantissa + step // 2 - 4 * 33)


def ref_alaw_compress(lin: int) -> int:
    ix = (~lin) >> 4 if lin < 0 else lin >> 4
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix -= 16
        ix += iexp << 4
    if lin >= 0:
        ix |= 0x80
    return ix ^ 0x55


def ref_alaw_expand(code: int) -> int:
    ix = (code ^ 0x55) & 0x7F
    iexp = ix >> 4
    mant = ix & 0xF
    if iexp > 0:
        mant += 16
    mant = (mant << 4) + 0x8
    if iexp > 1:
        mant <<= iexp - 1
    return mant if code > 127 else -mant


def test_ulaw_encode_matches_reference_for_every_sample() -> None:
    expected = np.array([ref_ulaw_compress(int(v)) for v in ALL_LINEAR], dtype=np.uint8)
    assert np.array_equal(g711.ulaw_encode(ALL_LINEAR), expected)


def test_alaw_encode_matches_reference_for_every_sample() -> None:
    expected = np.array([ref_alaw_compress(int(v)) for v in ALL_LINEAR], dtype=np.uint8)
    assert np.array_equal(g711.alaw_encode(ALL_LINEAR), expected)


def test_decode_tables_match_reference() -> None:
    assert g711.ulaw_decode(ALL_CODES).tolist() == [ref_ulaw_expand(c) for c in range(256)]
    assert g711.alaw_decode(ALL_CODES).tolist() == [ref_alaw_expand(c) for c in range(256)]


@pytest.mark.parametrize(
    ("code", "value"),
    [(0x00, -32124), (0x80, 32124), (0xFF, 0), (0x7F, 0), (0xEF, 132), (0x6F, -132), (0xFE, 8), (0x7E, -8)],
)
def test_ulaw_known_code_points(code: int, value: int) -> None:
    assert int(g711.ulaw_decode(bytes([code]))[0]) == value


@pytest.mark.parametrize(
    ("code", "value"),
    [(0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256), (0xD4, 24), (0xC5, 264), (0x80, 5504)],
)
def test_alaw_known_code_points(code: int, value: int) -> None:
    assert int(g711.alaw_decode(bytes([code]))[0]) == value


@pytest.mark.parametrize(
    ("sample", "ulaw", "alaw"),
    [(0, 0xFF, 0xD5), (-1, 0x7F, 0x55), (32767, 0x80, 0xAA), (-32768, 0x00, 0x2A), (1000, 0xCE, 0xFA)],
)
def test_known_encodings(sample: int, ulaw: int, alaw: int) -> None:
    pcm = np.array([sample], dtype=np.int16)
    assert int(g711.ulaw_encode(pcm)[0]) == ulaw
    assert int(g711.alaw_encode(pcm)[0]) == alaw


def test_every_code_survives_decode_encode() -> None:
    # µ-law has two zeros (0x7F "negative zero" decodes to 0, which encodes as 0xFF).
    ulaw_back = g711.ulaw_encode(g711.ulaw_decode(ALL_CODES))
    expected = ALL_CODES.copy()
    expected[0x7F] = 0xFF
    assert np.array_equal(ulaw_back, expected)
    assert np.array_equal(g711.alaw_encode(g711.alaw_decode(ALL_CODES)), ALL_CODES)


def test_agrees_with_audioop_where_audioop_is_itu_exact() -> None:
    audioop = pytest.importorskip("audioop")
    raw = ALL_LINEAR.tobytes()
    assert g711.alaw_encode(ALL_LINEAR).tobytes() == audioop.lin2alaw(raw, 2)
    theirs = np.frombuffer(audioop.lin2ulaw(raw, 2), dtype=np.uint8)
    ours = g711.ulaw_encode(ALL_LINEAR)
    # audioop (Sun's g711.c) negates negative samples where G.191 takes the one's complement:
    # identical for x >= 0, and never more than one code apart below zero.
    assert np.array_equal(ours[ALL_LINEAR >= 0], theirs[ALL_LINEAR >= 0])
    diff = np.abs(ours.astype(int) - theirs.astype(int))
    assert diff.max() <= 1


@given(arrays(np.int16, st.integers(0, 400)))
def test_roundtrip_error_is_within_half_a_quantisation_step(pcm: np.ndarray) -> None:
    for encode, decode, max_err in (
        (g711.ulaw_encode, g711.ulaw_decode, 1024),
        (g711.alaw_encode, g711.alaw_decode, 1024),
    ):
        back = decode(encode(pcm)).astype(np.int32)
        err = np.abs(back - pcm.astype(np.int32))
        # Relative error of a logarithmic codec: at most ~1/16 of the magnitude, plus the
        # smallest step near zero; the largest steps (1024) bound the rest.
        bound = np.minimum(np.abs(pcm.astype(np.int32)) // 16 + 16, max_err)
        assert (err <= bound).all()


def test_decode_accepts_bytes_and_arrays_and_rejects_wrong_dtypes() -> None:
    assert g711.ulaw_decode(b"\xff\x00").tolist() == [0, -32124]
    assert g711.alaw_decode(bytearray(b"\xd5")).tolist() == [8]
    with pytest.raises(TypeError):
        g711.ulaw_encode(np.zeros(4, dtype=np.float32))
    with pytest.raises(TypeError):
        g711.alaw_decode(np.zeros(4, dtype=np.int16))
