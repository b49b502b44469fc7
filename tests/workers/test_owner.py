"""Which worker owns a request (`triosip.transport.owner_of`): a pure function of the bytes
that every worker computes alike, so that a CANCEL, a non-2xx ACK or a retransmission
reaches the worker holding its transaction whatever socket it arrived on."""

from __future__ import annotations

import zlib

import pytest

from triosip.testing.proxy import UdpPeer
from triosip.transport import Address, owner_of

BRANCH = "z9hG4bK-one"
INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-one;rport\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-below\r\n"
    b"Call-ID: call-1@host\r\n"
    b"CSeq: 1 INVITE\r\n\r\n"
)


def by_crc(text: str, count: int) -> int:
    return zlib.crc32(text.encode()) % count


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # The top Via's branch, not a lower one's.
        (INVITE, by_crc(BRANCH, 7)),
        # The compact form, any case, spaces around "=".
        (
            b"CANCEL sip:b@h SIP/2.0\r\nv: SIP/2.0/UDP h;BRANCH = z9hG4bK-one\r\ni: x\r\n\r\n",
            by_crc(BRANCH, 7),
        ),
        # Two values on one line: the first is the top one (RFC 3261 §7.3.1).
        (
            b"ACK sip:b@h SIP/2.0\r\nVIA: SIP/2.0/UDP a;branch=z9hG4bK-one, "
            b"SIP/2.0/UDP b;branch=z9hG4bK-two\r\nCall-ID: c\r\n\r\n",
            by_crc(BRANCH, 7),
        ),
        # An RFC 2543 branch (no magic cookie) does not name the transaction: the Call-ID.
        (
            b"INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=old\r\nCall-ID:  c-2 \r\n\r\n",
            by_crc("c-2", 7),
        ),
        (b"INVITE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h\r\ni: c-3\r\n\r\n", by_crc("c-3", 7)),
        # A response's top Via is ours: its branch names the worker that sent the request.
        (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK-one\r\n\r\n", by_crc(BRANCH, 7)),
        # Not one of ours (no cookie): handled where it lands, never by its Call-ID.
        (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=old\r\nCall-ID: c\r\n\r\n", None),
        # Keep-alives and garbage are handled where they land.
        (b"\r\n\r\n", None),
        (b"\x00\xff garbage", None),
        (b"", None),
    ],
)
def test_owner_of(data: bytes, expected: int | None) -> None:
    assert owner_of(data, 7) == expected


def test_a_cancel_and_an_ack_have_their_invite_s_owner() -> None:
    caller = UdpPeer(sock=None, address=Address("udp", "127.0.0.1", 5099))  # type: ignore[arg-type]
    for count in (2, 3, 4):
        for _ in range(50):
            invite = caller.request("INVITE")
            owner = owner_of(bytes(invite), count)
            assert owner is not None
            assert owner_of(bytes(caller.cancel(invite)), count) == owner
            busy = caller.request("INVITE", call_id=invite.call_id)  # another transaction
            assert owner_of(bytes(busy), count) in range(count)


def test_owners_spread_over_the_workers() -> None:
    # One peer (one sipp socket) sends everything: the hand-off still spreads the load.
    caller = UdpPeer(sock=None, address=Address("udp", "127.0.0.1", 5099))  # type: ignore[arg-type]
    owners = [owner_of(bytes(caller.request("INVITE")), 2) for _ in range(400)]
    assert 150 < owners.count(0) < 250
