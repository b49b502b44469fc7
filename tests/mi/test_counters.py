"""``/stats`` and ``/metrics`` after real calls: the counters equal what sipp did.

sipp's built-in uac calls the built-in uas through the proxy (``-rsa``): per call it sends
INVITE, ACK and BYE, and the uas answers 180 and 200 to the INVITE and 200 to the BYE.
Every message each sipp sends reaches the proxy, retransmissions included, so the
proxy's "received" counters are sipp's "sent" ones.
"""

from __future__ import annotations

import re
import time

import trio

from tests.support.mi import run_proxy
from triosip.script.api import RequestContext, Routes, sleep
from triosip.testing.sipp import open_uas, run_uac

CALLS = 20


def relaying_routes() -> Routes:
    routes = Routes()

    @routes.request
    async def main(req: RequestContext) -> None:
        if req.method == "INVITE":
            await sleep(0.01)  # an op per call, for the op counters
        await req.relay(req.params["downstream"])

    return routes


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus text exposition."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = "^" + re.escape(name + (f"{{{wanted}}}" if wanted else "")) + r" (\S+)$"
    [value] = re.findall(pattern, text, flags=re.MULTILINE)
    return float(value)


async def test_counters_equal_what_sipp_sent_and_received() -> None:
    routes = relaying_routes()
    with trio.fail_after(30):
        # FAST_TIMERS (T1 10 ms) make the proxy retransmit an INVITE already answered when
        # it lags; sipp's uas would abort the call on that copy (test_reload.py says more).
        async with open_uas(stop_grace=0, abort_unexpected=False) as uas:
            routes.params = {"downstream": f"udp:{uas.address}"}
            async with run_proxy(routes) as running:
                uac = await run_uac(
                    uas.address,
                    remote_sending_address=running.sip.host_port,
                    max_calls=CALLS,
                    rate=50,
                    global_timeout=15,
                )
                # The last BYE's transaction ends with its Timer J/K; the counters are
                # final once no transaction runs.
                await running.wait_for_tasks(lambda d: d["transactions"] == [])
                stats = await running.stats()
                metrics = await running.mi.get("/metrics")

    assert (uac.calls_successful, uac.calls_failed) == (CALLS, 0), uac.error_log
    proxy = stats["proxy"]
    # What the uac sent, the proxy received: CALLS x (INVITE, ACK, BYE), plus sipp's own
    # retransmissions of them.
    assert set(proxy["requests_received"]) == {"INVITE", "ACK", "BYE"}
    assert sum(proxy["requests_received"].values()) == 3 * CALLS + uac.retransmissions
    assert proxy["requests_forwarded"] == {"INVITE": CALLS, "ACK": CALLS, "BYE": CALLS}
    # What the uas sent, the proxy received: 180 and 200 per INVITE, 200 per BYE.
    assert sum(proxy["replies_received"].values()) == 3 * CALLS + uas.result.retransmissions
    assert proxy["replies_received"]["1xx"] == CALLS
    assert proxy["replies_forwarded"] == {"1xx": CALLS, "2xx": 2 * CALLS}
    # The 100 Trying of each INVITE, and nothing else.
    assert proxy["replies_generated"] == {"1xx": CALLS}
    assert proxy["replies_sent"] == {"100": CALLS, "180": CALLS, "200": 2 * CALLS}
    assert proxy["parse_errors"] == {}
    assert (proxy["transactions_total"], proxy["transactions_active"]) == (2 * CALLS, 0)
    layer = stats["transactions"]
    assert (layer["ist_total"], layer["nist_total"]) == (CALLS, CALLS)
    assert (layer["ict_total"], layer["nict_total"]) == (CALLS, CALLS)
    assert (layer["server_active"], layer["client_active"]) == (0, 0)
    assert layer["strays"] <= uas.result.retransmissions  # the ACKs were relayed, no strays
    # Every INVITE waited for one sleep op.
    sleeps = stats["ops"]["sleep"]
    assert (sleeps["started"], sleeps["done"], sleeps["running"]) == (CALLS, CALLS, 0)
    assert sleeps["latency"]["buckets"]["+Inf"] == CALLS
    assert sleeps["latency"]["sum"] >= 0.01 * CALLS

    # /metrics says the same, in Prometheus' words.
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = metrics.text
    for method, count in proxy["requests_received"].items():
        assert metric(text, "triosip_requests_received_total", method=method) == count
    assert metric(text, "triosip_replies_forwarded_total", **{"class": "2xx"}) == 2 * CALLS
    assert metric(text, "triosip_transactions_total") == 2 * CALLS
    assert metric(text, "triosip_replies_sent_total", code="200") == 2 * CALLS
    assert metric(text, "triosip_op_duration_seconds_count", kind="sleep") == CALLS
    assert metric(text, "triosip_op_duration_seconds_bucket", kind="sleep", le="+Inf") == CALLS
    assert metric(text, "triosip_ops_ended_total", kind="sleep", outcome="done") == CALLS


async def test_metrics_show_the_process() -> None:
    # As prometheus-client's process collector: CPU, memory, files, start time.
    with trio.fail_after(10):
        async with run_proxy(relaying_routes()) as running:
            text = (await running.mi.get("/metrics")).text
            stats = await running.stats()
    assert 0 < metric(text, "process_cpu_seconds_total") < 3600
    assert metric(text, "process_resident_memory_bytes") > 10_000_000  # a Python with trio
    # This process's files: at least the SIP socket, the MI's listener and its connection.
    assert 3 <= metric(text, "process_open_fds") <= metric(text, "process_max_fds")
    started = metric(text, "process_start_time_seconds")
    assert time.time() - 3600 < started <= time.time()
    assert stats["process"]["max_fds"] == metric(text, "process_max_fds")
