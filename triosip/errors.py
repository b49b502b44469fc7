"""The root of triosip's own errors (the sans-IO SIP layer keeps its own tree)."""


class TriosipError(Exception):
    """Root of every error triosip raises on purpose outside ``triosip.sip``."""
