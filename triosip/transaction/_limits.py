"""How much the transaction layer takes on: the cap on server transactions, and pike.

Theory of operation
-------------------
Every server transaction costs memory for as long as it lives: while its route and
branches run (a task with its nursery), then for 64*T1 after its final response over UDP
(a lean record absorbing retransmissions, RFC 3261 §17.2). The cap bounds how many the
layer holds; a new request beyond it gets a stateless 503 with Retry-After (RFC 3261
§21.5.4), built and sent without creating anything.

Pike (Kamailio's name) limits how many new transactions one source IP may start per
second, with a token bucket per source. Requests beyond it are dropped silently and
counted: answering them would make the proxy a reflector, sending a response to a
source that may well be spoofed for every request a flood sends. The table of sources is
bounded too (an attacker spoofs as many sources as it likes): beyond its size, the source
seen least recently is forgotten, and comes back with a full bucket.
"""

from __future__ import annotations

from dataclasses import dataclass

# At the proxy's top clean rate, 500 calls/s (bench/RESULTS.md), an INVITE and a BYE per
# call held 64*T1 = 32 s after their final make 32,000 server transactions; 1,000 calls/s
# make 64,000. 100,000 leaves room above that, and holds ~1.9 KB each once answered
# (~190 MB; bench/RESULTS.md, "held transactions"), so a flood stops well short of what
# a small machine has.
DEFAULT_MAX_TRANSACTIONS = 100_000

# Sources pike remembers at most; ~150 bytes each.
DEFAULT_PIKE_SOURCES = 65_536


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadLimits:
    """Bounds on the server transactions the layer takes on.

    Attributes:
        max_transactions: the most server transactions held at once, those in progress
            and those kept after their final response to absorb retransmissions; a new
            request beyond it gets a stateless ``503 Service Unavailable``.
        retry_after: the ``Retry-After`` of that 503, in seconds.
        pike_rate: new transactions per second one source IP may start (a burst of as
            many is allowed); beyond it, requests are dropped silently. None: no limit.
        pike_sources: the most source IPs pike keeps a bucket for.
    """

    max_transactions: int = DEFAULT_MAX_TRANSACTIONS
    retry_after: int = 5
    pike_rate: float | None = None
    pike_sources: int = DEFAULT_PIKE_SOURCES

    def __post_init__(self) -> None:
        if self.max_transactions < 1:
            raise ValueError(f"max_transactions must be at least 1, not {self.max_transactions}")
        if self.retry_after < 0:
            raise ValueError(f"retry_after must be >= 0, not {self.retry_after}")
        if self.pike_rate is not None and not self.pike_rate > 0:
            raise ValueError(f"pike_rate must be > 0, not {self.pike_rate}")
        if self.pike_sources < 1:
            raise ValueError(f"pike_sources must be at least 1, not {self.pike_sources}")


class Pike:
    """A token bucket per source IP, in a table of bounded size (least recently seen goes).

    Args:
        rate: tokens added per second; also the bucket's size (one second's burst).
        sources: the most sources remembered.
    """

    __slots__ = ("_buckets", "_rate", "_sources")

    def __init__(self, rate: float, sources: int) -> None:
        self._rate = rate
        self._sources = sources
        # host -> [tokens, last refill time]; insertion order is recency (moved on use).
        self._buckets: dict[str, list[float]] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, host: str, now: float) -> bool:
        """Take a token from ``host``'s bucket; False when it has none left."""
        buckets = self._buckets
        bucket = buckets.pop(host, None)
        if bucket is None:
            if len(buckets) >= self._sources:
                del buckets[next(iter(buckets))]  # the least recently seen
            bucket = [self._rate, now]
        else:
            bucket[0] = min(self._rate, bucket[0] + (now - bucket[1]) * self._rate)
            bucket[1] = now
        buckets[host] = bucket
        if bucket[0] < 1.0:
            return False
        bucket[0] -= 1.0
        return True
