"""The WebRTC call's media path without a network: the playout track stops sending settled
silence (Opus DTX), the caller's repeated silent packets are not decoded again, and the time a
caller's DTX stream skips reaches the session as silence."""

from __future__ import annotations

import asyncio
import itertools
import queue
from typing import Any

import numpy as np
from aiortc import RTCRtpCodecParameters
from aiortc.jitterbuffer import JitterFrame

from openrealtime.audio.opus import OpusFrameEncoder
from openrealtime.transports import webrtc
from openrealtime.transports.media import StreamGaps
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


async def test_an_idle_track_sleeps_between_keepalives_and_wakes_for_queued_audio() -> None:
    """Nothing to play: the frames between keepalives are not pulled, yet the packets carry
    the same timestamps as when each frame was; queued audio wakes the track at once."""
    loop = asyncio.get_running_loop()
    queued: list[np.ndarray] = []
    pulls = 0

    def pull() -> np.ndarray:
        nonlocal pulls
        pulls += 1
        return queued.pop(0) if queued else np.zeros(480, np.int16)

    track = PlayoutTrack(pull, loop.time, idle=lambda: not queued)
    sent: list[int] = []
    while track.dozed < 2 * (DTX_KEEPALIVE_FRAMES - 1):
        sent.append(int((await track.recv()).pts) // 960)
    assert np.diff(sent[-3:]).tolist() == [DTX_KEEPALIVE_FRAMES] * 2
    assert pulls <= sent[-1] + 1 - track.dozed  # the dozed frames were never pulled

    next_packet = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0.1)  # well inside the DTX gap
    assert not next_packet.done()
    queued.extend(tone(3))
    track.wake()
    frame = int((await next_packet).pts) // 960
    assert sent[-1] < frame < sent[-1] + DTX_KEEPALIVE_FRAMES  # woken, not the keepalive
    # the frames slept through still count: the timestamp is the frame's place in real time
    assert abs(frame * 0.02 - (loop.time() - track.pacer.due_at(0))) < 0.1
    track.stop()


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
    decoding.stop()
    return np.concatenate(pieces), decoding.skipped


async def test_repeated_silent_packets_are_not_decoded_and_the_audio_is_the_same() -> None:
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
    await arrive(2)  # 1 is missing: silence stands for its 20 ms, then 2
    await arrive(1)  # after 2: too late, dropped
    await arrive(2)  # a duplicate
    assert delivered == [480, 480, 480, 480]
    stats = receiver._RTCRtpReceiver__remote_streams[7]  # type: ignore[attr-defined]
    assert stats.packets_received == 5  # RTCP receiver reports still count every packet


async def test_aiortcs_decoder_thread_waits_on_the_inline_decoding_and_ends_the_track() -> None:
    """The receiver's decoder thread still starts; it reads what goes through the thread (only
    the end of the stream) and then ends the caller's track, as aiortc's own path does."""
    import threading

    from aiortc import RTCRtpReceiver
    from aiortc.rtcrtpreceiver import decoder_worker

    class Transport:
        state = "new"

    receiver = RTCRtpReceiver("audio", Transport())  # type: ignore[arg-type]
    receiver._track = object()  # type: ignore[assignment]
    decoding = webrtc._decode_inline(receiver, lambda samples, rate, channels: None)
    assert decoding is not None
    ended: asyncio.Queue[object] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    thread = threading.Thread(target=decoder_worker, args=(loop, decoding, ended, threading.Event()))
    thread.start()
    decoding.put(None)  # the receiver stops
    assert await asyncio.wait_for(ended.get(), 5) is None
    await asyncio.to_thread(thread.join, 5)
    assert not thread.is_alive()


def browser_dtx_stream(frames: list[np.ndarray]) -> list[tuple[int, bytes]]:
    """(RTP timestamp, payload) of the packets a browser sends for 20 ms frames at 24 kHz
    with DTX on (``tests/webrtc_client.py``)."""
    import fractions

    from av import AudioFrame

    from tests.webrtc_client import BrowserOpusEncoder

    encoder = BrowserOpusEncoder()
    packets = []
    for index, pcm in enumerate([*frames, np.zeros(480, np.int16)]):  # one more: the resampler's delay
        frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 24000, index * 480, fractions.Fraction(1, 24000)
        payloads, timestamp = encoder.encode(frame)
        packets.extend((timestamp, payload) for payload in payloads)
    return packets


async def test_a_dtx_stream_reaches_the_session_as_its_whole_timeline() -> None:
    """Speech, 3 s of quiet (a packet every 400 ms), speech: what is delivered is as long as
    what was said, the speech where it was said, the skipped time as zeros."""
    frames = tone(25) + [np.zeros(480, np.int16)] * 150 + tone(25)
    packets = browser_dtx_stream(frames)
    assert len(packets) < 80  # of 200 frames: DTX really skipped time

    class Receiver:
        _track = object()

    pieces: list[np.ndarray] = []
    decoding = _InlineDecoding(
        Receiver(), queue.Queue(), lambda samples, rate, channels: pieces.append(samples.copy())
    )  # type: ignore[arg-type]
    for timestamp, payload in packets:
        decoding.put((OPUS, JitterFrame(payload, timestamp)))
    decoding.stop()
    heard = np.concatenate(pieces)
    first = packets[0][0] // 2  # the stream starts at its first packet (24 kHz samples)
    assert len(heard) == packets[-1][0] // 2 + 480 - first
    loud = np.flatnonzero(np.abs(heard) > 1000)
    second_tone = 175 * 480 - first
    assert loud[0] < 2 * 480 and abs(int(loud[loud > 30 * 480][0]) - second_tone) < 2 * 480


