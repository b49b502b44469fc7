"""Which worker owns a message (`triosip.transport.owner_of`): a pure function of the bytes
that every worker computes alike, so that a CANCEL, a non-2xx ACK, a retransmission, a
later request of the dialog or a response reaches the worker holding its call, whatever
socket it arrived on."""

from __future__ import annotations

import zlib

import pytest

from triosip.testing.proxy import UdpPeer
from triosip.transport import Address, owner_of


def by_crc(text: str, count: int) -> int:
    return zlib.crc32(text.encode()) % count


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            b"INVITE sip:bob@example.com SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-one;rport\r\n"
            b"Call-ID: call-1@host\r\n"
            b"CSeq: 1 INVITE\r\n\r\n",
            by_crc("call-1@host", 7),
        ),
        # The compact form, any case, blanks around the value.
        (b"CANCEL sip:b@h SIP/2.0\r\nv: SIP/2.0/UDP h\r\ni:  c-2 \r\n\r\n", by_crc("c-2", 7)),
        (b"ACK sip:b@h SIP/2.0\r\nCALL-id:c-3\r\n\r\n", by_crc("c-3", 7)),
        # A response belongs where its request's call is.
        (
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK-x\r\nCall-ID: c-3\r\n\r\n",
            by_crc("c-3", 7),
        ),
        # Keep-alives and garbage are handled where they land.
        (b"\r\n\r\n", None),
        (b"\x00\xff garbage", None),
        (b"", None),
        # A Call-ID in the body is no header.
        (b"INVITE sip:b@h SIP/2.0\r\nVia: x\r\n\r\nCall-ID is in the body", None),
    ],
)
def test_owner_of(data: bytes, expected: int | None) -> None:
    assert owner_of(data, 7) == expected


def test_a_call_has_one_owner() -> None:
    caller = UdpPeer(sock=None, address=Address("udp", "127.0.0.1", 5099))  # type: ignore[arg-type]
    for count in (2, 3, 4):
        for _ in range(50):
            invite = caller.request("INVITE")
            owner = owner_of(bytes(invite), count)
            assert owner is not None
            assert owner_of(bytes(caller.cancel(invite)), count) == owner
            bye = caller.request("BYE", call_id=invite.call_id, cseq=2, to_tag="callee")
            assert owner_of(bytes(bye), count) == owner


def test_owners_spread_over_the_workers() -> None:
    # One peer (one sipp socket) sends everything: the hand-off still spreads the load.
    caller = UdpPeer(sock=None, address=Address("udp", "127.0.0.1", 5099))  # type: ignore[arg-type]
    owners = [owner_of(bytes(caller.request("INVITE")), 2) for _ in range(400)]
    assert 150 < owners.count(0) < 250
