"""The transaction layer's errors: each says who must act on it."""

from __future__ import annotations

from triosip.errors import TriosipError


class TransactionError(TriosipError):
    """The transaction user misused a transaction.

    Raised for a second final response (other than a 2xx to an INVITE in the RFC 6026
    Accepted state), a response after the transaction has terminated, or a request whose
    branch is already in use. The machine is left as it was: the peer does not suffer for a
    bug of the transaction user.
    """


class TransactionTimeout(TransactionError):
    """Timer B or Timer F fired: the next hop sent no final response (RFC 3261 §17.1.1.2,
    §17.1.2.2). A proxy answers the branch with 408 (RFC 3261 §16.8)."""


class TransportFailure(TransactionError):
    """The transport could not deliver a request or a response (RFC 3261 §17.1.4, §17.2.4).

    A proxy treats it as a 503 on that branch (RFC 3261 §16.7 step 7)."""
