"""The counters of every layer as one JSON document, and as Prometheus' text format.

`statistics_document` takes the frozen snapshots the layers' ``statistics()`` return
and makes the ``GET /stats`` document; `prometheus_text` makes the
``GET /metrics`` text from that document, so the two can never disagree. Both are pure.

Metric names follow prometheus-client's conventions
(https://prometheus.io/docs/practices/naming/): a ``triosip_`` prefix, counters ending in
``_total``, units in the name (``_seconds``, ``_bytes``), what varies in labels
(``triosip_requests_received_total{method="INVITE"}``), and the op latency as a histogram
(``_bucket`` with cumulative ``le`` bounds, ``_sum``, ``_count``).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from triosip.ops import LATENCY_BUCKETS

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from triosip.mi._process import ProcessStatistics
    from triosip.ops import DatabaseStatistics, OpKindStatistics, RestStatistics
    from triosip.proxy import ProxyStatistics
    from triosip.transaction import TransactionStatistics
    from triosip.transport import TransportStatistics

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The content type of the Prometheus text exposition format, version 0.0.4."""

OUTCOMES = ("done", "failed", "timed_out", "cancelled")
"""How an op ends (`triosip.ops.Op.run`)."""

# The transport's gauges; every other transport field is a counter.
_TRANSPORT_GAUGES = frozenset({"tcp_connections_open"})


def statistics_document(
    *,
    version: str,
    uptime: float,
    proxy: ProxyStatistics,
    transactions: TransactionStatistics,
    transport: TransportStatistics,
    ops: Mapping[str, OpKindStatistics],
    ops_running: Mapping[str, int],
    db: DatabaseStatistics | None = None,
    rest: RestStatistics | None = None,
    process: ProcessStatistics | None = None,
) -> dict[str, Any]:
    """The ``GET /stats`` document, from the layers' snapshots.

    Args:
        version: triosip's version.
        uptime: seconds since the proxy started.
        proxy: `Proxy.statistics()`: messages by method and class, parse errors,
            proxied transactions.
        transactions: the transaction layer's counters.
        transport: the transport layer's counters.
        ops: `OpAccounting.kinds`: each kind's started ops, outcomes and latencies.
        ops_running: how many ops of each kind run now.
        db: the database's pool and counters, if the proxy has one.
        rest: the REST client's counters, if the proxy has one.
        process: the process's CPU time, memory, open files and start time.

    Returns:
        A JSON-able dict; ``ops[kind]["latency"]["buckets"]`` is cumulative, keyed by
        the upper bound in seconds (``"+Inf"`` last), as in Prometheus.
    """
    kinds = sorted(set(ops) | set(ops_running))
    return {
        "version": version,
        "uptime": round(uptime, 3),
        "proxy": asdict(proxy),
        "transactions": asdict(transactions),
        "transport": asdict(transport),
        "ops": {kind: _op_kind(ops.get(kind), ops_running.get(kind, 0)) for kind in kinds},
        "db": asdict(db) if db is not None else None,
        "rest": asdict(rest) if rest is not None else None,
        "process": asdict(process) if process is not None else None,
    }


def _op_kind(statistics: OpKindStatistics | None, running: int) -> dict[str, Any]:
    if statistics is None:
        return {
            "started": 0,
            "running": running,
            **dict.fromkeys(OUTCOMES, 0),
            "latency": {"buckets": _cumulative([0] * (len(LATENCY_BUCKETS) + 1)), "sum": 0.0},
        }
    return {
        "started": statistics.started,
        "running": running,
        **{outcome: statistics.outcomes.get(outcome, 0) for outcome in OUTCOMES},
        "latency": {
            "buckets": _cumulative(statistics.latency_buckets),
            "sum": round(statistics.latency_sum, 6),
        },
    }


def _cumulative(counts: list[int]) -> dict[str, int]:
    buckets: dict[str, int] = {}
    total = 0
    bounds = [*(_number(bound) for bound in LATENCY_BUCKETS), "+Inf"]
    for bound, count in zip(bounds, counts, strict=False):
        total += count
        buckets[bound] = total
    return buckets


# -- Prometheus ---------------------------------------------------------------------------


