"""The floor under a SIP proxy in Python: a stateless relay that does nothing else.

Not a proxy (no parsing beyond the top Via, no transactions, no checks: never put it on a
network); a yardstick for bench_calls.py, run in the proxy's place, to tell what the
language and the event loop cost per call before any SIP work:

    .venv/bin/python bench/bench_calls.py --targets triosip --rates 300 --runs 2 \\
        --triosip-cmd "{python} bench/floor_relay.py lean {port} {uas_port}"

A request gets our Via on top and goes to the downstream; a response loses its top Via
(ours) and goes to the host:port of the next one. Three ways to wait for a datagram:

- ``blocking``: a plain blocking ``recvfrom`` loop, no event loop at all;
- ``lean``: trio, with the socket read until ``EAGAIN`` and ``wait_readable`` only then, and
  ``sendto`` called directly (how triosip's UDP transport does it);
- ``trio``: trio's socket wrapper, ``await sock.recvfrom()`` / ``await sock.sendto()`` (a
  checkpoint each);
- ``shaped``: ``lean``, plus the least of triosip's shape: each request is handled in a
  task of its own (a server transaction, or an ACK's task) that opens its own nursery and
  relays from inside a cancel scope with a deadline (its route's); responses are relayed
  where they are read, as triosip's branches do.

Usage: floor_relay.py {blocking,lean,shaped,trio} LISTEN_PORT DOWNSTREAM_PORT (127.0.0.1 only).
"""

from __future__ import annotations

import argparse
import itertools
import socket

import trio

_VIA = b"\r\nVia: "
_VIA_HOST = len(b"\r\nVia: SIP/2.0/UDP ")


class Relay:
    """Our Via on requests, off responses; where each goes."""

    def __init__(self, port: int, downstream: int) -> None:
        self._via = b"\r\nVia: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK" % port
        self._downstream = ("127.0.0.1", downstream)
        self._branches = itertools.count()

    def relay(self, data: bytes) -> tuple[bytes, tuple[str, int]]:
        if data.startswith(b"SIP/2.0 "):
            first = data.index(_VIA)
            end = data.index(b"\r\n", first + 2)
            comma = data.find(b",", first, end)
            if comma > 0:  # "Via: ours, theirs" on one line
                data = data[: first + len(_VIA)] + data[comma + 1 :].lstrip(b" ")
            else:
                data = data[:first] + data[end:]
            via = data.index(_VIA)
            host, _, port = data[via + _VIA_HOST : data.index(b";", via)].partition(b":")
            return data, (host.decode(), int(port))
        line_end = data.index(b"\r\n")
        branch = b"%x" % next(self._branches)
        return data[:line_end] + self._via + branch + data[line_end:], self._downstream


def _bound(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    return sock


def run_blocking(relay: Relay, port: int) -> None:
    sock = _bound(port)
    while True:
        data, _ = sock.recvfrom(65535)
        sock.sendto(*relay.relay(data))


async def run_lean(relay: Relay, port: int) -> None:
    sock = _bound(port)
    sock.setblocking(False)
    while True:
        try:
            data, _ = sock.recvfrom(65535)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)
            continue
        sock.sendto(*relay.relay(data))


async def run_shaped(relay: Relay, port: int) -> None:
    sock = _bound(port)
    sock.setblocking(False)

    async def transaction(data: bytes) -> None:
        async with trio.open_nursery():
            with trio.move_on_after(32.0):  # noqa: ASYNC100 - the cost of a route's scope
                sock.sendto(*relay.relay(data))

    async with trio.open_nursery() as transactions:
        while True:
            try:
                data, _ = sock.recvfrom(65535)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
                continue
            if data.startswith(b"SIP/2.0 "):
                sock.sendto(*relay.relay(data))
            else:
                transactions.start_soon(transaction, data)


async def run_trio(relay: Relay, port: int) -> None:
    sock = trio.socket.from_stdlib_socket(_bound(port))
    while True:
        data, _ = await sock.recvfrom(65535)
        await sock.sendto(*relay.relay(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("blocking", "lean", "shaped", "trio"))
    parser.add_argument("port", type=int)
    parser.add_argument("downstream", type=int)
    args = parser.parse_args()
    relay = Relay(args.port, args.downstream)
    if args.mode == "blocking":
        run_blocking(relay, args.port)
    else:
        runs = {"lean": run_lean, "shaped": run_shaped, "trio": run_trio}
        trio.run(runs[args.mode], relay, args.port)


if __name__ == "__main__":
    main()
