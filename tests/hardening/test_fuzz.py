"""A wire fuzz of an in-process proxy, over UDP and TCP: no datagram may crash, stall or
flood it (docs/hardening.md).

The proxy runs the default routes in front of a callee that answers 200 to everything.
Mutated messages (`triosip.testing.fuzz.Mutator`, fixed seeds so that a failure
reproduces) go to it over UDP and TCP, after the `known_cases` that once ended it. Then:

* the proxy is still running: no exception escaped its nursery (if one did, the cases
  sent last are replayed one by one against fresh proxies to name the one that kills it);
* every response that came back is 100, the callee's 200, or a failure of
  `ALLOWED_STATUSES` with a reason phrase; never 500, which means a route raised;
* nothing was logged at ERROR or with a traceback;
* what the proxy sent on (to the callee, to the fuzzer) parses;
* a valid OPTIONS, over UDP and over TCP, is still relayed to the callee and answered.

`keep_on_this_machine` makes every name resolve to nothing and binds TCP sockets to
127.0.0.1 before they connect, so that whatever the mutations make of an address, the
proxy sends nothing off this machine.

``bench/bench_fuzz.py`` runs the same mutations against ``triosip run`` for minutes.
"""

from __future__ import annotations

import logging
import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from triosip.sip import Response
from triosip.testing.fuzz import (
    Case,
    FuzzCallee,
    Mutator,
    TcpFuzzClient,
    judge,
    keep_on_this_machine,
    open_tcp_fuzz_client,
)
from triosip.testing.proxy import RunningProxy, UdpPeer, open_udp_peer, start_proxy

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

SEEDS = (1, 2, 3, 4)
UDP_CASES = 500  # per seed: 2,000 in all
TCP_CASES = 75  # per seed: 300 in all
BATCH = 25  # datagrams sent before the fuzzer lets the proxy run
FR_TIMEOUT = 1.0  # so that branches to nowhere end (408) within the test
CALL_ID = re.compile(r"fz-(-?\d+)-(-?\d+)")


# -- one proxy under fuzz ---------------------------------------------------------------


@dataclass
class Fuzzed:
    """A proxy under fuzz, and what the fuzz saw of it."""

    running: RunningProxy
    callee: FuzzCallee
    died: list[BaseException] = field(default_factory=list)
    sent: dict[str, Case] = field(default_factory=dict)
    udp_sent: int = 0
    tcp_sent: int = 0

    @property
    def alive(self) -> bool:
        return not self.died


async def _serve_proxy(
    callee: UdpPeer, died: list[BaseException], *, task_status: trio.TaskStatus[RunningProxy]
) -> None:
    # The proxy in a nursery of its own, so that an exception escaping it is kept (and
    # reported with the case that caused it) rather than ending the test at once.
    try:
        async with trio.open_nursery() as nursery:
            running = await start_proxy(
                nursery,
                None,
                params={"downstream": callee.destination},
                fr_timeout=FR_TIMEOUT,
                fr_inv_timeout=FR_TIMEOUT,
            )
            task_status.started(running)
    except Exception as exc:
        died.append(exc)


async def send_udp(fuzzed: Fuzzed, fuzzer: UdpPeer, cases: Iterable[Case]) -> list[Case]:
    """Send `cases` over UDP until the proxy dies; return those sent last (the suspects)."""
    recent: list[Case] = []
    for n, case in enumerate(cases, start=1):
        fuzzed.sent[case.call_id] = case
        await fuzzer.send(case.data, fuzzed.running.udp)
        fuzzed.udp_sent += 1
        recent = [*recent[-3 * BATCH + 1 :], case]
        if n % BATCH == 0:
            await trio.sleep(0.002)  # the proxy drains its socket
            if not fuzzed.alive:
                break
    await trio.sleep(0.05)
    return recent


async def send_tcp(fuzzed: Fuzzed, client: TcpFuzzClient, cases: Iterable[Case]) -> list[Case]:
    """Send `cases` over TCP until the proxy dies; return those sent last (the suspects)."""
    recent: list[Case] = []
    for case in cases:
        fuzzed.sent[case.call_id] = case
        try:
            await client.send(case.data)
        except OSError:  # refused: the proxy is gone
            break
        fuzzed.tcp_sent += 1
        recent = [*recent[-9:], case]
        await trio.sleep(0.001)
        if not fuzzed.alive:
            break
    await trio.sleep(0.05)
    return recent


