"""Messages built from another: a response, the answer to a malformed request, ACK, CANCEL.

`build_response` answers a request; `build_error_response` answers what could not be
parsed, from the lines its `ParseError` carries. `build_ack` (the ACK of a non-2xx) and
`build_cancel` are the requests a proxy builds from another message.

All of them copy header lines as they came (folds, spelling and compact forms kept), so
that the peer matches them to the transaction it knows, and return a message (bytes for
`build_error_response`, whose request never became one): no text is formatted and parsed
again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from triosip.sip import _abnf
from triosip.sip._errors import LocalSIPError
from triosip.sip._fields import check_address, check_cseq, first_via
from triosip.sip._headers import _COPIED, Header, _encode, _make_line
from triosip.sip._message import Request, Response, _State, check_call_id
from triosip.sip._parse_error import ParseError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

_new = object.__new__
_set = object.__setattr__
# The place of each copied header in a response (RFC 3261 §8.2.6.2).
_COPIED_ORDER: Final = {name: order for order, name in enumerate(_COPIED)}

REASON_PHRASES: Final[Mapping[int, str]] = {
    # RFC 3261 §21, plus the codes of RFC 3265, 3329, 3428, 4412, 4474, 5079, 5360,
    # 5393, 5839, 6086, 8197, 8599 that proxies meet.
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    428: "Use Identity Header",
    429: "Provide Referrer Identity",
    430: "Flow Failed",
    433: "Anonymity Disallowed",
    436: "Bad Identity-Info",
    437: "Unsupported Certificate",
    438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support",
    440: "Max-Breadth Exceeded",
    469: "Bad Info Package",
    470: "Consent Needed",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    555: "Push Notification Service Not Supported",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",
    608: "Rejected",
}


# RFC 3261 §8.1.1.6: "a UAC MUST insert a Max-Forwards header field ... SHOULD be 70".
_MAX_FORWARDS = 70


def build_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """A response to a request, as a UAS or a proxy builds it (RFC 3261 §8.2.6).

    Copies every Via line (in order), From, To, Call-ID and CSeq as they came; adds
    ``;tag=to_tag`` to the To when it has no tag, the status is above 100 and a tag is
    given; a 100 also copies Timestamp (§8.2.6.1). Then ``headers``, then
    Content-Length.

    Args:
        request: the request answered.
        status: 100..699.
        reason: the reason phrase; None for the usual one (`REASON_PHRASES`).
        to_tag: the tag of the UAS's side of the dialog.
        headers: more header lines, (name, value), in order.
        body: the body.

    Returns:
        The response.

    Raises:
        LocalSIPError: status out of range, or a header that would not be valid.
        ParseError: the request lacks one of the copied headers (never for a parsed
            request: the parser checked them).
    """
    if not 100 <= status <= 699:
        raise LocalSIPError(f"Status {status} outside 100..699")
    if reason is None:
        reason = REASON_PHRASES.get(status, "Unknown")
    elif any(c in reason for c in "\r\n\x00"):
        raise LocalSIPError(f"Reason phrase with CR, LF or NUL: {reason!r}")
    to = request.to  # checks it is there and valid
    request_lines = request.lines
    request_names = request._state.names or request._names()
    # §8.2.6.2: Via lines in their order, then From, To, Call-ID, CSeq, as they came:
    # sorted by their place in that list, then by their place in the request.
    copied = sorted(
        [(_COPIED_ORDER[name], n) for n, name in enumerate(request_names) if name in _COPIED_ORDER]
    )
    lines = [request_lines[n] for _, n in copied]
    names = [_COPIED[order] for order, _ in copied]
    # §8.2.6.2: the UAS adds its tag unless the request had one; not on a 100.
    tagged = to_tag is not None and status > 100 and to.tag is None
    if tagged:
        n = names.index("to")
        lines[n] = lines[n].rstrip(" \t") + ";tag=" + to_tag  # type: ignore[operator]
    if status == 100 and "timestamp" in request_names:
        for n, name in enumerate(request_names):
            if name == "timestamp":
                lines.append(request_lines[n])
                names.append(name)
    for name, value in headers:
        line, canonical = _make_line(name, value)
        lines.append(line)
        names.append(canonical)
    lines.append(f"Content-Length: {len(body)}")
    names.append("content-length")
    response: Response = _new(Response)
    _set(response, "status", status)
    _set(response, "reason", reason)
    _set(response, "version", _abnf.SIP_2_0)
    _set(response, "lines", tuple(lines))
    _set(response, "body", body)
    # What the request's parse checked holds here too: the lines are the same. The To
    # is read again if a tag was added.
    source = request._state
    state = _new(_State)
    state.__dict__ = {
        "names": tuple(names),
        "via_p": source.via_p,
        "top_via": source.top_via,
        "from_p": source.from_p,
        "from_": source.from_,
        "call_id": source.call_id,
        "cseq_p": source.cseq_p,
        "cseq": source.cseq,
        "max_forwards_known": True,
        "content_length": len(body),
    }
    if not tagged:
        state.to_p, state.to = source.to_p, source.to
    _set(response, "_state", state)
    return response


def build_error_response(error: ParseError, *, to_tag: str) -> bytes | None:
    """The bytes of the answer to a malformed request (RFC 3261 §8.2, §21.4.1).

    ``SIP/2.0 <status> <reason>`` with the error's Via, From, To (tagged), Call-ID and
    CSeq lines copied as they came, and ``Content-Length: 0``.

    Args:
        error: what the parser raised.
        to_tag: a tag for the To header if it has none.

    Returns:
        The response bytes, or None when the message cannot be answered usefully: a
        response, an ACK (RFC 3261 §17.2.3: never answered), a start line too broken to
        tell, or a Via, From, To, Call-ID or CSeq that is missing, repeated or malformed
        (the client could not match the answer to its transaction, §17.1.3, and the top
        Via says where to send it, §18.2.2). The caller drops those and counts them.
    """
    if error.is_request is not True or error.method == "ACK":
        return None
    by_name: dict[str, list[Header]] = {}
    for header in error.answer:
        by_name.setdefault(header.name, []).append(header)
    try:
        first_via(by_name["via"][0].value)
        (from_,), (to,), (call_id,), (cseq,) = (
            by_name["from"],
            by_name["to"],
            by_name["call-id"],
            by_name["cseq"],
        )
        check_address(from_.value, "From")
        to_parts = check_address(to.value, "To")
        check_call_id(call_id.value)
        check_cseq(cseq.value)
    except (KeyError, ValueError, ParseError):
        return None  # missing (KeyError), repeated (ValueError: unpacking) or malformed
    if to_parts[_abnf.ADDR_TAG] is None:
        to = Header(to.name, to.raw.rstrip(b" \t") + b";tag=" + _encode(to_tag))
    lines: list[bytes] = [_encode(f"SIP/2.0 {error.status} {error.reason}")]
    for name in _COPIED:
        lines.extend(header.raw for header in by_name[name] if name != "to")
        if name == "to":
            lines.append(to.raw)
    lines.append(b"Content-Length: 0")
    return b"\r\n".join((*lines, b"", b""))


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
