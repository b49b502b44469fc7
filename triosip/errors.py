"""The error tree of triosip's own layers (the SIP layer keeps its own, ``triosip.sip.SIPError``)."""


class TriosipError(Exception):
    """Root of every error triosip raises on purpose outside ``triosip.sip``."""
