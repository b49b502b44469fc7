"""Transaction matching keys: RFC 3261 §17.1.3, §17.2.3 and the RFC 2543 fallback, §9.2.

Matching is a dict lookup on a tuple built from fields the parser validated eagerly (top
Via, From, To, Call-ID, CSeq, the Request-URI text), so it costs no parsing and cannot
raise ``ParseError``. The three kinds of server key have different lengths and so never
collide in one dict:

* 4 items, RFC 3261 (the branch starts with the magic cookie): ``(branch, sent-by host,
  sent-by port, method)``, the method of an ACK counted as INVITE (§17.2.3).
* 7 items, RFC 2543 (no cookie): ``(Request-URI, To tag, From tag, Call-ID, CSeq number,
  CSeq method, top Via)`` (§17.2.3, last paragraph).
* 6 items, RFC 2543 INVITE key: ``("INVITE", Request-URI, From tag, Call-ID, CSeq number,
  top Via)``: what an ACK (whose To tag must then equal the one of the response it
  acknowledges) and a CANCEL (§9.2) share with their INVITE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from triosip.sip import MAGIC_COOKIE

if TYPE_CHECKING:
    from triosip.sip import Request, Response

ServerKey: TypeAlias = tuple[object, ...]
ClientKey: TypeAlias = tuple[str, str]


def has_magic_cookie(branch: str | None) -> bool:
    """Whether a branch was made by an RFC 3261 element (§8.1.1.7: it starts "z9hG4bK")."""
    return branch is not None and branch.startswith(MAGIC_COOKIE)


def server_key(request: Request) -> ServerKey:
    """The key of the server transaction a request belongs to (RFC 3261 §17.2.3).

    Args:
        request: a request from the network; an ACK gives the key of its INVITE.

    Returns:
        A hashable key. For an RFC 2543 ACK it is the INVITE key (:func:`invite_key`); the
        caller must then compare the ACK's To tag with the response it acknowledges.
    """
    via = request.top_via
    branch = via.branch
    method = request.method
    if branch is not None and branch.startswith(MAGIC_COOKIE):  # has_magic_cookie, inline
        # §17.2.3: same branch, same sent-by, and the same method, "except for ACK, where
        # the method of the request that created the transaction is INVITE". A CANCEL has
        # its INVITE's branch and so is told apart by its method alone.
        host, port = via.sent_by
        # Host names compare case-insensitively (§19.1.4); a missing port is not 5060 here,
        # as a retransmission repeats the sent-by exactly.
        return (branch, host.lower(), port, "INVITE" if method == "ACK" else method)
    if method == "ACK":
        # §17.2.3: an RFC 2543 ACK matches on everything but its To tag and its method.
        return invite_key(request)
    # §17.2.3, last paragraph: "the Request-URI, To tag, From tag, Call-ID, CSeq
    # (including the method), and top Via header field match". Texts compare as they came:
    # a retransmission is the same bytes.
    cseq = request.cseq
    return (
        request.uri_raw,
        request.to.tag,
        request.from_.tag,
        request.call_id,
        cseq.number,
        cseq.method,
        str(via),
    )


def invite_key(request: Request) -> ServerKey:
    """The key of the INVITE server transaction that an ACK or a CANCEL refers to.

    RFC 3261 §9.2: a CANCEL matches the INVITE it cancels by the §17.2.3 rules with the
    method taken as INVITE; for RFC 2543 requests by Request-URI, From tag, Call-ID, CSeq
    number (not the method) and top Via. For an RFC 2543 INVITE this is the second key it
    is registered under.

    Args:
        request: an ACK, a CANCEL, or an INVITE.

    Returns:
        The key; for an RFC 3261 branch the same as the INVITE's :func:`server_key`.
    """
    via = request.top_via
    branch = via.branch
    if branch is not None and branch.startswith(MAGIC_COOKIE):  # has_magic_cookie, inline
        host, port = via.sent_by
        return (branch, host.lower(), port, "INVITE")
    return (
        "INVITE",
        request.uri_raw,
        request.from_.tag,
        request.call_id,
        request.cseq.number,
        str(via),
    )


def client_key(request: Request) -> ClientKey | None:
    """The key a client transaction is registered under: (branch, method), §17.1.3.

    Returns:
        None when the request's top Via has no branch.
    """
    branch = request.top_via.branch
    if branch is None:
        return None
    # The proxy made the branch (new_branch), unique across its client transactions, so
    # the sent-by is not needed here as it is on the server side.
    return (branch, request.method)


def response_key(response: Response) -> ClientKey | None:
    """The key of the client transaction a response belongs to (RFC 3261 §17.1.3).

    The branch of its top Via and the method of its CSeq; a CANCEL's responses thus find
    the CANCEL's transaction and not the INVITE's, which has the same branch.

    Returns:
        None when the top Via has no branch (it cannot be ours).
    """
    branch = response.top_via.branch
    if branch is None:
        return None
    return (branch, response.cseq.method)