def test_stream_gaps_fill_skipped_time_on_arrival_and_in_real_time() -> None:
    frame = 960
    gaps = StreamGaps(48000, lag_ms=40)
    assert gaps.arrived(1000, frame, 0.0, quiet=False) == 0
    assert gaps.arrived(1000 + frame, frame, 0.02, quiet=False) == 0
    # a lost packet: its time is filled when the next one arrives
    assert gaps.arrived(1000 + 3 * frame, frame, 0.06, quiet=True) == frame
    # quiet, then nothing: filled in real time up to lag_ms ago, in whole frames
    assert gaps.due(0.07) == 0  # not yet late
    assert gaps.due(0.06 + 0.04 + 0.05) == 2 * frame
    assert gaps.due(0.06 + 0.04 + 0.05) == 0  # already given
    # the DTX packet arrives 400 ms after the last: only what was not filled yet
    filled = gaps.filled
    assert gaps.arrived(1000 + 4 * frame + 20 * frame, frame, 0.46, quiet=True) == 20 * frame - 2 * frame
    assert gaps.filled == filled + 18 * frame
    # a packet for time already filled is still given whole: the clock runs ahead, nothing is lost
    assert gaps.due(0.46 + 0.04 + 0.11) == 5 * frame
    position = gaps.position
    assert gaps.arrived(1000 + 26 * frame, frame, 0.61, quiet=True) == 0
    assert gaps.position == (position + frame) & 0xFFFFFFFF  # type: ignore[operator]
    # after a frame with sound a missing packet is jitter or loss, not DTX: nothing in real time
    gaps.arrived(1000 + 27 * frame, frame, 0.62, quiet=False)
    assert gaps.due(1.0) == 0
    # a pause longer than MAX_GAP_FILL_MS (a track stopped): not filled, the clock starts again
    assert gaps.arrived(1000 + 500 * frame, frame, 10.0, quiet=False) == 0
    # timestamps wrap at 2**32
    wrapping = StreamGaps(48000)
    wrapping.arrived(0xFFFFFFFF - frame + 1, frame, 0.0, quiet=True)
    assert wrapping.arrived(frame, frame, 0.04, quiet=True) == frame


async def test_quiet_frames_are_handed_over_together_while_nothing_counts() -> None:
    """Room tone while nothing is heard or played goes to the session ``HOLD_FRAMES`` frames
    at a time; sound, or the caller's time counting, hands over what is held at once, in order."""

    class Receiver:
        _track = object()

    counting = [False]
    chunks: list[np.ndarray] = []
    decoding = _InlineDecoding(
        Receiver(),  # type: ignore[arg-type]
        queue.Queue(),
        lambda samples, rate, channels: chunks.append(samples.copy()),
        idle=lambda: not counting[0],
    )
    encoder = OpusFrameEncoder()
    rng = np.random.default_rng(5)
    hold = _InlineDecoding.HOLD_FRAMES
    room = [rng.normal(0, 30, 960).astype(np.int16) for _ in range(hold + 4)]
    loud = (8000 * np.sin(np.arange(960) / 7)).astype(np.int16)
    frames = [*room[: hold + 1], loud, *room[hold + 1 : hold + 3], room[hold + 3]]
    for index, pcm in enumerate(frames):
        if index == hold + 3:
            counting[0] = True  # an answer starts playing: every frame at once
        decoding.put((OPUS, JitterFrame(encoder.encode(pcm), index * 960)))
    assert [len(chunk) for chunk in chunks] == [hold * 480, 2 * 480, 480, 480, 480]
    decoding.stop()
    assert sum(len(chunk) for chunk in chunks) == len(frames) * 480  # nothing lost
    heard = np.concatenate(chunks)
    loud_at = (hold + 1) * 480
    assert np.abs(heard[loud_at : loud_at + 480].astype(np.int32)).max() > 3000  # the sound in its place
    assert np.abs(heard[:loud_at].astype(np.int32)).max() < 1000


async def test_silence_is_given_in_real_time_only_while_the_session_times_a_pause() -> None:
    class Receiver:
        _track = object()

    now = [0.0]
    hearing = [False]
    delivered: list[int] = []
    decoding = _InlineDecoding(
        Receiver(),  # type: ignore[arg-type]
        queue.Queue(),
        lambda samples, rate, channels: delivered.append(len(samples)),
        in_real_time=lambda: hearing[0],
        clock=lambda: now[0],
    )
    quiet = OpusFrameEncoder()
    payloads = [quiet.encode(np.zeros(960, np.int16)) for _ in range(3)]
    decoding.put((OPUS, JitterFrame(payloads[0], 0)))
    now[0] = 0.02
    decoding.put((OPUS, JitterFrame(payloads[1], 960)))
    now[0] = 0.02 + 0.04 + 0.2  # no packet since: 200 ms of the caller's time went by
    await asyncio.sleep(0.2)
    assert sum(delivered) == 2 * 480  # idle: the gap waits for the next packet
    hearing[0] = True  # the session now times a pause
    deadline = asyncio.get_running_loop().time() + 5
    while sum(delivered) < 3 * 480 + 480 * 9 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    assert sum(delivered) == 2 * 480 + 10 * 480  # two frames, then 10 frames of silence
    decoding.stop()
    assert decoding._timer is None
