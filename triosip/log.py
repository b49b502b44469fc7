"""Logging that an attacker cannot turn into a flood or a terminal exploit, and where it goes.

Two tools for the lines that a remote peer can cause at will:

* `shown` makes untrusted text safe to put in a line: printable ASCII only (the rest
  escaped as ``\\xNN``), and cut to a bound, saying how much was left out.
* `LogThrottle` lets through the first few lines per key (a source address, say) in each
  window of time and counts the rest; when the window ends, one summary line says how many
  were not logged and why: "1532 more bad messages from 192.0.2.7 in the last 10 s; reasons:
  Bad Via ×1200, Missing Call-ID ×332".

And the operator's side: `configure_logging` sends the lines to stderr, syslog or a file,
as text or as one JSON object per line (`JsonFormatter`, whose ``call_id`` and ``branch``
fields come from the `LogPrefix` a line about a transaction starts with); and
`describe_failure` puts a route's exception in one line that names the route, its file
and line.
"""

from __future__ import annotations

import datetime
import json
import logging
import logging.handlers
import math
import os
import re
import sys
import sysconfig
import traceback
from collections import Counter
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    import socket
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


# -- where lines go, and in which form ------------------------------------------------------

LOG_TARGETS = ("stderr", "syslog")
"""``--log-target`` values besides a file's path."""
LOG_FORMATS = ("text", "json")
"""``--log-format`` values."""
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Syslog stamps the time and host itself; the program's name goes first (RFC 3164 TAG).
SYSLOG_FORMAT = "triosip[%(process)d]: %(levelname)s %(name)s: %(message)s"
SYSLOG_SOCKET = "/dev/log"


class LogPrefix:
    """The Call-ID and branch that start a line about one transaction (``"c1
    z9hG4bK-1"`` once formatted with ``%s``), kept apart for the JSON form.

    Both come from the wire: each is cut to 64 characters and escaped (`shown`), but only
    when a line is written: building one costs a small object, not two escapes, so that
    lines the level leaves out cost next to nothing.
    """

    __slots__ = ("_branch", "_call_id", "_text")

    def __init__(self, call_id: str, branch: str) -> None:
        self._call_id = call_id
        self._branch = branch
        self._text: str | None = None

    @property
    def call_id(self) -> str:
        """The Call-ID, as shown."""
        return shown(self._call_id, 64)

    @property
    def branch(self) -> str:
        """The branch, as shown."""
        return shown(self._branch, 64)

    def __str__(self) -> str:
        text = self._text
        if text is None:
            text = self._text = f"{self.call_id} {self.branch}"
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, and
    ``call_id`` and ``branch`` when the line is about a transaction (a `LogPrefix`
    among its arguments, or ``extra={"call_id": ..., "branch": ...}``); ``exception``
    holds a traceback, escaped into the one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        call_id = getattr(record, "call_id", None)
        branch = getattr(record, "branch", None)
        if call_id is None and isinstance(record.args, tuple):
            for arg in record.args:
                if isinstance(arg, LogPrefix):
                    call_id, branch = arg.call_id, arg.branch
                    break
        if call_id is not None:
            line["call_id"] = call_id
            line["branch"] = branch
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class LogTargetError(Exception):
    """The log cannot go where ``--log-target`` says (one line that says why)."""


def log_handler(target: str, form: str) -> logging.Handler:
    """The handler for ``--log-target`` and ``--log-format``.

    Args:
        target: ``stderr``, ``syslog`` (the local syslog daemon, through /dev/log, facility
            daemon), or the path of a file to append to (reopened when logrotate moves it).
        form: ``text`` or ``json``.

    Raises:
        LogTargetError: /dev/log is missing, or the file cannot be opened.
    """
    handler: logging.Handler
    if target == "stderr":
        handler = logging.StreamHandler(sys.stderr)
        text = TEXT_FORMAT
    elif target == "syslog":
        syslog = logging.handlers.SysLogHandler(
            SYSLOG_SOCKET, facility=logging.handlers.SysLogHandler.LOG_DAEMON
        )
        sock: socket.socket | None = getattr(syslog, "socket", None)
        if sock is None or sock.fileno() < 0:  # the handler swallows the error
            syslog.close()
            raise LogTargetError(
                f"--log-target syslog: cannot reach the syslog daemon at {SYSLOG_SOCKET} "
                "(is one running?)"
            )
        handler = syslog
        text = SYSLOG_FORMAT
    else:
        try:
            handler = logging.handlers.WatchedFileHandler(target, encoding="utf-8")
        except OSError as exc:
            raise LogTargetError(f"--log-target {target}: {exc.strerror or exc}") from None
        text = TEXT_FORMAT
    handler.setFormatter(JsonFormatter() if form == "json" else logging.Formatter(text))
    return handler


def configure_logging(level: str, target: str = "stderr", form: str = "text") -> None:
    """Send the log of the whole process to one handler (`log_handler`) at `level`.

    Raises:
        LogTargetError: see `log_handler`.
    """
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(log_handler(target, form))
    root.setLevel(level.upper())


# -- a route's exception, in one line ---------------------------------------------------------

_OURS = os.path.dirname(os.path.abspath(__file__)) + os.sep
_LIBRARIES = tuple(
    {os.path.abspath(p) + os.sep for k, p in sysconfig.get_paths().items() if "lib" in k}
)


def first_leaf(exc: BaseException) -> BaseException:
    """What a route raised, out of the exception groups of the nurseries it ran in (its
    ops' nursery, a task of it): the first leaf."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def describe_failure(exc: BaseException) -> str:
    """An exception a route raised, in one line: the route, its file and line, and the
    exception: ``route main raised ZeroDivisionError: division by zero at
    /etc/triosip/routes.py:14``.

    The route is the first function of the traceback outside triosip and the libraries
    (the route triosip called); the line, the last one there (the line that raised, or
    that called into triosip or a library that did). Without such a frame (routes
    installed as a package), the frames outside triosip.
    """
    exc = first_leaf(exc)
    frames = traceback.extract_tb(exc.__traceback__)
    # Routes installed as a package live among the libraries: then anything not ours.
    user = [f for f in frames if not f.filename.startswith((_OURS, *_LIBRARIES))] or [
        f for f in frames if not f.filename.startswith(_OURS)
    ]
    what = shown(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, 300)
    if not user:
        return f"raised {what}"
    return f"route {user[0].name} raised {what} at {user[-1].filename}:{user[-1].lineno}"
