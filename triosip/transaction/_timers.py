"""RFC 3261 Table 4 timers, with RFC 6026's L and M, derived from T1, T2 and T4."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """The three base values every transaction timer is derived from (RFC 3261 §17, Table 4).

    Attributes:
        t1: RTT estimate, 500 ms by default (§17.1.1.1).
        t2: the maximum retransmit interval for non-INVITE requests and INVITE responses,
            4 s by default (§17.1.2.2).
        t4: the maximum duration a message remains in the network, 5 s by default (§17.1.2.2).
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.t1 <= self.t2:
            raise ValueError(f"need 0 < T1 <= T2, got T1={self.t1} T2={self.t2}")
        if self.t4 <= 0:
            raise ValueError(f"need T4 > 0, got T4={self.t4}")

    @property
    def timer_a(self) -> float:
        """INVITE request retransmit interval, initially T1; doubles, not capped (§17.1.1.2)."""
        return self.t1

    @property
    def timer_b(self) -> float:
        """INVITE transaction timeout: 64*T1 (§17.1.1.2)."""
        return 64 * self.t1

    def timer_d(self, reliable: bool) -> float:
        """Wait time for response retransmits: >= 32 s unreliable, 0 reliable (§17.1.1.2).

        It must cover the server's Timer H (64*T1), which is 32 s with the default T1.
        """
        return 0.0 if reliable else max(32.0, 64 * self.t1)

    @property
    def timer_e(self) -> float:
        """Non-INVITE request retransmit interval, initially T1, capped at T2 (§17.1.2.2)."""
        return self.t1

    @property
    def timer_f(self) -> float:
        """Non-INVITE transaction timeout: 64*T1 (§17.1.2.2)."""
        return 64 * self.t1

    @property
    def timer_g(self) -> float:
        """INVITE response retransmit interval, initially T1, capped at T2 (§17.2.1)."""
        return self.t1

    @property
    def timer_h(self) -> float:
        """Wait time for the ACK: 64*T1 (§17.2.1)."""
        return 64 * self.t1

    def timer_i(self, reliable: bool) -> float:
        """Wait time for ACK retransmits: T4 unreliable, 0 reliable (§17.2.1)."""
        return 0.0 if reliable else self.t4

    def timer_j(self, reliable: bool) -> float:
        """Wait time for non-INVITE request retransmits: 64*T1 unreliable, 0 reliable (§17.2.2)."""
        return 0.0 if reliable else 64 * self.t1

    def timer_k(self, reliable: bool) -> float:
        """Wait time for response retransmits: T4 unreliable, 0 reliable (§17.1.2.2)."""
        return 0.0 if reliable else self.t4

    @property
    def timer_l(self) -> float:
        """Wait time in the INVITE server's Accepted state: 64*T1 (RFC 6026 §8.7)."""
        return 64 * self.t1

    @property
    def timer_m(self) -> float:
        """Wait time in the INVITE client's Accepted state: 64*T1 (RFC 6026 §8.4)."""
        return 64 * self.t1
