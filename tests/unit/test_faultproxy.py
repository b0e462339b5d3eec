"""The fault proxy's pure part: frame headers, splitting a stream into frames, upgrade heads."""

from __future__ import annotations

import struct

import pytest

from tests import faultproxy
from tests.faultproxy import FrameHeader, FrameSplitter, decode_header, encode_frame
from worker_runtime import protocol

pytestmark = pytest.mark.timeout(2)

LENGTHS = [
    # (id, payload length, header bytes)
    ("empty", 0, 2),
    ("7-bit-max", 125, 2),
    ("16-bit-min", 126, 4),
    ("16-bit-max", 65535, 4),
    ("64-bit-min", 65536, 10),
    ("64-bit-8MiB", 8 * 1024 * 1024, 10),
]


@pytest.mark.parametrize(
    ("length", "header_size"),
    [case[1:] for case in LENGTHS],
    ids=[case[0] for case in LENGTHS],
)
def test_encoded_frame_decodes_to_its_length_in_the_shortest_form(
    length: int, header_size: int
) -> None:
    frame = encode_frame(b"x" * length)
    header = decode_header(frame)
    assert header == FrameHeader(
        fin=True,
        rsv1=False,
        opcode=faultproxy.OP_BINARY,
        masked=False,
        length=length,
        size=header_size,
    )
    assert len(frame) == header_size + length


def test_flags_and_opcode_survive_the_round_trip() -> None:
    header = decode_header(encode_frame(b"hi", opcode=faultproxy.OP_TEXT, fin=False, rsv1=True))
    assert header is not None
    assert (header.fin, header.rsv1, header.opcode) == (False, True, faultproxy.OP_TEXT)


def test_masked_client_frame_counts_its_mask_key_in_the_header() -> None:
    frame = struct.pack("!BBH", 0x82, 0x80 | 126, 300) + b"MASK" + b"\0" * 300
    assert decode_header(frame) == FrameHeader(
        fin=True, rsv1=False, opcode=faultproxy.OP_BINARY, masked=True, length=300, size=8
    )


@pytest.mark.parametrize("cut", range(10), ids=lambda n: f"first-{n}-bytes")
def test_header_cut_short_is_not_decoded_yet(cut: int) -> None:
    frame = encode_frame(b"x" * 70000)  # 10-byte header
    assert decode_header(frame[:cut]) is None


def test_splitter_yields_whole_frames_when_fed_one_byte_at_a_time() -> None:
    frames = [encode_frame(b"a" * 5), encode_frame(b"b" * 300), encode_frame(b"c" * 70000)]
    stream = b"".join(frames)
    splitter = FrameSplitter()
    out = [raw for i in range(len(stream)) for _, raw in splitter.feed(stream[i : i + 1])]
    assert out == frames


def test_splitter_yields_several_frames_from_one_read_and_keeps_the_rest() -> None:
    first, second, third = encode_frame(b"1"), encode_frame(b"22"), encode_frame(b"3" * 200)
    splitter = FrameSplitter()
    assert [raw for _, raw in splitter.feed(first + second + third[:5])] == [first, second]
    assert [raw for _, raw in splitter.feed(third[5:])] == [third]


def test_splitter_is_in_a_message_between_fragments_and_not_after_a_control_frame() -> None:
    splitter = FrameSplitter()
    seen = []
    for frame in (
        encode_frame(b"part1", fin=False),
        encode_frame(b"", opcode=faultproxy.OP_PING),  # control frames may come in between
        encode_frame(b"part2", opcode=faultproxy.OP_CONTINUATION, fin=False),
        encode_frame(b"end", opcode=faultproxy.OP_CONTINUATION),
        encode_frame(b"whole"),
    ):
        splitter.feed(frame)
        seen.append(splitter.in_message)
    assert seen == [True, True, True, False, False]


def test_upgrade_request_loses_only_its_extensions_header() -> None:
    head = (
        b"GET /agent HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        b"Authorization: Bearer t\r\n\r\n"
    )
    assert faultproxy.strip_extensions(head) == (
        b"GET /agent HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nAuthorization: Bearer t\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("head", "path"),
    [
        (b"GET /agent HTTP/1.1\r\nHost: x\r\n\r\n", "/agent"),
        (b"GET /rtc/v1?access_token=t&auto_subscribe=1 HTTP/1.1\r\n\r\n", "/rtc/v1"),
        (b"garbage\r\n\r\n", ""),
    ],
    ids=["agent", "rtc-with-query", "garbage"],
)
def test_request_path_is_read_from_the_request_line_without_its_query(
    head: bytes, path: str
) -> None:  # fmt: skip
    assert faultproxy.request_path(head) == path
    proxy = faultproxy.FaultProxy("127.0.0.1", 1, paths=("/agent",))
    assert proxy.faults(path) is (path == "/agent")
    assert faultproxy.FaultProxy("127.0.0.1", 1).faults(path), "no paths: every connection"


@pytest.mark.parametrize(
    ("head", "upgraded"),
    [
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", True),
        (b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n", False),
        (b"garbage\r\n\r\n", False),
    ],
    ids=["101", "401", "garbage"],
)
def test_only_a_101_response_switches_to_frames(head: bytes, upgraded: bool) -> None:
    assert faultproxy.is_switching_protocols(head) is upgraded


def test_malformed_payload_is_refused_by_the_runtimes_decoder() -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.decode(faultproxy.MALFORMED_PROTOBUF)


def test_protocol_payloads_decode_to_the_message_they_name() -> None:
    kinds = [
        protocol.kind(protocol.decode(payload))
        for payload in (
            faultproxy.termination("AJ_x"),
            faultproxy.assignment("AJ_x"),
            faultproxy.availability("AJ_x"),
            faultproxy.register_response("AW_x"),
        )
    ]
    assert kinds == ["termination", "assignment", "availability", "register"]
