"""What SIP over TLS and SRTP cost a phone call, against plain TCP and RTP.

1. SRTP: protecting one outbound 20 ms PCMU packet and checking one inbound packet with
   libsrtp (``transports/sip/srtp.py``), per suite; per-call CPU = both directions at 50
   packets a second.
2. Signalling: a fresh connection, an INVITE, until ``180 Ringing`` comes back, against the
   real listener (``transports/sip/server.py``) on loopback, over TCP (plain RTP offer) and
   over TLS (SDES offer; TLS 1.3, ECDSA P-256 certificate from a throwaway CA). Caller and
   server share one event loop, so each number is both sides' work.

    python bench/sip_security.py [--calls 200] [--seconds 400]

Writes bench/results/sip_security.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import machine_info

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.certificates import make_ca

from openrealtime.transports.sip.call import SipCall
from openrealtime.transports.sip.message import SipRequest, SipResponse, StreamFramer, parse_message
from openrealtime.transports.sip.rtp import RtpPacket
from openrealtime.transports.sip.server import SipServer
from openrealtime.transports.sip.srtp import SUITES, CryptoAttribute, SdesKeys, SrtpSession
from openrealtime.transports.sip.tls import TlsConfig

RESULTS = Path(__file__).resolve().parent / "results"
PACKETS_PER_SECOND = 50
OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)
SRTP_OFFER = OFFER.replace("RTP/AVP", "RTP/SAVP") + (
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:9DCOPQlsj5Bhuabd7lfOgwmH/ckIIaPmtUFwfT7I\r\n"
)


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "n": len(ordered),
    }


def srtp_costs(seconds: int) -> dict[str, Any]:
    """Per-packet microseconds, measured one second of audio (50 packets) at a time."""
    results: dict[str, Any] = {}
    for suite in SUITES:
        ours = SdesKeys.answer(CryptoAttribute(1, suite, os.urandom(30)))
        server = SrtpSession(ours)
        caller = SrtpSession(SdesKeys(suite, 1, ours.local_key, ours.remote_key))
        outbound = [
            RtpPacket(0, n & 0xFFFF, n * 160, 0x1111, os.urandom(160)).serialize()
            for n in range(seconds * PACKETS_PER_SECOND)
        ]
        inbound = [
            caller.protect(RtpPacket(0, n & 0xFFFF, n * 160, 0x2222, os.urandom(160)).serialize())
            for n in range(seconds * PACKETS_PER_SECOND)
        ]
        protect: list[float] = []
        unprotect: list[float] = []
        for start in range(0, len(outbound), PACKETS_PER_SECOND):
            began = time.perf_counter()
            for packet in outbound[start : start + PACKETS_PER_SECOND]:
                server.protect(packet)
            protect.append((time.perf_counter() - began) / PACKETS_PER_SECOND * 1e6)
            began = time.perf_counter()
            for packet in inbound[start : start + PACKETS_PER_SECOND]:
                server.unprotect(packet)
            unprotect.append((time.perf_counter() - began) / PACKETS_PER_SECOND * 1e6)
        per_call = (statistics.median(protect) + statistics.median(unprotect)) * PACKETS_PER_SECOND / 1e6
        results[suite] = {
            "protect_us": summary(protect),
            "unprotect_us": summary(unprotect),
            "cpu_share_per_call_percent": per_call * 100,
        }
    return results


async def ring_times(calls: int) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="sip-bench-"))
    ca = make_ca(directory)
    leaf = ca.issue("openrealtime")

    async def incoming(call: SipCall) -> bool:
        call.reject(486)
        return True

    server = SipServer(
        "127.0.0.1",
        0,
        on_incoming=incoming,
        transports=("tcp", "tls"),
        tls=TlsConfig(leaf.certfile, leaf.keyfile),
        tls_port=0,
    )
    await server.start()
    client_ssl = ssl.create_default_context(cafile=str(ca.cafile))
    results: dict[str, Any] = {}
    try:
        for transport in ("TCP", "TLS"):
            times: list[float] = []
            for index in range(calls + 1):
                began = time.perf_counter()
                if transport == "TLS":
                    reader, writer = await asyncio.open_connection(
                        "127.0.0.1", server.tls_port, ssl=client_ssl
                    )
                else:
                    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                host, port = writer.get_extra_info("sockname")[:2]
                request = SipRequest(
                    method="INVITE", uri=f"sip:bench@127.0.0.1;transport={transport.lower()}"
                )
                call_id = f"bench-{transport}-{index}"
                request.add("Via", f"SIP/2.0/{transport} {host}:{port};branch=z9hG4bK{call_id}")
                request.add("From", f"<sip:caller@{host}>;tag=1")
                request.add("To", "<sip:bench@127.0.0.1>")
                request.add("Call-ID", call_id)
                request.add("CSeq", "1 INVITE")
                request.add("Contact", f"<sip:caller@{host}:{port};transport={transport.lower()}>")
                request.add("Content-Type", "application/sdp")
                request.body = (SRTP_OFFER if transport == "TLS" else OFFER).encode()
                writer.write(request.serialize())
                framer = StreamFramer()
                ringing = None
                while ringing is None:
                    data = await reader.read(65536)
                    assert data, "the server closed the connection"
                    for raw in framer.feed(data):
                        message = parse_message(raw)
                        if isinstance(message, SipResponse) and message.status == 180:
                            ringing = time.perf_counter() - began
                if index:  # the first is a warm-up
                    times.append(ringing * 1000)
                writer.close()
            results[transport] = {"invite_to_ringing_ms": summary(times)}
    finally:
        await server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=400, help="seconds of audio per SRTP suite")
    args = parser.parse_args()
    load_before = os.getloadavg()
    result = {
        "machine": machine_info(),
        "load_average_before": load_before,
        "command": "python bench/sip_security.py " + " ".join(sys.argv[1:]),
        "srtp": srtp_costs(args.seconds),
        "signalling": asyncio.run(ring_times(args.calls)),
        "load_average_after": os.getloadavg(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sip_security.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({key: result[key] for key in ("srtp", "signalling", "load_average_before")}, indent=2))


if __name__ == "__main__":
    main()
