"""The task tree and the transaction table, from hand-made samples: no trio, no proxy.

Times are in the clock's units; ``NOW`` is when the samples were taken.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.support.mi_samples import BRANCH, NOW, QUERY_OP, invite
from triosip.mi import (
    BranchSample,
    ClientSample,
    OpSample,
    QueryError,
    TaskQuery,
    TaskSample,
    TransactionSample,
    task_tree,
    transaction_table,
    transaction_timers,
)


def bye(**changes: Any) -> TransactionSample:
    values: dict[str, Any] = {
        "name": "NIST BYE z9hG4bK-bye",
        "method": "BYE",
        "ruri": "sip:alice@10.0.0.1",
        "call_id": "call-2@example.org",
        "branch": "z9hG4bK-bye",
        "state": "Completed",
        "source": "udp:10.0.0.2:5060",
        "created_at": 999.5,
        "last_status": 200,
        "final_status": 200,
        "timers": {"J": 1031.5},
        "proxied": True,
        "task": TaskSample(name="NIST BYE z9hG4bK-bye"),
    }
    values.update(changes)
    return TransactionSample(**values)


def test_a_transaction_with_its_branch_and_op() -> None:
    document = task_tree([invite()], [], now=NOW)
    [tx] = document["transactions"]
    assert {key: tx[key] for key in ("name", "kind", "method", "ruri", "call_id", "state")} == {
        "name": "IST INVITE z9hG4bK-up",
        "kind": "transaction",
        "method": "INVITE",
        "ruri": "sip:bob@example.org",
        "call_id": "call-1@example.org",
        "state": "Proceeding",
    }
    assert (tx["age"], tx["last_status"], tx["final_status"]) == (5.0, 180, None)
    branch, op = tx["children"]
    assert branch == {
        "name": f"branch udp:10.0.0.2:5060 {BRANCH}",
        "kind": "branch",
        "age": 4.0,
        "deadline_in": 110.0,  # its fr_inv_timeout
        "branch": {
            "index": 0,
            "branch": BRANCH,
            "destination": "udp:10.0.0.2:5060",
            "provisional": True,
            "cancel_sent": False,
            "ended": False,
            "status": None,
            "fr_in": 110.0,
        },
        "client": {
            "name": f"ICT INVITE {BRANCH}",
            "method": "INVITE",
            "state": "Proceeding",
            "retransmissions": 2,
            "last_status": 180,
            "timers": [],
        },
        "children": [],
    }
    assert op == {
        "name": f"op db {QUERY_OP.description}",
        "kind": "op",
        "age": 2.0,
        "deadline_in": 1.0,
        "op": {"kind": "db", "description": QUERY_OP.description, "timeout": 3.0},
        "children": [],
    }
    assert tx["waiting_in"].endswith("_process_responses:382")
    assert document["summary"] == {
        "transactions": 1,
        "matched": 1,
        "shown": 1,
        "methods": {"INVITE": 1},
        "states": {"Proceeding": 1},
        "ops_running": 1,
        "ops": {"db": 1},
        "launched": 0,
    }


def test_the_next_timer_is_the_soonest_and_says_what_it_does() -> None:
    tx = invite()
    assert transaction_timers(tx, NOW) == [
        {
            "timer": "op timeout",
            "in": 1.0,
            "action": "db op times out: the resume route gets OpTimeout",
        },
        {
            "timer": "fr_inv_timeout",
            "in": 110.0,
            "action": "CANCEL the branch to udp:10.0.0.2:5060, 408 + failure route failover",
        },
    ]
    [node] = task_tree([tx], [], now=NOW)["transactions"]
    assert node["next_timer"]["timer"] == "op timeout"
    # The transaction fails at its branch's fr timer, not at an op's timeout.
    assert node["deadline_in"] == 110.0


@pytest.mark.parametrize(
    ("letter", "status", "action"),
    [
        ("G", 486, "retransmit 486"),
        ("H", 486, "give up waiting for the ACK, terminate"),
        ("I", 486, "terminate (ACK retransmissions absorbed)"),
        ("J", 200, "terminate (request retransmissions absorbed)"),
        ("L", 200, "terminate (Accepted)"),
    ],
)
def test_server_timers(letter: str, status: int, action: str) -> None:
    tx = bye(timers={letter: 1000.25}, last_status=status)
    assert transaction_timers(tx, NOW) == [
        {"timer": f"Timer {letter}", "in": 0.25, "action": action}
    ]


def test_the_request_route_s_fr_timeout_before_any_branch() -> None:
    tx = invite(branches=(), route_deadline=1025.0, failure_route=None, task=None)
    assert transaction_timers(tx, NOW) == [
        {"timer": "fr_timeout", "in": 25.0, "action": "cancel the route, 408"}
    ]
    # Ops under the route share its deadline when it comes first.
    tx = invite(
        branches=(),
        route_deadline=1000.5,
        task=TaskSample(name="IST INVITE z9hG4bK-up", op=QUERY_OP),
    )
    [node] = task_tree([tx], [], now=NOW)["transactions"]
    [awaited] = node["children"]
    assert (awaited["name"], awaited["kind"], awaited["deadline_in"]) == ("route awaits", "op", 0.5)


def test_a_branch_without_a_provisional_and_several_pending() -> None:
    first = BranchSample(index=0, branch="b0", destination="udp:10.0.0.2:5060", fr_deadline=1004.0)
    second = BranchSample(index=1, branch="b1", destination=None, fr_deadline=1006.0)
    answered = BranchSample(index=2, branch="b2", destination="udp:10.0.0.4:5060", status=486)
    tx = invite(branches=(first, second, answered), task=None)
    # With two branches pending, neither's fr timer alone runs the failure route.
    assert transaction_timers(tx, NOW) == [
        {"timer": "fr_timeout", "in": 4.0, "action": "stop the branch to udp:10.0.0.2:5060, 408"},
        {"timer": "fr_timeout", "in": 6.0, "action": "stop the branch to b1, 408"},
    ]


def test_client_timers_and_kinds_of_tasks() -> None:
    cancel_client = ClientSample(
        name="NICT CANCEL b0",
        method="CANCEL",
        state="Trying",
        created_at=999.0,
        retransmissions=1,
        timers={"E": 1000.5, "F": 1031.0},
    )
    task = TaskSample(
        name="IST INVITE z9hG4bK-up",
        children=(
            TaskSample(name="NICT CANCEL b0", client=cancel_client),
            TaskSample(name="IST INVITE z9hG4bK-up timers"),
            TaskSample(name="op sleep sleep 1", waiting_in="routes.after:12"),
            TaskSample(name="something else"),
        ),
    )
    [node] = task_tree([invite(task=task)], [], now=NOW)["transactions"]
    cancel, timers, resume, other = node["children"]
    assert (cancel["kind"], timers["kind"], resume["kind"], other["kind"]) == (
        "cancel",
        "timers",
        "resume",
        "task",
    )
    assert cancel["client"]["timers"] == [
        {"timer": "Timer E", "in": 0.5, "action": "retransmit CANCEL"},
        {"timer": "Timer F", "in": 31.0, "action": "408: no answer"},
    ]
    assert cancel["deadline_in"] == 31.0  # Timer F fails it; Timer E only resends
    assert resume["waiting_in"] == "routes.after:12"
    assert resume["age"] is None


def test_launched_work_has_its_own_root_and_filters_hide_it() -> None:
    launched = TaskSample(
        name="launch rest POST http://cdr/",
        op=OpSample(kind="rest", description="POST http://cdr/", started_at=990.0),
    )
    document = task_tree([invite(), bye()], [launched], now=NOW)
    [node] = document["launched"]
    assert (node["kind"], node["age"], node["deadline_in"]) == ("op", 10.0, None)
    assert document["summary"] == {
        "transactions": 2,
        "matched": 2,
        "shown": 2,
        "methods": {"BYE": 1, "INVITE": 1},
        "states": {"Completed": 1, "Proceeding": 1},
        "ops_running": 2,
        "ops": {"db": 1, "rest": 1},
        "launched": 1,
    }
    filtered = task_tree([invite(), bye()], [launched], now=NOW, query=TaskQuery(method="BYE"))
    assert filtered["launched"] == []
    assert [tx["method"] for tx in filtered["transactions"]] == ["BYE"]


@pytest.mark.parametrize(
    ("query", "shown"),
    [
        (TaskQuery(), ["INVITE", "BYE"]),  # oldest first
        (TaskQuery(call_id="call-2@example.org"), ["BYE"]),
        (TaskQuery(call_id="call-3@example.org"), []),
        (TaskQuery(method="INVITE"), ["INVITE"]),
        (TaskQuery(older_than=1.0), ["INVITE"]),
        (TaskQuery(older_than=0.5), ["INVITE", "BYE"]),
        (TaskQuery(method="BYE", older_than=1.0), []),
    ],
)
def test_filters(query: TaskQuery, shown: list[str]) -> None:
    document = task_tree([bye(), invite()], [], now=NOW, query=query)
    assert [tx["method"] for tx in document["transactions"]] == shown
    assert document["summary"]["transactions"] == 2
    table = transaction_table([bye(), invite()], now=NOW, query=query)
    assert [tx["method"] for tx in table["transactions"]] == shown


@pytest.mark.parametrize(
    ("params", "query"),
    [
        ({}, TaskQuery()),
        ({"method": ["invite"]}, TaskQuery(method="INVITE")),
        ({"call_id": ["a@b"], "older_than": ["2.5"]}, TaskQuery(call_id="a@b", older_than=2.5)),
        ({"limit": ["50"], "summary": ["0"]}, TaskQuery(limit=50)),
        ({"limit": ["0"], "summary": ["true"]}, TaskQuery(limit=0, summary=True)),
        ({"summary": ["1"]}, TaskQuery(summary=True)),
    ],
)
def test_queries_from_url_parameters(params: dict[str, list[str]], query: TaskQuery) -> None:
    assert TaskQuery.from_params(params) == query


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"older_than": ["inf"]}, "older_than must be a number of seconds >= 0, not 'inf'"),
        ({"older_than": ["-3"]}, "older_than must be a number of seconds >= 0, not '-3'"),
        ({"callid": ["x"]}, "unknown parameter 'callid'"),
        ({"method": ["A", "B"]}, "parameter 'method' given 2 times"),
        ({"limit": ["ten"]}, "limit must be a whole number >= 0, not 'ten'"),
        ({"limit": ["1.5"]}, "limit must be a whole number >= 0, not '1.5'"),
        ({"summary": ["2"]}, "summary must be 1 or 0, not '2'"),
    ],
)
def test_bad_queries(params: dict[str, list[str]], error: str) -> None:
    with pytest.raises(QueryError, match=f"^{error}"):
        TaskQuery.from_params(params)


def test_the_transaction_table_lists_branches_without_tasks() -> None:
    table = transaction_table([invite()], now=NOW)
    [row] = table["transactions"]
    assert "children" not in row
    assert [branch["branch"] for branch in row["branches"]] == [BRANCH]
    assert table["summary"] == {
        "transactions": 1,
        "matched": 1,
        "shown": 1,
        "methods": {"INVITE": 1},
        "states": {"Proceeding": 1},
    }


def test_no_infinite_deadline_leaks_into_the_document() -> None:
    quiet = invite(
        branches=(BranchSample(index=0, branch="b", destination=None, fr_deadline=math.inf),),
        task=None,
    )
    [node] = task_tree([quiet], [], now=NOW)["transactions"]
    assert (node["timers"], node["next_timer"], node["deadline_in"]) == ([], None, None)


def test_a_limit_shows_the_oldest_and_the_summary_counts_them_all() -> None:
    older = invite(name="IST INVITE z9hG4bK-old", created_at=990.0)
    transactions = [bye(), invite(), older]
    document = task_tree(transactions, [], now=NOW, query=TaskQuery(limit=2))
    assert [tx["name"] for tx in document["transactions"]] == [
        "IST INVITE z9hG4bK-old",
        "IST INVITE z9hG4bK-up",
    ]
    assert document["summary"] == {
        "transactions": 3,
        "matched": 3,
        "shown": 2,
        "methods": {"INVITE": 2, "BYE": 1},
        "states": {"Proceeding": 2, "Completed": 1},
        "ops_running": 2,
        "ops": {"db": 2},
        "launched": 0,
    }
    filtered = task_tree(transactions, [], now=NOW, query=TaskQuery(method="BYE", limit=0))
    assert filtered["transactions"] == []
    assert (filtered["summary"]["matched"], filtered["summary"]["shown"]) == (1, 0)
    assert filtered["summary"]["methods"] == {"BYE": 1}


def test_a_summary_query_has_no_entries() -> None:
    document = task_tree([bye(), invite()], [], now=NOW, query=TaskQuery(summary=True))
    assert list(document) == ["summary"]
    assert document["summary"]["shown"] == 0
    assert document["summary"]["states"] == {"Completed": 1, "Proceeding": 1}
    table = transaction_table([bye(), invite()], now=NOW, query=TaskQuery(summary=True))
    assert table == {
        "summary": {
            "transactions": 2,
            "matched": 2,
            "shown": 0,
            "methods": {"BYE": 1, "INVITE": 1},
            "states": {"Completed": 1, "Proceeding": 1},
        }
    }
