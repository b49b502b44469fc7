"""The transaction layer's own cost, in process: no sockets, no proxy, no sipp.

N INVITE server transactions (received, 100 Trying, answered 200 by ``on_request``, held
for Timer L), N INVITE client transactions run in a task each (sent, answered 180 then
200, ended with ``wait_in_accepted=False``) and N more run as records by the layer's timers
loop (``start_client``, a proxy's UDP branch, the same answers and ending), over a
transport whose sends always succeed at once. It
prints the CPU microseconds per transaction of each kind (best of ``--runs``: the run
least disturbed by the rest of the machine) and, from cProfile, the Python function calls
of triosip per server + client pair: a figure that hardly depends on the machine's load
(trio's own calls do vary with its scheduling), to compare two versions of the layer.

Usage (from the repository root)::

    .venv/bin/python bench/bench_transactions.py
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from pathlib import Path

import trio
import trio.testing

import triosip
from triosip.sip import Request, Response, build_response, parse_message
from triosip.transaction import ServerTransaction, TransactionLayer
from triosip.transport import Address, Inbound, TcpConnection

SOURCE = Address("udp", "192.0.2.10", 5070)
LOCAL = Address("udp", "192.0.2.1", 5060)
NEXT_HOP = Address("udp", "192.0.2.20", 5060)


class Transport:
    """Takes every message at once, as an idle UDP socket does."""

    def send_nowait(
        self, data: bytes, destination: Address, *, local: Address | None = None
    ) -> bool:
        return True

    async def send(
        self,
        data: bytes,
        destination: Address,
        *,
        connection: TcpConnection | None = None,
        local: Address | None = None,
    ) -> None:
        await trio.lowlevel.checkpoint()


def invite(number: int, branch: str) -> Request:
    message = parse_message(
        f"INVITE sip:bob@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.10:5070;branch={branch}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a{number}\r\n"
        f"To: <sip:bob@example.com>\r\nCall-ID: c{number}@example.com\r\n"
        "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n".encode()
    )
    assert isinstance(message, Request)
    return message


async def run(count: int) -> tuple[float, float, float]:
    """CPU seconds for ``count`` server transactions, then ``count`` client ones in tasks,
    then ``count`` client records."""

    async def on_request(server: ServerTransaction) -> None:
        await server.respond(build_response(server.request, 200, to_tag="callee"))

    layer = TransactionLayer(Transport(), on_request=on_request, on_stray=lambda inbound: None)
    incoming = [invite(n, f"z9hG4bKs{n}") for n in range(count)]
    outgoing = [invite(n, f"z9hG4bKc{n}") for n in range(count)]
    answers: list[tuple[Response, Response]] = [
        (build_response(r, 180), build_response(r, 200, to_tag="callee")) for r in outgoing
    ]
    recorded = [invite(n, f"z9hG4bKr{n}") for n in range(count)]
    record_answers: list[tuple[Response, Response]] = [
        (build_response(r, 180), build_response(r, 200, to_tag="callee")) for r in recorded
    ]

    ended = 0
    all_ended = trio.Event()

    async def branch(
        request: Request, *, task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED
    ) -> None:
        nonlocal ended
        await layer.run_client(
            request,
            NEXT_HOP,
            on_response=lambda c, r: None,
            wait_in_accepted=False,
            task_status=task_status,
        )
        ended += 1
        if ended == count:
            all_ended.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(layer.serve)
        start = time.process_time()
        for request in incoming:
            layer.receive(Inbound(request, SOURCE, LOCAL, None))
        # Every transaction answers at once and is held: then no task is left to run.
        await trio.testing.wait_all_tasks_blocked()
        assert layer.statistics().server_held == count
        servers = time.process_time() - start
        start = time.process_time()
        for request in outgoing:
            await nursery.start(branch, request)  # returns once its INVITE is sent
        for ringing, final in answers:
            layer.receive(Inbound(ringing, NEXT_HOP, LOCAL, None))
            layer.receive(Inbound(final, NEXT_HOP, LOCAL, None))
        await all_ended.wait()
        clients = time.process_time() - start
        assert layer.statistics().client_active == 0
        records_ended = 0
        all_records_ended = trio.Event()

        def record_ended(_client: object, _failure: BaseException | None) -> None:
            nonlocal records_ended
            records_ended += 1
            if records_ended == count:
                all_records_ended.set()

        start = time.process_time()
        for request in recorded:
            layer.start_client(
                request,
                NEXT_HOP,
                on_response=lambda c, r: None,
                on_end=record_ended,
                wait_in_accepted=False,
            )
        for ringing, final in record_answers:
            layer.receive(Inbound(ringing, NEXT_HOP, LOCAL, None))
            layer.receive(Inbound(final, NEXT_HOP, LOCAL, None))
        await all_records_ended.wait()  # ended at once, or by the timers loop
        records = time.process_time() - start
        nursery.cancel_scope.cancel()
    return servers, clients, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    count = args.transactions
    results = [trio.run(run, count) for _ in range(args.runs)]
    best_server = min(r[0] for r in results) / count * 1e6
    best_client = min(r[1] for r in results) / count * 1e6
    best_record = min(r[2] for r in results) / count * 1e6
    profile = cProfile.Profile()
    profile.enable()
    trio.run(run, 2000)
    profile.disable()
    # Calls in triosip's own code: trio's share varies from run to run with its scheduling.
    package = str(Path(triosip.__file__).parent)
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    calls = sum(row[1] for key, row in stats.items() if key[0].startswith(package)) / 2000
    calls_per_kind = "server + client pair + client record"
    print(f"{count} transactions of each kind, best of {args.runs} runs")
    print(f"server (IST, 100 + 200, held): {best_server:6.1f} µs CPU per transaction")
    print(f"client (ICT, 180 + 200):       {best_client:6.1f} µs CPU per transaction")
    print(f"client record (start_client):  {best_record:6.1f} µs CPU per transaction")
    print(f"calls of triosip functions per {calls_per_kind} (cProfile): {calls:.1f}")


if __name__ == "__main__":
    main()
