"""SIP over TLS (RFC 3261 §26.3.1, RFC 5630): the TLS settings of the listener and of the
connections we open ourselves, built on Python's ``ssl``.

Callers connect to the TLS listener (5061 by default) and present our certificate's chain
to check. When the caller's connection is gone and we must send it a request (BYE, REFER),
we open a new TLS connection to its Contact (or first Route) and check that peer's
certificate against ``cafile`` (the system's CAs when unset) and its host name.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TLS_PORT = 5061
HANDSHAKE_TIMEOUT_S = 10.0
"""A TLS handshake that has not finished by then is dropped (a slow or idle peer)."""


@dataclass(frozen=True)
class TlsConfig:
    """Where the certificate lives and whom to trust."""

    certfile: Path
    keyfile: Path | None = None
    cafile: Path | None = None
    """CAs for peer certificates: callers' (with ``require_client_cert``) and those of the
    peers we connect to."""
    require_client_cert: bool = False
    """Mutual TLS: callers must present a certificate signed by ``cafile``."""

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._load_identity(context)
        if self.require_client_cert:
            if self.cafile is None:
                raise ValueError("requiring client certificates needs a CA file to check them against")
            try:
                context.load_verify_locations(cafile=str(self.cafile))
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"cannot load the SIP TLS CA file {self.cafile}: {exc}") from None
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def client_context(self) -> ssl.SSLContext:
        """Verifies the peer (certificate and host name); offers our certificate for peers that
        ask for one."""
        try:
            context = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cafile=str(self.cafile) if self.cafile else None
            )
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load the SIP TLS CA file {self.cafile}: {exc}") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._load_identity(context)
        return context

    def _load_identity(self, context: ssl.SSLContext) -> None:
        try:
            context.load_cert_chain(str(self.certfile), str(self.keyfile) if self.keyfile else None)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load the SIP TLS certificate {self.certfile}: {exc}") from None