async def killer_among(suspects: Sequence[Case], transport: str) -> Case | None:
    """Replay each suspect alone against a fresh proxy; the first one that ends it."""
    for case in suspects:
        async with (
            open_udp_peer(strict=False) as callee_peer,
            open_udp_peer(strict=False) as fuzzer,
            trio.open_nursery() as nursery,
        ):
            callee = FuzzCallee(callee_peer)
            nursery.start_soon(callee.serve)
            died: list[BaseException] = []
            running = await nursery.start(_serve_proxy, callee_peer, died)
            if transport == "udp":
                await fuzzer.send(case.data, running.udp)
            else:
                async with open_tcp_fuzz_client(running.tcp) as client:
                    await client.send(case.data)
                    await trio.sleep(0.1)
            await trio.sleep(0.1)
            running.stop()
            nursery.cancel_scope.cancel()
        if died:
            return case
    return None


def _case_named_in(text: str, fuzzed: Fuzzed) -> str:
    found = CALL_ID.search(text)
    if found is None:
        return "(no case's Call-ID in it)"
    case = fuzzed.sent.get(found.group(0))
    return case.describe() if case else f"(Call-ID {found.group(0)}, not a case sent)"


def problems_of(
    fuzzed: Fuzzed,
    responses: Iterable[Response],
    records: Iterable[logging.LogRecord],
    garbage: Iterable[tuple[bytes, str]],
) -> list[str]:
    """Every distinct thing wrong, with the case behind it, for the failure message."""
    problems: dict[str, str] = {}
    for response in responses:
        wrong = judge(response)
        if wrong is not None:
            problems.setdefault(
                wrong, f"{wrong}\n  case: {_case_named_in(response.call_id, fuzzed)}"
            )
    for record in records:
        if record.levelno >= logging.ERROR or record.exc_info:
            text = record.getMessage()
            # One problem per code path: the leaf exception and where in triosip it rose.
            where = _where(record.exc_info[1]) if record.exc_info else CALL_ID.sub("fz", text)
            key = f"logged at {record.levelname} by {record.name}: {where}"
            trace = record.exc_text or ""
            case = _case_named_in(text + trace, fuzzed)
            problems.setdefault(key, f"{key}\n  first line: {text}\n  case: {case}")
    for data, why in garbage:
        key = f"the proxy sent bytes that do not parse ({why})"
        problems.setdefault(
            key, f"{key}: {data[:300]!r}\n  case: {_case_named_in(repr(data), fuzzed)}"
        )
    for data, why in fuzzed.callee.unanswerable:
        key = f"the proxy relayed a request the callee cannot answer ({why})"
        problems.setdefault(
            key, f"{key}: {data[:300]!r}\n  case: {_case_named_in(repr(data), fuzzed)}"
        )
    return list(problems.values())


async def probe_udp(running: RunningProxy, prober: UdpPeer) -> Response:
    options = prober.request("OPTIONS", "sip:bob@127.0.0.1")
    await prober.send(options, running.udp)
    while True:
        response = await prober.receive_response()
        if response.call_id == options.call_id:
            return response


