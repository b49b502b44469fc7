"""Every setting of a running triosip, in one frozen `Config`: its defaults and its checks.

``triosip run`` builds a `Config` from its options, tests build one in code, and
`triosip.app.serve_triosip` runs it. A `Config` that exists is valid: every check is made
here, once, and a mistake raises `ConfigError` whose message names the ``triosip run``
option to fix. The layers keep their own small configs (`TimerConfig`, `LoadLimits`,
`TransportLimits`, `ProxyConfig`, `MIConfig`); `Config` holds the values the command line
sets, with those configs' defaults, and builds them.
"""

from __future__ import annotations

import math
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from triosip.errors import TriosipError
from triosip.log import LOG_FORMATS
from triosip.ops import database_path
from triosip.proxy import ProxyConfig
from triosip.transaction import LoadLimits, TimerConfig
from triosip.transport import Address, TransportLimits, parse_host_port

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from triosip.mi import MIConfig

__all__ = ["DEFAULT_LISTEN", "LOG_LEVELS", "Config", "ConfigError"]

DEFAULT_LISTEN = (Address("udp", "127.0.0.1", 5060), Address("tcp", "127.0.0.1", 5060))
"""UDP and TCP on 127.0.0.1:5060."""

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

_PROXY = ProxyConfig()
_TIMERS = TimerConfig()
_LOAD = LoadLimits()
_TRANSPORT = TransportLimits()


