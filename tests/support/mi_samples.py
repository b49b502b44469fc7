"""Hand-made samples of what the MI reads from a running proxy, for the tests that draw
them (``/tasks``, ``triosip tasks``)."""

from __future__ import annotations

from typing import Any

from triosip.mi import BranchSample, ClientSample, OpSample, TaskSample, TransactionSample

NOW = 1000.0
BRANCH = "z9hG4bK-down.1"

QUERY_OP = OpSample(
    kind="db",
    description="SELECT setid FROM subscribers WHERE username=?",
    started_at=998.0,
    timeout=3.0,
)


def invite(**changes: Any) -> TransactionSample:
    """An INVITE ringing on one branch, with a db op pending in its onreply route."""
    branch = BranchSample(
        index=0,
        branch=BRANCH,
        destination="udp:10.0.0.2:5060",
        provisional=True,
        fr_deadline=1110.0,
    )
    client = ClientSample(
        name=f"ICT INVITE {BRANCH}",
        method="INVITE",
        state="Proceeding",
        created_at=996.0,
        retransmissions=2,
        last_status=180,
        timers={},
    )
    task = TaskSample(
        name="IST INVITE z9hG4bK-up",
        waiting_in="triosip.proxy._transaction.ProxyTransaction._process_responses:382",
        children=(
            TaskSample(name=f"branch udp:10.0.0.2:5060 {BRANCH}", branch=branch, client=client),
            TaskSample(name=f"op db {QUERY_OP.description}", op=QUERY_OP),
        ),
    )
    values: dict[str, Any] = {
        "name": "IST INVITE z9hG4bK-up",
        "method": "INVITE",
        "ruri": "sip:bob@example.org",
        "call_id": "call-1@example.org",
        "branch": "z9hG4bK-up",
        "state": "Proceeding",
        "source": "udp:10.0.0.1:5060",
        "created_at": 995.0,
        "last_status": 180,
        "timers": {},
        "proxied": True,
        "failure_route": "failover",
        "branches": (branch,),
        "task": task,
    }
    values.update(changes)
    return TransactionSample(**values)
