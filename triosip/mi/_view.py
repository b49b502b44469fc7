"""Drawing the MI's documents in a terminal with rich: ``triosip tasks`` and ``triosip stats``.

Every piece of text that comes from the wire or a script (a Call-ID, a Request-URI, an
SQL statement) goes into a `rich.text.Text` as plain text, never as markup, so that a
``[bold]`` in a Call-ID is shown as it is. Colours: a state has its colour, and an age
turns yellow past half of the time to its deadline and red past four fifths of it.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from triosip.mi._client import MIUnavailable

if TYPE_CHECKING:
    from collections.abc import Mapping

    from rich.console import RenderableType

    from triosip.mi._client import MIClient

_STATE_STYLES = {
    "Calling": "yellow",
    "Trying": "yellow",
    "Proceeding": "cyan",
    "Completed": "magenta",
    "Confirmed": "blue",
    "Accepted": "green",
    "Terminated": "dim",
}
_DESCRIPTION_LENGTH = 100
# The names a count line shows (the most frequent first), so that it stays one line
# whatever comes (a method is any token a client sends).
_COUNTS_SHOWN = 8


# -- the task tree ------------------------------------------------------------------------


def render_tasks(document: Mapping[str, Any]) -> RenderableType:
    """The tree of a ``GET /tasks`` document.

    Returns:
        A rich renderable: one branch per transaction, its tasks under it, and the
        launched work under a root of its own; for a document cut by ``limit``, the
        counts of all and a line saying how many more there are; for a summary document
        (``summary=1``), the counts alone.
    """
    summary = document["summary"]
    matched, shown = summary["matched"], summary["shown"]
    heading = f"{shown:,} of {summary['transactions']:,} transactions"
    if matched != summary["transactions"]:
        heading += f" ({matched:,} match)"
    heading += f" · {summary['ops_running']:,} ops running · {summary['launched']:,} launched"
    tree = Tree(Text.assemble(("triosip tasks", "bold"), "  ", (heading, "dim")))
    if "transactions" not in document:  # the summary alone
        for line in _count_lines(summary):
            tree.add(line)
        return tree
    if shown < matched:
        for line in _count_lines(summary):
            tree.add(line)
    for transaction in document["transactions"]:
        node = tree.add(_transaction_label(transaction))
        for child in transaction["children"]:
            _add_task(node, child)
    if document["launched"]:
        launched = tree.add(Text("launched work", style="bold"))
        for child in document["launched"]:
            _add_task(launched, child)
    if shown < matched:
        tree.add(
            Text(
                f"… and {matched - shown:,} more transactions (--limit N to show more, "
                "--limit 0 for all, --summary for the counts alone)",
                style="dim",
            )
        )
    elif not document["transactions"] and not document["launched"]:
        tree.add(Text("no live transactions", style="dim"))
    return tree


def _count_lines(summary: Mapping[str, Any]) -> list[Text]:
    lines = []
    for title, key in (("states", "states"), ("methods", "methods"), ("ops", "ops")):
        counts: Mapping[str, int] = summary[key]
        line = Text(f"{title}: ", style="bold")
        if not counts:
            line.append("none", style="dim")
        for index, (name, count) in enumerate(list(counts.items())[:_COUNTS_SHOWN]):
            if index:
                line.append(" · ", style="dim")
            line.append(name, style=_STATE_STYLES.get(name, "") if key == "states" else "")
            line.append(f" {count:,}")
        if len(counts) > _COUNTS_SHOWN:
            others = sum(list(counts.values())[_COUNTS_SHOWN:])
            line.append(f" · {len(counts) - _COUNTS_SHOWN} others {others:,}", style="dim")
        lines.append(line)
    return lines


def _transaction_label(tx: Mapping[str, Any]) -> Text:
    label = Text.assemble(
        (tx["state"], _STATE_STYLES.get(tx["state"], "")),
        "  ",
        (tx["name"], "bold"),
        "  age ",
        _age(tx["age"], tx["deadline_in"]),
    )
    if tx["last_status"] is not None:
        label.append(f"  sent {tx['last_status']}", style="dim")
    if tx["cancelled"]:
        label.append("  CANCELLED", style="red")
    label.append("\n")
    label.append(f"{tx['method']} {tx['ruri']}")
    label.append("  Call-ID ", style="dim")
    label.append(tx["call_id"], style="cyan")
    timer = tx["next_timer"]
    if timer is not None:
        label.append("\nnext: ", style="dim")
        label.append(f"{timer['timer']} in {_seconds(timer['in'])}: {timer['action']}")
    return label


def _add_task(parent: Tree, node: Mapping[str, Any]) -> None:
    branch = parent.add(_task_label(node))
    for child in node.get("children", ()):
        _add_task(branch, child)


def _task_label(node: Mapping[str, Any]) -> Text:
    kind = node["kind"]
    if kind == "op":
        op = node["op"]
        label = Text.assemble(
            ("op ", "bold"),
            (op["kind"], "magenta"),
            "  age ",
            _age(node["age"], node["deadline_in"]),
        )
        if op["timeout"] is not None:
            label.append(f"  timeout {_seconds(op['timeout'])}", style="dim")
        if node["deadline_in"] is not None:
            label.append(f"  ({_seconds(node['deadline_in'])} left)", style="dim")
        label.append("\n")
        label.append(_shorten(op["description"]))
        return label
    if kind in ("branch", "cancel"):
        return _branch_label(node)
    label = Text.assemble((node["name"], "dim" if kind == "timers" else ""))
    if kind == "resume":
        label = Text.assemble(("resume route ", "bold"), (node["name"], ""))
    where = node.get("waiting_in")
    if where:
        label.append(f"  in {where}", style="dim")
    return label


def _branch_label(node: Mapping[str, Any]) -> Text:
    branch = node.get("branch") or {}
    client = node.get("client")
    title = "CANCEL " if node["kind"] == "cancel" else "branch "
    label = Text(title, style="bold")
    label.append(branch.get("destination") or node["name"])
    if client is not None:
        label.append("  ")
        label.append(client["state"], style=_STATE_STYLES.get(client["state"], ""))
        if client["last_status"] is not None:
            label.append(f" {client['last_status']}")
    if node["age"] is not None:
        label.append("  age ")
        label.append_text(_age(node["age"], node["deadline_in"]))
    if branch.get("fr_in") is not None and node["kind"] == "branch":
        timer = "fr_inv_timeout" if branch.get("provisional") else "fr_timeout"
        label.append(f"  {timer} in {_seconds(branch['fr_in'])}", style="dim")
    details = []
    if branch.get("branch"):
        details.append(branch["branch"])
    if client is not None:
        details.append(f"retransmissions {client['retransmissions']}")
        timers = client["timers"]
        if timers:
            details.append(f"{timers[0]['timer']} in {_seconds(timers[0]['in'])}")
    if details:
        label.append("\n" + "  ".join(details), style="dim")
    return label


def _age(age: float | None, deadline_in: float | None) -> Text:
    if age is None:
        return Text("?", style="dim")
    style = ""
    if deadline_in is not None:
        if deadline_in <= 0:
            style = "bold red"
        else:
            used = age / (age + deadline_in)
            style = "red" if used >= 0.8 else "yellow" if used >= 0.5 else "green"
    return Text(_seconds(age), style=style)


# -- statistics ---------------------------------------------------------------------------


def render_stats(document: Mapping[str, Any]) -> RenderableType:
    """The tables of a ``GET /stats`` document.

    Returns:
        A rich renderable: messages, transactions, ops, parse errors, transport.
    """
    proxy = document["proxy"]
    parts: list[RenderableType] = [
        Text.assemble(
            ("triosip ", "bold"),
            document["version"],
            "  up ",
            _seconds(document["uptime"]),
        )
    ]

    requests = _table("SIP requests", "method", "received", "forwarded")
    for method in sorted(set(proxy["requests_received"]) | set(proxy["requests_forwarded"])):
        requests.add_row(
            method,
            _int(proxy["requests_received"].get(method, 0)),
            _int(proxy["requests_forwarded"].get(method, 0)),
        )
    if requests.row_count:
        parts.append(requests)

    replies = _table("SIP responses", "class", "received", "forwarded", "generated")
    classes = (
        set(proxy["replies_received"])
        | set(proxy["replies_forwarded"])
        | set(proxy["replies_generated"])
    )
    for status_class in sorted(classes):
        replies.add_row(
            status_class,
            _int(proxy["replies_received"].get(status_class, 0)),
            _int(proxy["replies_forwarded"].get(status_class, 0)),
            _int(proxy["replies_generated"].get(status_class, 0)),
        )
    if replies.row_count:
        parts.append(replies)
    sent = proxy.get("replies_sent") or {}
    if sent:
        # One line, as Kamailio's sl:/tm: statistics list them: "200 ×12  404 ×1".
        codes = sorted(sent.items(), key=lambda item: int(item[0]))
        parts.append(
            Text("Responses sent by code: " + "  ".join(f"{c} ×{_int(n)}" for c, n in codes))
        )

    layer = document["transactions"]
    transactions = _table("Transactions", "", "active", "total")
    transactions.add_row(
        "proxied", _int(proxy["transactions_active"]), _int(proxy["transactions_total"])
    )
    transactions.add_row(
        f"server (IST {layer['ist_total']}, NIST {layer['nist_total']})",
        _int(layer["server_active"]),
        _int(layer["server_total"]),
    )
    transactions.add_row(
        f"client (ICT {layer['ict_total']}, NICT {layer['nict_total']})",
        _int(layer["client_active"]),
        _int(layer["client_total"]),
    )
    for field in (
        "retransmissions_sent",
        "retransmissions_absorbed",
        "timeouts",
        "strays",
        "handler_errors",
        "dropped",
    ):
        transactions.add_row(field.replace("_", " "), "", _int(layer[field]))
    parts.append(transactions)

    ops = document["ops"]
    if ops:
        table = _table(
            "Async ops",
            "kind",
            "started",
            "running",
            "done",
            "failed",
            "timeout",
            "cancel",
            "mean",
            "p99 ≤",
        )
        for kind, o in sorted(ops.items()):
            buckets = o["latency"]["buckets"]
            count = buckets["+Inf"]
            mean = _seconds(o["latency"]["sum"] / count) if count else "-"
            table.add_row(
                kind,
                _int(o["started"]),
                _int(o["running"]),
                _int(o["done"]),
                _int(o["failed"]),
                _int(o["timed_out"]),
                _int(o["cancelled"]),
                mean,
                _quantile_bound(buckets, 0.99),
            )
        parts.append(table)

    if proxy["parse_errors"]:
        errors = _table("Parse errors", "reason", "count")
        for reason, count in sorted(proxy["parse_errors"].items(), key=lambda item: -item[1]):
            errors.add_row(Text(reason), _int(count))
        parts.append(errors)

    transport = _table("Transport", "", "count")
    for field, value in document["transport"].items():
        if value:
            transport.add_row(field.replace("_", " "), _int(value))
    parts.append(transport)
    return Group(*parts)


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE, title_style="bold")
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    return table


def _quantile_bound(buckets: Mapping[str, int], quantile: float) -> str:
    """The smallest bucket bound under which `quantile` of the ops ended."""
    total = buckets["+Inf"]
    if not total:
        return "-"
    for bound, count in buckets.items():
        if count >= quantile * total:
            return "∞" if bound == "+Inf" else _seconds(float(bound))
    return "∞"  # pragma: no cover - "+Inf" holds every op


# -- the commands -------------------------------------------------------------------------


def print_tasks(
    client: MIClient,
    params: Mapping[str, str],
    *,
    console: Console | None = None,
    as_json: bool = False,
    watch: bool = False,
    interval: float = 1.0,
) -> None:
    """``triosip tasks``: fetch the tree and draw it, once or (`watch`) until Ctrl-C.

    Raises:
        MIUnavailable: the first fetch found no MI (later ones, in `watch`, are shown).
        MIRefused: the MI refused the request.
    """
    console = console or Console()
    document = client.get_json("/tasks", params)
    if as_json:
        _print_json(console, document)
        return
    if not watch:
        console.print(render_tasks(document))
        return
    with Live(render_tasks(document), console=console, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval)
                try:
                    renderable = render_tasks(client.get_json("/tasks", params))
                except MIUnavailable as exc:
                    renderable = Text(str(exc), style="red")
                live.update(renderable, refresh=True)
        except KeyboardInterrupt:
            return


def print_stats(client: MIClient, *, console: Console | None = None, as_json: bool = False) -> None:
    """``triosip stats``: fetch the counters and print them as tables (or JSON).

    Raises:
        MIUnavailable: no MI answers.
        MIRefused: the MI refused the request.
    """
    console = console or Console()
    document = client.get_json("/stats")
    if as_json:
        _print_json(console, document)
    else:
        console.print(render_stats(document))


# -- formats ------------------------------------------------------------------------------


def _print_json(console: Console, document: Any) -> None:
    text = json.dumps(document, indent=2)
    if console.is_terminal:
        console.print_json(text)
    else:
        # Not through rich's renderer: it would wrap long strings at the console's width,
        # and a script reading the output wants JSON as it is.
        console.file.write(text + "\n")


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DESCRIPTION_LENGTH else text[: _DESCRIPTION_LENGTH - 1] + "…"


def _int(value: int | bool) -> str:
    return f"{int(value):,}"


def _seconds(seconds: float) -> str:
    if abs(seconds) < 10:
        return f"{seconds:.2f} s"
    if abs(seconds) < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
