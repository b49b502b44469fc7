"""The proxy's counters: messages by method and class, where replies came from, parse
errors by reason (`Proxy.statistics()` returns a frozen snapshot)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# Parse-error reasons are phrases, a few dozen in all; past this many distinct ones (a
# reason that quotes the input, say), the rest are counted together so the table stays small.
MAX_PARSE_ERROR_REASONS = 64
OTHER_REASON = "other"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyStatistics:
    """A snapshot of the proxy's counters.

    Attributes:
        requests_received: requests received, by method (retransmissions included).
        replies_received: responses received, by class (``"1xx"``...``"6xx"``).
        requests_forwarded: requests sent on a branch or statelessly, by method.
        replies_forwarded: responses relayed upstream from a branch, by class.
        replies_generated: responses the proxy (or a route's reply()) made, by class (the
            100 Trying of each INVITE included).
        replies_sent: every response sent upstream, generated or relayed, by status code
            (Kamailio's ``sl:`` and ``tm:`` ``200_replies`` and the like).
        parse_errors: messages that failed to parse, by reason.
        transactions_active: proxied transactions running now.
        transactions_total: proxied transactions started.
        message_errors: messages dropped because their handling raised (a bug: fields
            are checked when a message is accepted; this counts what slipped through).
    """

    requests_received: dict[str, int]
    replies_received: dict[str, int]
    requests_forwarded: dict[str, int]
    replies_forwarded: dict[str, int]
    replies_generated: dict[str, int]
    parse_errors: dict[str, int]
    transactions_active: int
    transactions_total: int
    message_errors: int
    # Defaulted, so that snapshots built by hand before it existed still build.
    replies_sent: dict[int, int] = field(default_factory=dict)


class ProxyCounters:
    """The live counters behind `ProxyStatistics`; the proxy bumps them as messages pass."""

    def __init__(self) -> None:
        self.requests_received: Counter[str] = Counter()
        self.replies_received: Counter[str] = Counter()
        self.requests_forwarded: Counter[str] = Counter()
        self.replies_forwarded: Counter[str] = Counter()
        self.replies_generated: Counter[str] = Counter()
        # By status code: at most 600 keys (a status is 100-699, checked when parsed).
        self.replies_sent: Counter[int] = Counter()
        self.parse_errors: Counter[str] = Counter()
        self.transactions_total = 0
        self.message_errors = 0

    def generated(self, status: int) -> None:
        """A response the proxy made itself went upstream."""
        self.replies_generated[status_class(status)] += 1
        self.replies_sent[status] += 1

    def parse_error(self, reason: str) -> None:
        if reason in self.parse_errors or len(self.parse_errors) < MAX_PARSE_ERROR_REASONS:
            self.parse_errors[reason] += 1
        else:
            self.parse_errors[OTHER_REASON] += 1

    def snapshot(self, transactions_active: int) -> ProxyStatistics:
        return ProxyStatistics(
            requests_received=dict(self.requests_received),
            replies_received=dict(self.replies_received),
            requests_forwarded=dict(self.requests_forwarded),
            replies_forwarded=dict(self.replies_forwarded),
            replies_generated=dict(self.replies_generated),
            replies_sent=dict(sorted(self.replies_sent.items())),
            parse_errors=dict(self.parse_errors),
            transactions_active=transactions_active,
            transactions_total=self.transactions_total,
            message_errors=self.message_errors,
        )


def status_class(status: int) -> str:
    """``"4xx"`` for 486."""
    return f"{status // 100}xx"