class ConfigError(TriosipError):
    """A setting is out of range: the message says which ``triosip run`` option, and what
    it must be."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The settings of one triosip: what it listens on, runs, and how long it waits.

    Attributes:
        listen: the addresses to listen on (``--listen``); port 0 picks a free one.
        advertise: for some `listen` addresses, the ``HOST[:PORT]`` their Via and
            Record-Route name instead (``--advertise``: behind NAT, or a DNS name).
        aliases: other ``HOST[:PORT]`` names of this proxy (``--alias``), "myself" like
            its listeners; without a port, on every listener's port.
        routes_file: the routes file (``ROUTES``); None for the default routes.
        params: the script parameters (``--define``), read by routes as ``req.params``.
        fr_timeout: tm's fr_timeout: how long to wait for any reply, in seconds.
        fr_inv_timeout: tm's fr_inv_timeout: how long an INVITE may ring, in seconds.
        t1: RFC 3261 T1, the RTT estimate (§17.1.1.1); at most `t2`.
        t2: RFC 3261 T2, the longest retransmission interval (§17.1.2.2).
        t4: RFC 3261 T4, how long a message may stay in the network (§17.1.2.2).
        max_transactions: the most server transactions held at once; new requests beyond
            get 503.
        pike: new transactions per second one source IP may start; None for no limit.
        reply_to_via: whether responses go where the request's Via says rather than back
            to its source (unsafe on the open internet: a reflector).
        db_url: the database routes query (``sqlite:///file.db``,
            ``postgresql://user@host/db``); None for none (``req.db`` then raises).
        db_pool: how many queries may run at once (a connection each).
        rest_connections: the most HTTP connections REST ops keep open at once; None for
            no REST client (``req.rest`` then raises).
        rest_ca_file: a PEM file of CA certificates that https:// REST ops trust as well as
            the system's CA store (a private CA's); None for the system's alone.
        max_launched: the most ``launch()``ed ops running at once.
        grace: on shutdown, how long live transactions may take to end, in seconds.
        mi: where the management interface listens and whom it lets in; None for none.
        log_level: the level of the log, one of `LOG_LEVELS` (in any case).
        log_target: where the log goes: ``stderr``, ``syslog``, or a file's path.
        log_format: ``text``, or ``json`` (one object per line, with ``call_id`` and
            ``branch`` fields).
        freeze_gc: whether to keep long-lived objects out of the garbage collector's
            full collections (`triosip.app.freeze_survivors`), as a production proxy does.

    Raises:
        ConfigError: a setting out of range.
    """

    # SIP
    listen: tuple[Address, ...] = DEFAULT_LISTEN
    advertise: Mapping[Address, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    routes_file: str | Path | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    # Timers
    fr_timeout: float = _PROXY.fr_timeout
    fr_inv_timeout: float = _PROXY.fr_inv_timeout
    t1: float = _TIMERS.t1
    t2: float = _TIMERS.t2
    t4: float = _TIMERS.t4
    # Load and the transport's policy
    max_transactions: int = _LOAD.max_transactions
    pike: float | None = _LOAD.pike_rate
    reply_to_via: bool = _TRANSPORT.reply_to_via
    # What routes reach
    db_url: str | None = None
    db_pool: int = 4
    rest_connections: int | None = 100
    rest_ca_file: str | Path | None = None
    max_launched: int = 1000
    # The process
    grace: float = 10.0
    mi: MIConfig | None = None
    log_level: str = "INFO"
    log_target: str = "stderr"
    log_format: str = "text"
    freeze_gc: bool = True

    def __post_init__(self) -> None:
        if not self.listen:
            raise ConfigError("--listen: give at least one address to listen on")
        for address, name in self.advertise.items():
            if address not in self.listen:
                raise ConfigError(f"--advertise {name}: {address} is not a --listen address")
        self.advertised_names  # noqa: B018 (each parses, or raises ConfigError)
        self.alias_names  # noqa: B018
        for option, seconds in (
            ("--fr-timeout", self.fr_timeout),
            ("--fr-inv-timeout", self.fr_inv_timeout),
            ("--t1", self.t1),
            ("--t2", self.t2),
            ("--t4", self.t4),
        ):
            if not (seconds > 0 and math.isfinite(seconds)):
                raise ConfigError(f"{option} must be a number of seconds > 0, not {seconds:g}")
        if self.t1 > self.t2:
            # RFC 3261 §17.1.1.2: retransmissions double from T1 up to T2.
            raise ConfigError(f"--t1 must be at most --t2 ({self.t2:g}), not {self.t1:g}")
        for option, count in (
            ("--rest-connections", self.rest_connections),
            ("--db-pool", self.db_pool),
            ("--max-launched", self.max_launched),
            ("--max-transactions", self.max_transactions),
        ):
            if count is not None and count < 1:
                raise ConfigError(f"{option} must be at least 1, not {count}")
        if self.pike is not None and not (self.pike > 0 and math.isfinite(self.pike)):
            raise ConfigError(
                f"--pike must be a number of requests per second > 0, not {self.pike:g}"
            )
        if not (self.grace >= 0 and math.isfinite(self.grace)):
            # This used to be taken, and SIGTERM then ended the proxy with a traceback.
            raise ConfigError(f"--grace must be a number of seconds >= 0, not {self.grace:g}")
        if self.rest_ca_file is not None:
            try:
                ssl.create_default_context(cafile=self.rest_ca_file)
            except OSError as exc:  # ssl.SSLError too: no certificate in the file
                raise ConfigError(f"--rest-ca-file {self.rest_ca_file}: {exc}") from None
        if self.db_url is not None:
            try:
                database_path(self.db_url)
            except ValueError as exc:
                raise ConfigError(f"--db: {exc}") from None
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(
                f"--log-format must be one of {', '.join(LOG_FORMATS)}, not {self.log_format}"
            )
        if not self.log_target:
            raise ConfigError("--log-target: give stderr, syslog or a file's path")
        if self.log_level.upper() not in LOG_LEVELS:
            raise ConfigError(
                f"--log-level must be one of {', '.join(LOG_LEVELS)}, not {self.log_level}"
            )

    @property
    def advertised_names(self) -> dict[Address, tuple[str, int | None]]:
        """`advertise`, parsed: host and port (None: the listener's) by listen address."""
        return {address: _host_port("--advertise", n) for address, n in self.advertise.items()}

    @property
    def alias_names(self) -> tuple[tuple[str, int | None], ...]:
        """`aliases`, parsed: host and port (None: every listener's)."""
        return tuple(_host_port("--alias", name) for name in self.aliases)

    @property
    def proxy(self) -> ProxyConfig:
        """The proxy's fr timers."""
        return ProxyConfig(fr_timeout=self.fr_timeout, fr_inv_timeout=self.fr_inv_timeout)

    @property
    def timers(self) -> TimerConfig:
        """T1, T2, T4 for the transaction layer."""
        return TimerConfig(t1=self.t1, t2=self.t2, t4=self.t4)

    @property
    def load(self) -> LoadLimits:
        """The transaction layer's cap and pike."""
        return LoadLimits(max_transactions=self.max_transactions, pike_rate=self.pike)

    @property
    def transport(self) -> TransportLimits:
        """The transport layer's limits and response policy."""
        return TransportLimits(reply_to_via=self.reply_to_via)


def _host_port(option: str, text: str) -> tuple[str, int | None]:
    try:
        return parse_host_port(text)
    except ValueError as exc:
        raise ConfigError(f"{option} {exc}") from None
