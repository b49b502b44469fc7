"""Requests a proxy builds from another message: the ACK of a non-2xx, and CANCEL.

Both copy header lines as they came (folds, spelling and compact forms kept), so that the
peer matches them to the transaction it knows, and return a `Request` like `build_response`
returns a `Response`: no text is formatted and parsed again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from triosip.sip._message import Request

if TYPE_CHECKING:
    from triosip.sip._message import Response

# RFC 3261 §8.1.1.6: "a UAC MUST insert a Max-Forwards header field ... SHOULD be 70".
_MAX_FORWARDS = 70


def build_ack(request: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response, as the ICT sends it (RFC 3261 §17.1.1.3).

    Request-URI, Call-ID, From and CSeq number of the original request; the To of the
    response (with its tag); a single Via equal to the request's top Via (so the same
    branch); the request's Route header fields; method ACK in the CSeq.

    Args:
        request: the INVITE the transaction sent.
        response: the 300-699 response being acknowledged.

    Returns:
        The ACK.
    """
    max_forwards = request.max_forwards
    lines = [
        f"Via: {request.top_via}",
        f"Max-Forwards: {_MAX_FORWARDS if max_forwards is None else max_forwards}",
    ]
    names = ["via", "max-forwards"]
    for name, line in zip(response._names(), response.lines, strict=True):
        if name == "to":
            lines.append(line)
            names.append(name)
    for name, line in zip(request._names(), request.lines, strict=True):
        if name in ("from", "call-id", "route"):
            lines.append(line)
            names.append(name)
    lines.append(f"CSeq: {request.cseq.number} ACK")
    lines.append("Content-Length: 0")
    names += ("cseq", "content-length")
    return _request("ACK", request.uri_raw, lines, names)


def build_cancel(invite: Request) -> Request:
    """The CANCEL of a forwarded INVITE (RFC 3261 §9.1).

    Same Request-URI, Call-ID, From, To, CSeq number and Route set as the INVITE, and only
    its top Via, so that it matches the INVITE's client transaction downstream.

    Args:
        invite: the INVITE as it was sent.

    Returns:
        The CANCEL.
    """
    lines = [f"Via: {invite.header_values('via')[0]}"]
    lines.extend(f"Route: {value}" for value in invite.header_lines("route"))
    lines += (
        f"Max-Forwards: {_MAX_FORWARDS}",
        f"From: {invite.header('from')}",
        f"To: {invite.header('to')}",
        f"Call-ID: {invite.call_id}",
        f"CSeq: {invite.cseq.number} CANCEL",
        "Content-Length: 0",
    )
    names = ["via", *("route" for _ in lines[1:-6])]
    names += ("max-forwards", "from", "to", "call-id", "cseq", "content-length")
    return _request("CANCEL", invite.uri_raw, lines, names)


def _request(method: str, uri_raw: str, lines: list[str], names: list[str]) -> Request:
    request = Request(method=method, uri_raw=uri_raw, lines=tuple(lines))
    # The canonical names are known: no need to find them in the lines again.
    request._state.names = tuple(names)
    return request
