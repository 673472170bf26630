"""REST request limits, CORS locked down by default, and TLS for ``serve``."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support import ServerProcess, run_server, validate_server_event

pytestmark = pytest.mark.slow


def test_request_bodies_over_the_limit_get_413(text_server: ServerProcess) -> None:
    url = text_server.base_url + "/realtime/client_secrets"
    headers = {"Authorization": f"Bearer {text_server.api_key}", "Content-Type": "application/json"}
    big = b'{"session": {"instructions": "' + b"x" * (2 * 1024 * 1024) + b'"}}'
    declared = httpx.post(url, content=big, headers=headers)
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    streamed = httpx.post(url, content=chunks(), headers=headers)
    assert streamed.status_code == 413
    # the server is fine afterwards
    assert httpx.post(url, json={}, headers=headers).status_code == 200


def test_no_cross_origin_access_by_default(text_server: ServerProcess) -> None:
    preflight = httpx.options(
        text_server.base_url + "/realtime/client_secrets",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    simple = httpx.get(
        text_server.base_url + "/models",
        headers={"Origin": "https://evil.example", "Authorization": f"Bearer {text_server.api_key}"},
    )
    assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


async def test_serve_over_tls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    args = ["--text-only", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
    with run_server(tmp_path, args=args, scheme="https") as server:
        assert server.url.startswith("https://")
        context = ssl.create_default_context(cafile=str(cert))
        assert httpx.get(server.url + "/healthz", verify=context).status_code == 200
        async with websockets.connect(
            server.url.replace("https://", "wss://") + "/v1/realtime?model=gpt-realtime",
            additional_headers={"Authorization": f"Bearer {server.api_key}"},
            ssl=context,
        ) as ws:
            assert validate_server_event(await ws.recv())["type"] == "session.created"
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url + "/healthz")  # an untrusted certificate is refused by default