async def probe_tcp(running: RunningProxy) -> Response | None:
    async with open_tcp_fuzz_client(running.tcp) as client:
        options = (
            b"OPTIONS sip:bob@127.0.0.1 SIP/2.0\r\n"
            b"Via: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-probe;rport\r\n"
            b"From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:bob@127.0.0.1>\r\n"
            b"Call-ID: tcp-probe\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        await client.send(options)
        with trio.move_on_after(2):
            while True:
                for response in client.responses:
                    if response.call_id == "tcp-probe" and response.status >= 200:
                        return response
                await trio.sleep(0.01)
    return None


# -- the tests --------------------------------------------------------------------------


async def fuzz(
    seeds: Sequence[int], *, udp_cases: int, tcp_cases: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Fuzz one proxy with `seeds` and assert it came through; see the module's docstring."""
    keep_on_this_machine()
    async with (
        open_udp_peer(strict=False) as callee_peer,
        open_udp_peer(strict=False) as fuzzer,
        open_udp_peer() as prober,
        trio.open_nursery() as nursery,
    ):
        callee = FuzzCallee(callee_peer)
        nursery.start_soon(callee.serve)
        died: list[BaseException] = []
        running = await nursery.start(_serve_proxy, callee_peer, died)
        fuzzed = Fuzzed(running, callee, died)
        proxy = running.udp.host_port
        killer: Case | None = None
        tcp_responses: list[Response] = []
        tcp_garbage: list[tuple[bytes, str]] = []
        for seed in seeds:
            mutator = Mutator(seed, caller=fuzzer.address.host_port, proxy=proxy)
            cases = [*mutator.known(), *(next(mutator) for _ in range(udp_cases))]
            suspects = await send_udp(fuzzed, fuzzer, cases)
            if not fuzzed.alive:
                killer = await killer_among(suspects, "udp")
                break
            async with open_tcp_fuzz_client(running.tcp) as client:
                tcp_mutator = Mutator(
                    seed + 1000, caller="127.0.0.1:9", proxy=running.tcp.host_port, transport="TCP"
                )
                cases = [*tcp_mutator.known(), *(next(tcp_mutator) for _ in range(tcp_cases))]
                suspects = await send_tcp(fuzzed, client, cases)
                tcp_responses += client.responses
                tcp_garbage += client.garbage
            if died:  # the proxy died over TCP (`fuzzed.alive` would read as known to mypy)
                killer = await killer_among(suspects, "tcp")
                break

        if fuzzed.alive:
            with trio.move_on_after(3):
                udp_probe = await probe_udp(running, prober)
            tcp_probe = await probe_tcp(running)
        running.stop()
        nursery.cancel_scope.cancel()

    sent = f"after {fuzzed.udp_sent} UDP and {fuzzed.tcp_sent} TCP cases"
    if not fuzzed.alive:
        error = died[0]
        culprit = killer.describe() if killer else "(no single case of the last ones does it)"
        pytest.fail(
            f"the proxy died {sent}: {_innermost(error)!r}\n  at {_where(error)}\n"
            f"  case: {culprit}",
            pytrace=False,
        )
    problems = problems_of(
        fuzzed,
        [message for message in fuzzer.messages if isinstance(message, Response)] + tcp_responses,
        caplog.records,
        fuzzer.unparsable + callee_peer.unparsable + tcp_garbage,
    )
    assert not problems, f"{len(problems)} distinct problems {sent}:\n\n" + "\n\n".join(problems)
    assert udp_probe.status == 200, f"the UDP probe got {udp_probe.status} {sent}"
    assert tcp_probe is not None, f"the TCP probe got no final answer {sent}"
    assert tcp_probe.status == 200, f"the TCP probe got {tcp_probe.status} {sent}"


def _where(error: BaseException | None) -> str:
    """The leaf exception of `error` and the last frames of triosip it went through."""
    if error is None:
        return "no exception"
    leaf = _innermost(error)
    frames = [
        (f"{Path(frame.filename).parent.name}/{Path(frame.filename).name}", frame)
        for frame in traceback.extract_tb(leaf.__traceback__)
        if "/triosip/" in frame.filename
    ]
    # The last two frames outside sip/ (who read the field), then where it raised.
    callers = [(name, frame) for name, frame in frames if not name.startswith("sip/")]
    path = [*callers[-2:], *frames[-1:]]
    return f"{type(leaf).__name__} via " + " > ".join(
        f"{name}:{frame.lineno} {frame.name}" for name, frame in path
    )


def _innermost(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def test_fuzz_udp_and_tcp(caplog: pytest.LogCaptureFixture) -> None:
    # This used to end the proxy: the first known case (a stray 2xx whose lower Via does
    # not parse) raised ParseError out of the proxy's nursery.
    caplog.set_level(logging.INFO, logger="triosip")
    with trio.fail_after(60):
        await fuzz(SEEDS, udp_cases=UDP_CASES, tcp_cases=TCP_CASES, caplog=caplog)


@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(seed=st.integers(min_value=10_000, max_value=2**32))
async def test_fuzz_hypothesis_seeds(seed: int, caplog: pytest.LogCaptureFixture) -> None:
    # Hypothesis picks the seeds (a few cases each, over UDP and TCP); a failure shows the
    # seed, which the mutator turns back into the same bytes.
    caplog.clear()
    caplog.set_level(logging.INFO, logger="triosip")
    with trio.fail_after(20):
        await fuzz((seed,), udp_cases=30, tcp_cases=5, caplog=caplog)
