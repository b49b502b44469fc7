"""Logging that an attacker cannot turn into a flood or a terminal exploit.

Two tools for the lines that a remote peer can cause at will:

* `shown` makes untrusted text safe to put in a line: printable ASCII only (the rest
  escaped as ``\\xNN``), and cut to a bound, saying how much was left out.
* `LogThrottle` lets through the first few lines per key (a source address, say) in each
  window of time and counts the rest; when the window ends, one summary line says how many
  were not logged and why: "1532 more bad messages from 192.0.2.7 in the last 10 s; reasons:
  Bad Via ×1200, Missing Call-ID ×332".
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable

# What a log line may quote of a message: enough to recognise it, never a 60 KB datagram.
SHOWN_LIMIT = 120

_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def shown(text: str | bytes, limit: int = SHOWN_LIMIT) -> str:
    """`text` as a log line may quote it: printable ASCII, at most `limit` characters of
    the original, with how many more there were.

    Args:
        text: untrusted text or bytes (bytes are read as Latin-1, one character a byte).
        limit: how many characters of `text` to keep.

    Returns:
        The escaped, cut text, e.g. ``'Via: \\x00\\xff… (+59822 more)'``.
    """
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    cut = text[:limit]
    escaped = _UNPRINTABLE.sub(lambda match: f"\\x{ord(match.group()) & 0xFF:02x}", cut)
    if len(text) > limit:
        escaped += f"… (+{len(text) - limit} more)"
    return escaped


class _Window:
    __slots__ = ("logged", "reasons", "started", "suppressed")

    def __init__(self, started: float) -> None:
        self.started = started
        self.logged = 0
        self.suppressed = 0
        self.reasons: Counter[str] = Counter()


class LogThrottle:
    """Lines of one kind (`what`), at most `burst` per key in each `window` seconds.

    The caller asks `allow(key, reason)` before logging; past the burst the event is only
    counted, and a summary line per key goes to `logger` when its window ends (at the next
    event of that key, or from `serve`, whichever comes first).

    Memory is bounded: at most `max_keys` keys (sources) are told apart in a window; the
    rest are counted together under ``"other sources"``, and at most `max_reasons`
    distinct reasons per key.

    Args:
        logger: where the summaries go (at WARNING: a flood is worth knowing about).
        what: the plural noun of a summary line ("bad messages").
        burst: lines logged one by one per key and window.
        window: the window, in seconds.
        max_keys: keys told apart.
        max_reasons: reasons told apart per key.
        clock: the time; trio's by default, so tests can run on a mock clock.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        what: str,
        burst: int = 5,
        window: float = 10.0,
        max_keys: int = 256,
        max_reasons: int = 8,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._logger = logger
        self._what = what
        self._burst = burst
        self._window = window
        self._max_keys = max_keys
        self._max_reasons = max_reasons
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def allow(self, key: str, reason: str) -> bool:
        """Whether to log this event in full; if not, it is counted for the summary.

        Args:
            key: what the budget is per, e.g. the source host.
            reason: why the event happened, for the summary.
        """
        now = self._clock()
        windows = self._windows
        if key not in windows and len(windows) >= self._max_keys:
            key = "other sources"
        window = windows.get(key)
        if window is not None and now - window.started >= self._window:
            self._summarise(key, window)
            window = None
        if window is None:
            window = windows[key] = _Window(now)
        if window.logged < self._burst:
            window.logged += 1
            return True
        window.suppressed += 1
        reasons = window.reasons
        if reason in reasons or len(reasons) < self._max_reasons:
            reasons[reason] += 1
        else:
            reasons["other"] += 1
        return False

    def flush(self) -> None:
        """Summarise and forget every window that has ended."""
        now = self._clock()
        for key, window in list(self._windows.items()):
            if now - window.started >= self._window:
                self._summarise(key, window)
                del self._windows[key]

    def next_end(self) -> float:
        """When the oldest window ends (``inf`` when there is none)."""
        return min((w.started + self._window for w in self._windows.values()), default=math.inf)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Summarise each window when it ends, also when no event comes after it.

        Never returns; owns nothing but its own wake-ups.
        """
        task_status.started()
        while True:
            # Woken at least once a window: an event may open one while this sleeps.
            await trio.sleep_until(min(self.next_end(), self._clock() + self._window))
            self.flush()

    def _summarise(self, key: str, window: _Window) -> None:
        if not window.suppressed:
            return
        reasons = ", ".join(f"{reason} ×{n}" for reason, n in window.reasons.most_common())
        self._logger.warning(
            "%d more %s from %s in the last %g s; reasons: %s",
            window.suppressed,
            self._what,
            key,
            self._window,
            reasons,
        )
