"""The WebRTC call's media path without a network: the playout track stops sending settled
silence (Opus DTX) and the caller's repeated silent packets are not decoded again."""

from __future__ import annotations

import itertools
import queue
from typing import Any

import numpy as np
from aiortc import RTCRtpCodecParameters
from aiortc.jitterbuffer import JitterFrame

from openrealtime.audio.opus import OpusFrameEncoder
from openrealtime.transports import webrtc
from openrealtime.transports.webrtc import (
    DTX_HANGOVER_FRAMES,
    DTX_KEEPALIVE_FRAMES,
    PlayoutTrack,
    _InlineDecoding,
)

OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)


def stepping_clock() -> Any:
    """Each reading 20 ms after the last: the pacer never sleeps."""
    ticks = itertools.count()
    return lambda: next(ticks) * 0.02


def tone(frames: int) -> list[np.ndarray]:
    t = np.arange(480 * frames) / 24000
    pcm = (5000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)
    return [pcm[i * 480 : (i + 1) * 480] for i in range(frames)]


async def test_settled_silence_goes_out_as_a_packet_every_400_ms_and_sound_in_every_frame() -> None:
    script = [np.zeros(480, np.int16)] * 200 + tone(50) + [np.zeros(480, np.int16)] * 200
    pulled = iter(script)
    track = PlayoutTrack(lambda: next(pulled), stepping_clock())
    sent: list[int] = []  # the frame index (pts / 960) of each packet sent
    while len(sent) < 2 or sent[-1] < len(script) - DTX_KEEPALIVE_FRAMES:
        packet = await track.recv()
        sent.append(int(packet.pts) // 960)
    assert max(np.diff(sent)) == DTX_KEEPALIVE_FRAMES
    # the sound, every frame of it; then its tail, the settling silence and the hangover in
    # full (a receiver's jitter buffer is flushed of the sound)
    assert all(frame in sent for frame in range(200, 250 + 5 + DTX_HANGOVER_FRAMES))
    assert track.skipped > 300 and len(sent) < 120  # of 450 frames pulled


def decoded_stream(packets: list[bytes], settle: int) -> tuple[np.ndarray, int]:
    class Receiver:
        _track = object()

    class Decoding(_InlineDecoding):
        SETTLE_FRAMES = settle

    pieces: list[np.ndarray] = []
    decoding = Decoding(
        Receiver(), queue.Queue(), lambda samples, rate, channels: pieces.append(samples.copy())
    )  # type: ignore[arg-type]
    for index, packet in enumerate(packets):
        decoding.put((OPUS, JitterFrame(packet, index * 960)))
    return np.concatenate(pieces), decoding.skipped


def test_repeated_silent_packets_are_not_decoded_and_the_audio_is_the_same() -> None:
    encoder = OpusFrameEncoder()
    frames = [np.zeros(960, np.int16)] * 60
    t = np.arange(960 * 30) / 48000
    speech = (4000 * np.sin(2 * np.pi * 200 * t)).astype(np.int16)
    frames += [speech[i * 960 : (i + 1) * 960] for i in range(30)] + [np.zeros(960, np.int16)] * 60
    packets = [encoder.encode(frame) for frame in frames]
    fast, skipped = decoded_stream(packets, _InlineDecoding.SETTLE_FRAMES)
    full, none_skipped = decoded_stream(packets, 10**9)
    assert skipped > 60 and none_skipped == 0
    assert np.array_equal(fast, full)
    assert len(fast) == len(frames) * 480  # straight to 24 kHz
    assert webrtc.OpusFrameDecoder.available()


async def test_caller_packets_are_decoded_as_they_arrive_and_late_ones_dropped() -> None:
    from aiortc import RTCRtpReceiver
    from aiortc.rtp import RtpPacket

    class Transport:  # what the receiver reads of its DTLS transport before it starts
        state = "new"

    receiver = RTCRtpReceiver("audio", Transport())  # type: ignore[arg-type]
    receiver._RTCRtpReceiver__codecs = {111: OPUS}  # type: ignore[attr-defined]
    receiver._track = object()  # type: ignore[assignment]
    delivered: list[int] = []
    webrtc._decode_inline(receiver, lambda samples, rate, channels: delivered.append(len(samples)))
    encoder = OpusFrameEncoder()
    t = np.arange(960) / 48000
    payload = encoder.encode((3000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16))

    async def arrive(sequence: int) -> None:
        packet = RtpPacket(payload_type=111, sequence_number=sequence, timestamp=sequence * 960, ssrc=7)
        packet.payload = payload
        await receiver._handle_rtp_packet(packet, arrival_time_ms=0)

    await arrive(65535)
    assert delivered == [480]  # at once: no wait for the next packet to end the frame
    await arrive(0)  # the sequence number wraps
    await arrive(2)
    await arrive(1)  # after 2: too late, dropped
    await arrive(2)  # a duplicate
    assert delivered == [480, 480, 480]
    stats = receiver._RTCRtpReceiver__remote_streams[7]  # type: ignore[attr-defined]
    assert stats.packets_received == 5  # RTCP receiver reports still count every packet
