"""SRTP for phone calls: SDES keys in SDP (RFC 4568) and packet protection (RFC 3711).

The caller puts its master key in an ``a=crypto`` line of its offer; we answer with the same
tag and suite and a fresh key of our own, so each direction has its own key. The crypto is
libsrtp's (through ``pylibsrtp``), never ours. SDES keys travel in the SDP, so they are only
as secret as the signalling: SIP over TLS.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import pylibsrtp

SUITES: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}
"""The crypto suites we answer, by their SDES names, with libsrtp's profile for each."""
KEY_SALT_BYTES = 30
"""Both suites: a 128-bit master key followed by a 112-bit master salt."""

_TAG = re.compile(r"^[0-9]{1,9}$")
_LIFETIME = re.compile(r"^(2\^)?[0-9]{1,20}$")
_HARMLESS_SESSION_PARAMS = ("KDR=0", "WSH=")
"""Session parameters that ask for nothing we do not do: no key re-derivation (libsrtp's
default) and a replay-window hint (libsrtp keeps its own window)."""


class SrtpError(ValueError):
    """An ``a=crypto`` line we cannot use, or a packet that failed authentication."""


@dataclass(frozen=True)
class CryptoAttribute:
    """One ``a=crypto:<tag> <suite> inline:<key||salt>[|lifetime]`` line (RFC 4568 §9.1)."""

    tag: int
    suite: str
    key: bytes

    @classmethod
    def parse(cls, value: str) -> CryptoAttribute:
        """The value after ``a=crypto:``; raises ``SrtpError`` for anything we cannot honour
        (an unknown suite, several keys or an MKI, session parameters that change SRTP)."""
        parts = value.split()
        if len(parts) < 3 or not _TAG.match(parts[0]):
            raise SrtpError("malformed a=crypto line")
        suite = parts[1].upper()
        if suite not in SUITES:
            raise SrtpError(f"unsupported crypto suite {parts[1]}")
        for param in parts[3:]:
            if not param.upper().startswith(_HARMLESS_SESSION_PARAMS):
                raise SrtpError(f"unsupported SRTP session parameter {param.split('=')[0]}")
        key_params = parts[2].split(";")
        if len(key_params) != 1:
            raise SrtpError("several master keys (MKI) are not supported")
        method, colon, info = key_params[0].partition(":")
        if not colon or method.lower() != "inline":
            raise SrtpError("only inline keys are supported")
        fields = info.split("|")
        if len(fields) > 3:
            raise SrtpError("malformed key parameter")
        for extra in fields[1:]:
            if ":" in extra:
                raise SrtpError("several master keys (MKI) are not supported")
            if not _LIFETIME.match(extra):
                raise SrtpError("malformed key lifetime")
        try:
            key = base64.b64decode(fields[0] + "=" * (-len(fields[0]) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise SrtpError("the inline key is not base64") from None
        if len(key) != KEY_SALT_BYTES:
            raise SrtpError(f"the inline key has {len(key)} bytes, not {KEY_SALT_BYTES}")
        return cls(int(parts[0]), suite, key)

    def value(self) -> str:
        """What follows ``a=crypto:`` in SDP."""
        return f"{self.tag} {self.suite} inline:{base64.b64encode(self.key).decode()}"


@dataclass(frozen=True)
class SdesKeys:
    """What an SDES exchange agreed: one suite, the caller's key and ours."""

    suite: str
    tag: int
    remote_key: bytes = b""
    local_key: bytes = b""

    @classmethod
    def answer(cls, offered: CryptoAttribute) -> SdesKeys:
        """Accept an offered line, with a fresh key for what we send."""
        return cls(offered.suite, offered.tag, offered.key, secrets.token_bytes(KEY_SALT_BYTES))

    def answer_attribute(self) -> CryptoAttribute:
        return CryptoAttribute(self.tag, self.suite, self.local_key)

    def __repr__(self) -> str:  # keys stay out of logs and tracebacks
        return f"SdesKeys(suite={self.suite!r}, tag={self.tag})"


def choose_crypto(lines: list[str]) -> tuple[CryptoAttribute | None, list[str]]:
    """The first usable ``a=crypto`` line in the offerer's order of preference, and why the
    others were not."""
    problems: list[str] = []
    for line in lines:
        try:
            return CryptoAttribute.parse(line), problems
        except SrtpError as exc:
            problems.append(str(exc))
    return None, problems


class SrtpSession:
    """Protects what we send with our key and checks what arrives against the caller's.

    Failures (a forged or replayed packet, the wrong key) raise ``SrtpError``; the caller
    drops the packet."""

    def __init__(self, keys: SdesKeys) -> None:
        profile = SUITES[keys.suite]
        try:
            self._outbound = pylibsrtp.Session(
                pylibsrtp.Policy(keys.local_key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
            )
            self._inbound = pylibsrtp.Session(
                pylibsrtp.Policy(keys.remote_key, pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile)
            )
        except (pylibsrtp.Error, ValueError, TypeError) as exc:
            raise SrtpError(f"SRTP could not be set up: {exc}") from None
        self.suite = keys.suite
        self.rejected = 0
        """Inbound packets that failed authentication or the replay check."""

    def protect(self, rtp: bytes) -> bytes:
        return self._run(self._outbound.protect, rtp)

    def protect_rtcp(self, rtcp: bytes) -> bytes:
        return self._run(self._outbound.protect_rtcp, rtcp)

    def unprotect(self, srtp: bytes) -> bytes:
        return self._check(self._inbound.unprotect, srtp)

    def unprotect_rtcp(self, srtcp: bytes) -> bytes:
        return self._check(self._inbound.unprotect_rtcp, srtcp)

    @staticmethod
    def _run(operation: Callable[[bytes], bytes], data: bytes) -> bytes:
        try:
            return bytes(operation(data))
        except pylibsrtp.Error as exc:
            raise SrtpError(str(exc)) from None

    def _check(self, operation: Callable[[bytes], bytes], data: bytes) -> bytes:
        if len(data) < 12:
            self.rejected += 1
            raise SrtpError("too short")
        try:
            return self._run(operation, data)
        except SrtpError:
            self.rejected += 1
            raise
