"""The supervisor's one MI: the workers' documents merged (`triosip.workers`)."""

from __future__ import annotations

from triosip.workers import merge_statistics, merge_tasks, worker_metrics


def stats(received: int, active: int, uptime: float) -> dict[str, object]:
    return {
        "version": "1.0",
        "uptime": uptime,
        "proxy": {"requests_received": {"INVITE": received}, "transactions_active": active},
        "transport": {"udp_handed_off": received // 2, "tcp_connections_open": 1},
        "ops": {"sleep": {"latency": {"buckets": {"0.1": 1, "+Inf": received}}}},
        "db": None,
        "process": {"open_fds": 10, "max_fds": 1024, "start_time_seconds": uptime},
    }


def test_statistics_are_summed_key_by_key() -> None:
    merged = merge_statistics([stats(10, 2, 5.0), stats(4, 1, 7.5)])
    assert merged["version"] == "1.0"
    assert merged["uptime"] == 7.5
    assert merged["proxy"] == {"requests_received": {"INVITE": 14}, "transactions_active": 3}
    assert merged["transport"] == {"udp_handed_off": 7, "tcp_connections_open": 2}
    # A histogram stays cumulative when summed bucket by bucket.
    assert merged["ops"]["sleep"]["latency"]["buckets"] == {"0.1": 2, "+Inf": 14}
    assert merged["db"] is None
    assert merged["process"] == {"open_fds": 20, "max_fds": 1024, "start_time_seconds": 5.0}


def entry(name: str, age: float) -> dict[str, object]:
    return {"name": name, "age": age, "children": []}


def tasks(*entries: dict[str, object], methods: dict[str, int]) -> dict[str, object]:
    return {
        "transactions": list(entries),
        "launched": [],
        "summary": {
            "transactions": sum(methods.values()),
            "matched": sum(methods.values()),
            "shown": len(entries),
            "methods": methods,
            "states": {"Proceeding": sum(methods.values())},
            "ops_running": 1,
            "ops": {"sleep": 1},
            "launched": 0,
        },
    }


def test_tasks_are_listed_oldest_first_with_their_worker() -> None:
    merged = merge_tasks(
        {
            0: tasks(entry("a", 1.0), entry("b", 0.2), methods={"INVITE": 2}),
            1: tasks(entry("c", 3.0), methods={"INVITE": 1, "BYE": 4}),
        },
        limit=2,
    )
    assert [(t["name"], t["worker"]) for t in merged["transactions"]] == [("c", 1), ("a", 0)]
    summary = merged["summary"]
    assert (summary["transactions"], summary["matched"], summary["shown"]) == (7, 7, 2)
    assert summary["methods"] == {"BYE": 4, "INVITE": 3}
    assert summary["ops"] == {"sleep": 2}
    assert summary["ops_running"] == 2


def test_a_summary_stays_a_summary() -> None:
    part = {"summary": tasks(methods={"INVITE": 1})["summary"]}
    merged = merge_tasks({0: part, 1: part}, limit=None)
    assert list(merged) == ["summary"]
    assert merged["summary"]["transactions"] == 2


def test_metrics_label_each_worker() -> None:
    text = worker_metrics(
        [
            {"index": 0, "pid": 10, "stats": stats(1, 3, 1.0)},
            {"index": 1, "pid": None, "stats": None},
        ],
        restarts=2,
    )
    assert 'triosip_worker_up{worker="0"} 1' in text
    assert 'triosip_worker_up{worker="1"} 0' in text
    assert 'triosip_worker_transactions_active{worker="0"} 3' in text
    assert "triosip_worker_restarts_total 2" in text