class _Exposition:
    """Lines of the text format, one metric family at a time (HELP, TYPE, samples)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[Mapping[str, str], float]],
        *,
        suffix: str = "",
    ) -> None:
        self.lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.lines.append(f"{name}{suffix}{_labels(labels)} {_number(value)}")

    def single(self, name: str, kind: str, help_text: str, value: float) -> None:
        self.family(name, kind, help_text, [({}, value)])

    def by(
        self, name: str, kind: str, help_text: str, label: str, values: Mapping[str, int]
    ) -> None:
        self.family(name, kind, help_text, [({label: k}, v) for k, v in sorted(values.items())])

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def prometheus_text(document: Mapping[str, Any]) -> str:
    """The ``GET /metrics`` text (Prometheus exposition format 0.0.4) of a
    `statistics_document`.

    Returns:
        The text, ending with a newline.
    """
    out = _Exposition()
    out.family(
        "triosip_build_info",
        "gauge",
        "triosip's version, as a label; always 1.",
        [({"version": str(document["version"])}, 1)],
    )
    out.single(
        "triosip_uptime_seconds", "gauge", "Seconds since the proxy started.", document["uptime"]
    )

    proxy = document["proxy"]
    out.by(
        "triosip_requests_received_total",
        "counter",
        "SIP requests received, retransmissions included.",
        "method",
        proxy["requests_received"],
    )
    out.by(
        "triosip_replies_received_total",
        "counter",
        "SIP responses received, by status class.",
        "class",
        proxy["replies_received"],
    )
    out.by(
        "triosip_requests_forwarded_total",
        "counter",
        "SIP requests sent on a branch or statelessly.",
        "method",
        proxy["requests_forwarded"],
    )
    out.by(
        "triosip_replies_forwarded_total",
        "counter",
        "SIP responses relayed upstream from a branch, by status class.",
        "class",
        proxy["replies_forwarded"],
    )
    out.by(
        "triosip_replies_generated_total",
        "counter",
        "SIP responses the proxy or its routes made, by status class.",
        "class",
        proxy["replies_generated"],
    )
    out.family(
        "triosip_replies_sent_total",
        "counter",
        "SIP responses sent upstream, generated or relayed, by status code.",
        [({"code": str(code)}, n) for code, n in sorted(proxy.get("replies_sent", {}).items())],
    )
    out.by(
        "triosip_parse_errors_total",
        "counter",
        "Messages that failed to parse, by reason.",
        "reason",
        proxy["parse_errors"],
    )
    out.single(
        "triosip_message_errors_total",
        "counter",
        "Messages dropped because their handling raised (a bug worth reporting).",
        proxy["message_errors"],
    )
    out.single(
        "triosip_transactions_active",
        "gauge",
        "Proxied transactions running now.",
        proxy["transactions_active"],
    )
    out.single(
        "triosip_transactions_total",
        "counter",
        "Proxied transactions started.",
        proxy["transactions_total"],
    )

    layer = document["transactions"]
    out.family(
        "triosip_server_transactions_active",
        "gauge",
        "Server transactions whose task runs (RFC 3261 §17.2).",
        [({}, layer["server_active"])],
    )
    out.family(
        "triosip_server_transactions_held",
        "gauge",
        "Server transactions answered and kept, without a task, for their timers.",
        [({}, layer["server_held"])],
    )
    out.family(
        "triosip_server_transactions_total",
        "counter",
        "Server transactions created, by machine.",
        [({"machine": "IST"}, layer["ist_total"]), ({"machine": "NIST"}, layer["nist_total"])],
    )
    out.family(
        "triosip_client_transactions_active",
        "gauge",
        "Client transactions running (RFC 3261 §17.1).",
        [({}, layer["client_active"])],
    )
    out.family(
        "triosip_client_transactions_total",
        "counter",
        "Client transactions started, by machine.",
        [({"machine": "ICT"}, layer["ict_total"]), ({"machine": "NICT"}, layer["nict_total"])],
    )
    for field, help_text in (
        ("retransmissions_sent", "Requests and responses sent again (timers A, E, G)."),
        ("retransmissions_absorbed", "Retransmitted requests, ACKs and finals absorbed."),
        ("timeouts", "Transaction timers B, F and H that fired."),
        ("strays", "Messages that matched no transaction and made none."),
        ("handler_errors", "Exceptions from routes or tasks of a transaction."),
        ("dropped", "Requests for which nothing made a final response."),
        ("rejected_overload", "New requests answered 503: max-transactions were held."),
        ("rate_limited", "New requests dropped by pike: their source was over its rate."),
    ):
        out.single(f"triosip_transaction_{field}_total", "counter", help_text, layer[field])

    for field, value in document["transport"].items():
        if field in _TRANSPORT_GAUGES:
            out.single(f"triosip_transport_{field}", "gauge", _transport_help(field), value)
        else:
            out.single(
                f"triosip_transport_{_unit_last(field)}_total",
                "counter",
                _transport_help(field),
                value,
            )

    ops = document["ops"]
    out.by(
        "triosip_ops_started_total",
        "counter",
        "Async ops started, by kind.",
        "kind",
        {kind: o["started"] for kind, o in ops.items()},
    )
    out.by(
        "triosip_ops_running",
        "gauge",
        "Async ops running now, by kind.",
        "kind",
        {kind: o["running"] for kind, o in ops.items()},
    )
    out.family(
        "triosip_ops_ended_total",
        "counter",
        "Async ops ended, by kind and outcome (done, failed, timed_out, cancelled).",
        [
            ({"kind": kind, "outcome": outcome}, o[outcome])
            for kind, o in sorted(ops.items())
            for outcome in OUTCOMES
        ],
    )
    histogram = "triosip_op_duration_seconds"
    out.lines.append(f"# HELP {histogram} How long async ops took, by kind.")
    out.lines.append(f"# TYPE {histogram} histogram")
    for kind, o in sorted(ops.items()):
        buckets = o["latency"]["buckets"]
        for bound, count in buckets.items():
            out.lines.append(f"{histogram}_bucket{_labels({'kind': kind, 'le': bound})} {count}")
        out.lines.append(f"{histogram}_sum{_labels({'kind': kind})} {_number(o['latency']['sum'])}")
        out.lines.append(f"{histogram}_count{_labels({'kind': kind})} {buckets['+Inf']}")

    db = document.get("db")
    if db is not None:
        for field in ("readers_busy", "readers_idle", "readers_waiting", "writers_waiting"):
            out.single(f"triosip_db_{field}", "gauge", f"Database pool: {field}.", db[field])
        out.single(
            "triosip_db_writer_busy",
            "gauge",
            "Whether the writer is in use.",
            int(db["writer_busy"]),
        )
        out.family(
            "triosip_db_queries_total",
            "counter",
            "Database queries and writes, by outcome.",
            [
                ({"outcome": outcome}, db[f"queries_{outcome}"])
                for outcome in ("done", "failed", "cancelled")
            ],
        )
    rest = document.get("rest")
    if rest is not None:
        out.single(
            "triosip_rest_requests_in_flight",
            "gauge",
            "REST requests started and not finished.",
            rest["requests_in_flight"],
        )
        out.family(
            "triosip_rest_requests_total",
            "counter",
            "REST requests, by outcome.",
            [
                ({"outcome": outcome}, rest[f"requests_{outcome}"])
                for outcome in ("done", "failed", "timed_out", "cancelled")
            ],
        )
        out.family(
            "triosip_rest_connections",
            "gauge",
            "REST connections open now, by state.",
            [({"state": state}, rest[f"connections_{state}"]) for state in ("idle", "busy")],
        )
        out.family(
            "triosip_rest_connections_total",
            "counter",
            "REST connections, by event (closed_by_cancel: a cancelled request's).",
            [
                ({"event": event}, rest[f"connections_{event}"])
                for event in ("opened", "closed", "closed_by_cancel")
            ],
        )
    process = document.get("process")
    if process is not None:
        _process_metrics(out, process)
    return out.text()


# prometheus-client's process collector's names, without the triosip_ prefix, so that
# the dashboards made for any process read them.
_PROCESS_METRICS = (
    ("process_cpu_seconds_total", "counter", "cpu_seconds", "User and system CPU time spent."),
    (
        "process_resident_memory_bytes",
        "gauge",
        "resident_memory_bytes",
        "Resident memory size in bytes.",
    ),
    ("process_open_fds", "gauge", "open_fds", "Number of open file descriptors."),
    ("process_max_fds", "gauge", "max_fds", "Maximum number of open file descriptors."),
    (
        "process_start_time_seconds",
        "gauge",
        "start_time_seconds",
        "Start time of the process since the Unix epoch, in seconds.",
    ),
)


def _process_metrics(out: _Exposition, process: Mapping[str, Any]) -> None:
    for name, kind, field, help_text in _PROCESS_METRICS:
        value = process.get(field)
        if value is not None:
            out.single(name, kind, help_text, value)


def _transport_help(field: str) -> str:
    return f"Transport: {field.replace('_', ' ')}."


def _unit_last(field: str) -> str:
    # Prometheus puts the unit last: udp_bytes_received -> udp_received_bytes.
    words = field.split("_")
    if "bytes" in words:
        words.remove("bytes")
        words.append("bytes")
    return "_".join(words)


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inside = ",".join(f'{name}="{_escape_label(value)}"' for name, value in labels.items())
    return "{" + inside + "}"


def _escape_label(value: str) -> str:
    # The text format escapes backslash, double quote and line feed in label values.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))
