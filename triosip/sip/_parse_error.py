"""`ParseError`: what reading bytes from the network raises, carrying its own answer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from triosip.sip._errors import SIPError

if TYPE_CHECKING:
    from triosip.sip._headers import Header


class ParseError(SIPError):
    """Bytes from the network are not a SIP message we accept.

    It is the only exception that reading wire bytes may raise: parsing, stream framing
    and every lazily parsed accessor. It carries what a UAS needs to answer (RFC 3261
    §8.2, §21.4.1): a status, a reason phrase that says what is wrong, and the header
    lines a response must copy; `build_error_response` turns it into bytes.

    Attributes:
        status: what a UAS should answer: 400, 505 for an unsupported SIP version, 413
            for a message over the size limit.
        reason: a reason phrase that says what is wrong ("Missing Call-ID").
        fatal: for `StreamParser`, the stream cannot be re-synchronised (framing lost or
            a message over the limit): the connection must be closed after answering.
        answer: the raw Via, From, To, Call-ID and CSeq header lines, when the message
            got far enough to have them (empty otherwise).
        is_request: True if the start line looked like a request line, False if it
            looked like a status line, None if unknown.
        method: the request method, if known.
    """

    def __init__(
        self,
        reason: str,
        *,
        status: int = 400,
        fatal: bool = False,
        answer: tuple[Header, ...] = (),
        is_request: bool | None = None,
        method: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.fatal = fatal
        self.answer = answer
        self.is_request = is_request
        self.method = method

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"ParseError({self.reason!r}, status={self.status}, fatal={self.fatal})"
