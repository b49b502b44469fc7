"""The statistics document and its Prometheus text, from hand-made snapshots."""

from __future__ import annotations

import re
from typing import Any

from triosip.mi import prometheus_text, statistics_document
from triosip.ops import LATENCY_BUCKETS, OpKindStatistics
from triosip.proxy import ProxyStatistics
from triosip.transaction import TransactionStatistics
from triosip.transport import TransportStatistics

PROXY = ProxyStatistics(
    requests_received={"INVITE": 12, "ACK": 10, "BYE": 10},
    replies_received={"1xx": 10, "2xx": 20},
    requests_forwarded={"INVITE": 10, "ACK": 10, "BYE": 10},
    replies_forwarded={"1xx": 10, "2xx": 20},
    replies_generated={"4xx": 2},
    parse_errors={'Bad "Via"\\n': 1},
    transactions_active=1,
    transactions_total=22,
    message_errors=1,
)
LAYER = TransactionStatistics(
    server_active=1,
    server_total=22,
    client_active=0,
    client_total=20,
    ist_total=12,
    nist_total=10,
    ict_total=10,
    nict_total=10,
    retransmissions_sent=3,
    retransmissions_absorbed=2,
    timeouts=0,
    strays=10,
    handler_errors=0,
    dropped=0,
)
TRANSPORT = TransportStatistics(udp_datagrams_received=62, udp_bytes_received=30000)


def db_kind() -> OpKindStatistics:
    kind = OpKindStatistics(started=5, latency_sum=0.75)
    kind.outcomes.update(done=3, failed=1, cancelled=1)
    # Not cumulative: 2 ended within 5 ms, 1 within 100 ms, 2 beyond the last bound.
    kind.latency_buckets[0] = 2
    kind.latency_buckets[LATENCY_BUCKETS.index(0.1)] = 1
    kind.latency_buckets[-1] = 2
    return kind


def document() -> dict[str, object]:
    return statistics_document(
        version="0.1.0",
        uptime=12.3456,
        proxy=PROXY,
        transactions=LAYER,
        transport=TRANSPORT,
        ops={"db": db_kind()},
        ops_running={"db": 0, "sleep": 2},
    )


def samples(text: str) -> dict[str, float]:
    """Every sample line of a Prometheus text, by name and labels as written."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def test_the_document_gathers_every_layer() -> None:
    doc: dict[str, Any] = document()  # JSON: the test indexes into it at will
    assert doc["version"] == "0.1.0"
    assert doc["uptime"] == 12.346
    assert doc["proxy"]["requests_received"] == {"INVITE": 12, "ACK": 10, "BYE": 10}
    assert doc["transactions"]["ist_total"] == 12
    assert doc["transport"]["udp_datagrams_received"] == 62
    assert doc["db"] is None
    ops = doc["ops"]
    assert ops["sleep"]["started"] == 0
    assert ops["sleep"]["running"] == 2
    db = ops["db"]
    assert {
        k: db[k] for k in ("started", "running", "done", "failed", "timed_out", "cancelled")
    } == {
        "started": 5,
        "running": 0,
        "done": 3,
        "failed": 1,
        "timed_out": 0,
        "cancelled": 1,
    }
    buckets = db["latency"]["buckets"]
    assert list(buckets) == [*(repr(bound) for bound in LATENCY_BUCKETS), "+Inf"]
    assert (buckets["0.005"], buckets["0.05"], buckets["0.1"], buckets["10.0"]) == (2, 2, 3, 3)
    assert buckets["+Inf"] == 5


def test_prometheus_text_follows_the_conventions() -> None:
    text = prometheus_text(document())
    assert text.endswith("\n")
    values = samples(text)
    assert values['triosip_requests_received_total{method="INVITE"}'] == 12
    assert values['triosip_replies_generated_total{class="4xx"}'] == 2
    assert values["triosip_transactions_active"] == 1
    assert values['triosip_server_transactions_total{machine="IST"}'] == 12
    assert values["triosip_transaction_retransmissions_sent_total"] == 3
    # The unit comes last, and counters end in _total.
    assert values["triosip_transport_udp_received_bytes_total"] == 30000
    assert values["triosip_transport_tcp_connections_open"] == 0
    assert values['triosip_build_info{version="0.1.0"}'] == 1
    # Histograms: cumulative buckets, then _sum and _count.
    assert values['triosip_op_duration_seconds_bucket{kind="db",le="0.005"}'] == 2
    assert values['triosip_op_duration_seconds_bucket{kind="db",le="0.1"}'] == 3
    assert values['triosip_op_duration_seconds_bucket{kind="db",le="+Inf"}'] == 5
    assert values['triosip_op_duration_seconds_sum{kind="db"}'] == 0.75
    assert values['triosip_op_duration_seconds_count{kind="db"}'] == 5
    assert values['triosip_ops_ended_total{kind="db",outcome="failed"}'] == 1
    assert values['triosip_ops_running{kind="sleep"}'] == 2
    # A label value is escaped: backslash, double quote, line feed.
    assert 'triosip_parse_errors_total{reason="Bad \\"Via\\"\\\\n"} 1' in text


def test_every_family_has_help_and_type_once_and_before_its_samples() -> None:
    text = prometheus_text(document())
    typed: dict[str, str] = {}
    helped: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name not in helped
            helped.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name not in typed
            assert name in helped
            typed[name] = kind
        else:
            name = re.split(r"[{ ]", line, maxsplit=1)[0]
            family = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in typed or typed.get(family) == "histogram", line
            assert re.fullmatch(r"[a-z_]+", name), name
            if typed.get(name) == "counter":
                assert name.endswith("_total"), name
    assert typed["triosip_op_duration_seconds"] == "histogram"
