"""The SIP layer's errors: one tree, rooted at `SIPError`.

``triosip.sip`` stands alone (it could ship without the rest of triosip), so its tree is
not under ``triosip.errors.TriosipError``. `ParseError`, the branch that carries its own
answer, is in ``_parse_error.py``: it holds `Header` values, which raise `LocalSIPError`.
"""


class SIPError(Exception):
    """Root of every error that ``triosip.sip`` raises on purpose."""


class LocalSIPError(SIPError, ValueError):
    """Our own code asked for something that is not valid SIP.

    For example a header value holding CR or LF (it would inject header lines), a
    Max-Forwards outside 0..255, or a header name that is not a token. This is a bug in
    the caller, never a property of received bytes.
    """
