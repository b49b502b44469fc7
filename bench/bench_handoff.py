"""The CPU a hand-off between workers costs per message (``triosip run --workers N``).

Two transport layers run in this process as workers 0 and 1 of ``--workers 2`` do: they
share a UDP listener (SO_REUSEPORT) and each other's hand-off sockets. One peer socket
sends them sipp-like INVITEs with fresh Call-IDs, so the kernel gives every datagram to
the same worker, which hands the ones the other owns over to it (about half). The same
datagrams then go to one layer of a single process. The script prints the CPU time per
message of each, and the difference per handed-over message: what a hand-off costs, both
ends together (owner lookup, the unix socket's send and receive, the wake-ups), parsing
excluded since both setups parse each message once.

Two ways of sending: ``burst`` sends MESSAGES at once (one receive batch takes many: a
loaded proxy), ``paced`` sends one and waits until it is handled (an idle proxy: every
message wakes the loop, and every hand-off the owner).

    .venv/bin/python bench/bench_handoff.py --messages 4000
"""

from __future__ import annotations

import argparse
import socket
import time
from contextlib import ExitStack

import trio

from triosip.transport import Address, TransportLayer, WorkerSockets, owner_of

_INVITE = (
    "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{n}-1-0\r\n"
    "From: sipp <sip:sipp@127.0.0.1:5061>;tag={n}SIPpTag001\r\n"
    "To: service <sip:service@127.0.0.1:5060>\r\n"
    "Call-ID: {n}-4242@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: sip:sipp@127.0.0.1:5061\r\n"
    "Max-Forwards: 70\r\n"
    "Subject: Performance Test\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 129\r\n\r\n"
    "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


async def _cpu_per_message(workers: int, messages: list[bytes], paced: bool) -> tuple[float, int]:
    """CPU seconds per message through `workers` layers (0: one process), and hand-offs."""
    handled = 0
    arrived = trio.Event()

    def on_message(_: object) -> None:
        nonlocal handled, arrived
        handled += 1
        arrived.set()

    with ExitStack() as stack:
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(workers)]
        for pair in pairs:
            for end in pair:
                stack.callback(end.close)
            pair[0].setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        peer = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        peer.bind(("127.0.0.1", 0))
        layers = []
        async with trio.open_nursery() as nursery:
            listen = Address("udp", "127.0.0.1", 0)
            for index in range(max(workers, 1)):
                worker = None
                if workers:
                    outboxes = tuple(pair[0] for pair in pairs)
                    worker = WorkerSockets(index=index, inbox=pairs[index][1], outboxes=outboxes)
                layer = TransportLayer(
                    [listen], on_message=on_message, on_parse_error=print, worker=worker
                )
                (listen,) = await nursery.start(layer.serve)
                layers.append(layer)
            target = (listen.host, listen.port)
            start = time.process_time()
            if paced:
                for data in messages:
                    arrived = trio.Event()
                    peer.sendto(data, target)
                    await arrived.wait()
            else:
                for data in messages:
                    peer.sendto(data, target)
                while handled < len(messages):
                    arrived = trio.Event()
                    await arrived.wait()
            cpu = time.process_time() - start
            nursery.cancel_scope.cancel()
    handed = sum(layer.statistics().udp_handed_off for layer in layers)
    return cpu / len(messages), handed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    messages = [_INVITE.format(n=n).encode() for n in range(args.messages)]
    share = sum(owner_of(data, 2) == 1 for data in messages) / len(messages)
    for mode in ("burst", "paced"):
        # A burst must fit in the receive buffer: send it in slices of 500.
        for _ in range(args.repeat):
            one = two = 0.0
            handed = 0
            for chunk in range(0, len(messages), 500):
                part = messages[chunk : chunk + 500]
                cpu1, _ = trio.run(_cpu_per_message, 0, part, mode == "paced")
                cpu2, handed_part = trio.run(_cpu_per_message, 2, part, mode == "paced")
                one += cpu1 * len(part)
                two += cpu2 * len(part)
                handed += handed_part
            n = len(messages)
            print(
                f"{mode}: one process {one / n * 1e6:.1f} µs per message, two workers"
                f" {two / n * 1e6:.1f} µs; {handed} of {n} handed over (~{share:.0%} owned"
                f" by the other): {(two - one) / max(handed, 1) * 1e6:.1f} µs per hand-off"
            )


if __name__ == "__main__":
    main()
