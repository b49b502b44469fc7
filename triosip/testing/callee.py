"""A callee for tests and for ``triosip check``'s drill: a `UdpPeer` that answers each
INVITE as told — at once with a status, ringing until CANCELled, or not at all.

Example::

    async with open_udp_peer() as peer, trio.open_nursery() as nursery:
        nursery.start_soon(serve_callee, peer, Answer(486))
        ...  # relay an INVITE to peer.destination: it gets 486 Busy Here
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from triosip.sip import Request

if TYPE_CHECKING:
    from triosip.testing.proxy import UdpPeer

__all__ = ["Answer", "serve_callee"]


@dataclass(frozen=True, slots=True)
class Answer:
    """How a callee answers an INVITE.

    Attributes:
        status: the final status it sends (200, 486, 503...), or None for none: it then
            rings until CANCELled (`ring`) or stays silent.
        ring: whether it sends 180 Ringing first.
    """

    status: int | None = 200
    ring: bool = False

    def __str__(self) -> str:
        if self.status is None:
            return "rings until CANCELled" if self.ring else "stays silent"
        return f"rings, then answers {self.status}" if self.ring else f"answers {self.status}"


async def serve_callee(peer: UdpPeer, answer: Answer) -> None:
    """Answer the requests that reach `peer`, until cancelled.

    An INVITE gets `answer` (RFC 3261 §17.2.1: a retransmission gets the same again); a
    CANCEL gets 200, then its INVITE, if still unanswered, 487 (§9.2); an ACK gets nothing;
    any other request gets 200, unless the callee is silent.

    Args:
        peer: the callee's socket (its reading task must run: `open_udp_peer`).
        answer: how INVITEs are answered.
    """
    unanswered: dict[str, Request] = {}
    while True:
        received = await peer.receive()
        request = received.message
        if not isinstance(request, Request):
            continue
        branch = request.top_via.branch or ""
        if request.method == "INVITE":
            if answer.ring:
                await peer.respond(request, 180, received.source)
            if answer.status is not None:
                await peer.respond(request, answer.status, received.source)
            else:
                unanswered[branch] = request
        elif request.method == "CANCEL":
            await peer.respond(request, 200, received.source)
            invite = unanswered.pop(branch, None)
            if invite is not None:
                await peer.respond(invite, 487, received.source)
        elif request.method != "ACK" and (answer.status is not None or answer.ring):
            await peer.respond(request, 200, received.source)
