"""What ``triosip tasks`` and ``triosip stats`` draw, from hand-made documents."""

from __future__ import annotations

import re

from rich.console import Console

from tests.support.mi_samples import NOW, invite
from triosip.mi import (
    OpSample,
    TaskQuery,
    TaskSample,
    render_stats,
    render_tasks,
    statistics_document,
    task_tree,
)
from triosip.ops import OpKindStatistics
from triosip.proxy import ProxyStatistics
from triosip.transaction import TransactionStatistics
from triosip.transport import TransportStatistics

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def draw(renderable: object, *, colour: bool = False) -> str:
    console = Console(
        width=100, record=True, force_terminal=colour, color_system="standard" if colour else None
    )
    console.print(renderable)
    return console.export_text(styles=colour)


def test_the_tree_shows_each_transaction_and_its_tasks() -> None:
    text = draw(render_tasks(task_tree([invite()], [], now=NOW)))
    lines = text.splitlines()
    assert lines[0] == "triosip tasks  1 of 1 transactions · 1 ops running · 0 launched"
    assert lines[1] == "└── Proceeding  IST INVITE z9hG4bK-up  age 5.00 s  sent 180"
    assert lines[2] == "    INVITE sip:bob@example.org  Call-ID call-1@example.org"
    assert lines[3] == (
        "    next: op timeout in 1.00 s: db op times out: the resume route gets OpTimeout"
    )
    assert lines[4] == (
        "    ├── branch udp:10.0.0.2:5060  Proceeding 180  age 4.00 s  fr_inv_timeout in 1 min 50 s"
    )
    assert lines[5] == "    │   z9hG4bK-down.1  retransmissions 2"
    assert lines[6] == "    └── op db  age 2.00 s  timeout 3.00 s  (1.00 s left)"
    assert lines[7] == "        SELECT setid FROM subscribers WHERE username=?"


def test_a_limited_tree_says_how_many_more_and_counts_them_all() -> None:
    transactions = [invite(name=f"IST INVITE z9hG4bK-{n}", created_at=990.0 + n) for n in range(3)]
    text = draw(render_tasks(task_tree(transactions, [], now=NOW, query=TaskQuery(limit=1))))
    lines = text.splitlines()
    assert lines[0] == "triosip tasks  1 of 3 transactions · 3 ops running · 0 launched"
    assert lines[1:4] == [
        "├── states: Proceeding 3",
        "├── methods: INVITE 3",
        "├── ops: db 3",
    ]
    assert lines[4].startswith("├── Proceeding  IST INVITE z9hG4bK-0")
    assert text.count("IST INVITE") == 1
    assert " ".join(text.split()).endswith(
        "└── … and 2 more transactions (--limit N to show more, --limit 0 for all, --summary "
        "for the counts alone)"
    )


def test_the_summary_alone_stays_one_line_per_count() -> None:
    methods = [f"M{n}" for n in range(12)]
    transactions = [invite(method=method, task=None) for method in methods for _ in range(500)]
    document = task_tree(transactions, [], now=NOW, query=TaskQuery(summary=True))
    lines = [line.rstrip() for line in draw(render_tasks(document)).splitlines()]
    assert lines == [
        "triosip tasks  0 of 6,000 transactions · 0 ops running · 0 launched",
        "├── states: Proceeding 6,000",
        "├── methods: M0 500 · M1 500 · M10 500 · M11 500 · M2 500 · M3 500 · M4 500 · M5 500 · "
        "4 others",
        "│   2,000",
        "└── ops: none",
    ]


def test_an_empty_tree_says_so() -> None:
    text = draw(render_tasks(task_tree([], [], now=NOW)))
    assert text.splitlines()[1] == "└── no live transactions"


def test_ages_turn_red_near_their_deadline() -> None:
    def op_node(started_at: float) -> str:
        op = OpSample(kind="sleep", description="sleep 10", started_at=started_at, timeout=10.0)
        tx = invite(branches=(), task=TaskSample(name="t", children=(TaskSample(name="o", op=op),)))
        lines = draw(render_tasks(task_tree([tx], [], now=NOW)), colour=True).splitlines()
        [line] = [line for line in lines if "op sleep" in ANSI.sub("", line)]
        return line

    assert "\x1b[32m1.00 s" in op_node(999.0)  # green: a tenth of its time used
    assert "\x1b[33m6.00 s" in op_node(994.0)  # yellow: past half
    assert "\x1b[31m9.00 s" in op_node(991.0)  # red: past four fifths
    assert "\x1b[1;31m11.0 s" in op_node(989.0)  # bold red: past it


def test_text_from_the_wire_is_not_markup() -> None:
    tx = invite(call_id="[bold]x[/bold]@example.org", ruri="sip:[red]bob[/red]@example.org")
    text = draw(render_tasks(task_tree([tx], [], now=NOW)))
    assert "Call-ID [bold]x[/bold]@example.org" in text
    assert "INVITE sip:[red]bob[/red]@example.org" in text


def test_launched_work_under_its_own_root() -> None:
    launched = TaskSample(
        name="launch rest POST http://cdr/",
        op=OpSample(kind="rest", description="POST http://cdr/", started_at=990.0),
    )
    text = draw(render_tasks(task_tree([], [launched], now=NOW)))
    assert text.splitlines()[1:] == [
        "└── launched work",
        "    └── op rest  age 10.0 s",
        "        POST http://cdr/",
    ]


def test_stats_tables() -> None:
    kind = OpKindStatistics(started=4, latency_sum=0.2)
    kind.outcomes.update(done=3, timed_out=1)
    kind.latency_buckets[0] = 3
    kind.latency_buckets[-1] = 1
    document = statistics_document(
        version="0.1.0",
        uptime=3723.0,
        proxy=ProxyStatistics(
            requests_received={"INVITE": 4},
            replies_received={"2xx": 3},
            requests_forwarded={"INVITE": 4},
            replies_forwarded={"2xx": 3},
            replies_generated={"4xx": 1},
            parse_errors={},
            transactions_active=0,
            transactions_total=4,
            message_errors=0,
            replies_sent={200: 3, 404: 1},
        ),
        transactions=TransactionStatistics(
            server_active=0,
            server_total=4,
            client_active=0,
            client_total=4,
            ist_total=4,
            nist_total=0,
            ict_total=4,
            nict_total=0,
            retransmissions_sent=0,
            retransmissions_absorbed=0,
            timeouts=0,
            strays=0,
            handler_errors=0,
            dropped=0,
        ),
        transport=TransportStatistics(udp_datagrams_received=11),
        ops={"db": kind},
        ops_running={},
    )
    text = draw(render_stats(document))
    assert text.startswith("triosip 0.1.0  up 1 h 02 min\n")
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}
    assert rows["INVITE"] == ["4", "4"]
    assert rows["2xx"] == ["3", "3", "0"]
    assert rows["4xx"] == ["0", "0", "1"]
    assert rows["db"] == ["4", "0", "3", "0", "1", "0", "0.05", "s", "∞"]
    assert rows["udp"] == ["datagrams", "received", "11"]
    assert "Parse errors" not in text
    assert "Responses sent by code: 200 ×3  404 ×1" in text
