"""How fast triosip.sip parses, compared with sippy's parser on the same message.

Two workloads, on one core, on a ~700-byte INVITE with SDP (bench/messages/invite_sdp.sip):

(a) parse, then read the fields a transaction layer matches on (RFC 3261 §17.2.3): the
    top Via's branch and sent-by, Call-ID, CSeq number and method, From tag, To tag;
(b) that, plus what a proxy does before forwarding (RFC 3261 §16.6): add a Via,
    decrement Max-Forwards, add a Record-Route, and serialize to bytes.

triosip alone also runs (c) = (a) plus `check_message` (the transport's acceptance
check); (d) = (b) plus the fields forwarding reads anyway (Request-URI, every Via, the
Route set); (e) = (d) plus `check_message`: (e) - (d) is what the check adds to the
path of a forwarded request, since the fields it reads are cached on the message.

sippy (PyPI ``sippy``, the B2BUA's SIP stack) runs first, doing the same with its own
API (``SipRequest(buf=...)``, ``getHFBody``, ``insertHeaderBefore``, ``str()``). It
parses ``str``, so decoding the datagram is counted as part of its parse, as in its
transaction manager. Each figure is the best of several runs of many messages (the
least disturbed by the rest of the machine).

``--edits`` times, instead, what the proxy does to the messages of one call, as
``triosip run routes/default.py`` does (record-routing, stateful): the edit chain of the
forwarded INVITE (stamp ``received``/``rport`` on its top Via, look for a loop, the branch
hash, Max-Forwards, Record-Route, our Via, and bytes() twice: the size check and the
client transaction) and of the forwarded 200 (strip our Via, bytes()), each on messages
parsed and checked beforehand; and parse + check_message of each of the six messages a
proxy receives in a call (INVITE, 180, 200, ACK, BYE, 200), the 180 and 200s as a UAS
answers the forwarded INVITE.

Usage (from the repository root)::

    .venv/bin/python bench/bench_parse.py            # figures
    .venv/bin/python bench/bench_parse.py --profile  # and cProfile of triosip (a), (b)
    .venv/bin/python bench/bench_parse.py --edits    # the edits and messages of a call

``--once setup|parse|edits`` runs the ``--edits`` workload once, untimed, for an
instruction count that the host's load does not disturb: ``setup`` makes ``--number``
calls' messages (and parses and checks each INVITE and 200), ``parse`` then parses and
checks every call's six messages, ``edits`` forwards each INVITE and relays each 200;
subtract ``setup``'s count from the others::

    valgrind --tool=cachegrind --cache-sim=no \
        .venv/bin/python bench/bench_parse.py --once parse --number 300
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import sys
import time
import timeit
from pathlib import Path
from typing import TYPE_CHECKING

from triosip.proxy._forward import (
    BRANCH_PREFIX,
    forward_request,
    has_looped,
    loop_hash,
    record_route_value,
    strip_own_routes,
    target_of,
    via_value,
)
from triosip.sip import Request, Response, build_response, check_message, parse_message
from triosip.transport import Address

if TYPE_CHECKING:
    from collections.abc import Callable

MESSAGE = (Path(__file__).parent / "messages" / "invite_sdp.sip").read_bytes()
OUR_VIA = "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-ts1a2b3c4d5.0"
OUR_RECORD_ROUTE = "<sip:10.0.0.1;lr>"


def triosip_a(data: bytes = MESSAGE) -> tuple[object, ...]:
    m = parse_message(data)
    via = m.top_via
    cseq = m.cseq
    return (via.branch, via.sent_by, m.call_id, cseq.number, cseq.method, m.from_.tag, m.to.tag)


def triosip_b(data: bytes = MESSAGE) -> bytes:
    m = parse_message(data)
    via = m.top_via
    cseq = m.cseq
    _ = (via.branch, via.sent_by, m.call_id, cseq.number, cseq.method, m.from_.tag, m.to.tag)
    max_forwards = m.max_forwards
    forwarded = (
        m.with_max_forwards(70 if max_forwards is None else max_forwards - 1)
        .with_header_first("record-route", OUR_RECORD_ROUTE)
        .with_header_first("via", OUR_VIA)
    )
    return bytes(forwarded)


def triosip_c(data: bytes = MESSAGE) -> tuple[object, ...]:
    m = parse_message(data)
    check_message(m)
    via = m.top_via
    cseq = m.cseq
    return (via.branch, via.sent_by, m.call_id, cseq.number, cseq.method, m.from_.tag, m.to.tag)


def triosip_d(data: bytes = MESSAGE, *, check: bool = False) -> bytes:
    # (b), plus what forwarding reads anyway (RFC 3261 §16.3-16.6): the Request-URI,
    # every Via (loop detection), the Route set and its URIs.
    m = parse_message(data)
    if check:
        check_message(m)
    assert isinstance(m, Request)
    _ = m.uri, m.via, [entry.uri for entry in m.route]
    return triosip_b_reads(m)


def triosip_e(data: bytes = MESSAGE) -> bytes:
    return triosip_d(data, check=True)


def triosip_b_reads(m: Request) -> bytes:
    via = m.top_via
    cseq = m.cseq
    _ = (via.branch, via.sent_by, m.call_id, cseq.number, cseq.method, m.from_.tag, m.to.tag)
    max_forwards = m.max_forwards
    forwarded = (
        m.with_max_forwards(70 if max_forwards is None else max_forwards - 1)
        .with_header_first("record-route", OUR_RECORD_ROUTE)
        .with_header_first("via", OUR_VIA)
    )
    return bytes(forwarded)


def sippy_functions():
    from sippy.SipHeader import SipHeader
    from sippy.SipRecordRoute import SipRecordRoute
    from sippy.SipRequest import SipRequest
    from sippy.SipVia import SipVia

    def sippy_a(data: bytes = MESSAGE) -> tuple[object, ...]:
        req = SipRequest(buf=data.decode())
        via = req.getHFBody("via")
        cseq = req.getHFBody("cseq")
        return (
            via.getBranch(),
            via.getAddr(),
            str(req.getHFBody("call-id")),
            cseq.getCSeqNum(),
            cseq.getCSeqMethod(),
            req.getHFBody("from").getTag(),
            req.getHFBody("to").getTag(),
        )

    def sippy_b(data: bytes = MESSAGE) -> bytes:
        req = SipRequest(buf=data.decode())
        via = req.getHFBody("via")
        cseq = req.getHFBody("cseq")
        _ = (
            via.getBranch(),
            via.getAddr(),
            str(req.getHFBody("call-id")),
            cseq.getCSeqNum(),
            cseq.getCSeqMethod(),
            req.getHFBody("from").getTag(),
            req.getHFBody("to").getTag(),
        )
        # As sippy's StatefulProxy.recvRequest does.
        req.getHFBody("max-forwards").incNum(incr=-1)
        first = req.getHF("via")
        req.insertHeaderBefore(
            first, SipHeader(name="record-route", body=SipRecordRoute(OUR_RECORD_ROUTE))
        )
        req.insertHeaderBefore(first, SipHeader(name="via", body=SipVia(OUR_VIA)))
        return str(req).encode()

    return sippy_a, sippy_b


# -- --edits: one call through a record-routing proxy -----------------------------------

# The caller's address (not its Via's sent-by, and it asks for rport: both get stamped),
# the proxy's listener, and the callee.
CALLER = Address("udp", "198.51.100.7", 5062)
PROXY = Address("udp", "10.0.0.1", 5060)
OURS = {(PROXY.host, PROXY.port)}


def forward_invite(m: Request) -> Request:
    # As ProxyTransaction does for a new INVITE: _reject_if_invalid (loops), loose_route,
    # then _prepare_branch / _forwarded_request (the stamp of received / rport and the
    # edits in one copy: forward_request), and the client transaction's bytes().
    has_looped(m, OURS)
    request, _ = strip_own_routes(m, OURS)
    target_of(request, None)
    digest = loop_hash(m, m.top_via)
    forwarded = forward_request(
        request,
        via=via_value(PROXY, f"{BRANCH_PREFIX}{digest}.1"),
        record_route=(record_route_value(PROXY),),
        source=CALLER,
    )
    len(bytes(forwarded))  # the RFC 3261 §18.1.1 size check
    bytes(forwarded)  # the client transaction's
    return forwarded


def forward_response(m: Response) -> bytes:
    # As ProxyTransaction relays a response upstream: our Via goes (§16.7 step 3).
    return bytes(m.without_first_value("via"))


def call_messages(call: int = 0) -> dict[str, bytes]:
    # The six messages a proxy receives in a call (sipp's built-in uac and uas), the
    # responses as the callee builds them from the INVITE we forwarded. Each `call` has
    # its own users, hosts and Call-ID: nothing is shared between calls.
    head, _, body = MESSAGE.partition(b"\r\n\r\n")
    for old, new in ((b"alice", b"alice%d"), (b"bob", b"bob%d"), (b"a84b4c76", b"c%d")):
        head = head.replace(old, new % call)
    data = head + b"\r\n\r\n" + body
    invite = parse_message(data)
    assert isinstance(invite, Request)
    forwarded = forward_invite(invite)
    sdp = invite.body.replace(b"192.0.2.101", b"192.0.2.200")
    contact = (("Contact", f"<sip:bob{call}@192.0.2.200:5080;transport=UDP>"),)
    ringing = build_response(forwarded, 180, to_tag="bob-1", headers=contact)
    ok = build_response(
        forwarded,
        200,
        to_tag="bob-1",
        headers=(*contact, ("Content-Type", "application/sdp")),
        body=sdp,
    )
    in_dialog = (
        f"{{method}} sip:bob{call}@192.0.2.200:5080 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.101:5060;branch=z9hG4bK776asdhd{n};rport\r\n"
        "Max-Forwards: 70\r\n"
        "Route: <sip:10.0.0.1:5060;lr>\r\n"
        f"To: Bob <sip:bob{call}@biloxi.example.com>;tag=bob-1\r\n"
        f"From: Alice <sip:alice{call}@atlanta.example.com>;tag=1928301774\r\n"
        f"Call-ID: c{call}e66710@pc33.atlanta.example.com\r\n"  # the INVITE's
        "CSeq: {cseq} {method}\r\n"
        f"Contact: <sip:alice{call}@192.0.2.101:5060>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    ok_bye = build_response(
        parse_message(in_dialog.format(method="BYE", cseq=314160, n="s").encode()),
        200,
        to_tag="bob-1",
    )
    return {
        "INVITE": data,
        "180": bytes(ringing.with_header_first("via", "SIP/2.0/UDP 10.0.0.1:5060;branch=x")),
        "200 INVITE": bytes(ok),
        "ACK": in_dialog.format(method="ACK", cseq=314159, n="a").encode(),
        "BYE": in_dialog.format(method="BYE", cseq=314160, n="s").encode(),
        "200 BYE": bytes(ok_bye.with_header_first("via", "SIP/2.0/UDP 10.0.0.1:5060;branch=y")),
    }


def accepted(data: bytes) -> Request | Response:
    m = parse_message(data)
    check_message(m)
    return m


def time_edits(number: int, repeat: int) -> dict[str, float]:
    # The edits alone: on messages parsed and checked before the clock starts (each
    # message is edited once, as in the proxy: its cache is filled by the first edit).
    # Every call has its own users and hosts (see call_messages), so that nothing one
    # call's messages leave behind serves another's. CPU time of this process
    # (time.process_time), not wall time: the machine is shared.
    calls = [call_messages(n) for n in range(number)]
    results: dict[str, float] = {}

    def cpu(function: Callable[[], object]) -> float:
        return timeit.Timer(function, timer=time.process_time).timeit(1) / number

    def whole_calls() -> None:
        for messages in calls:
            for data in messages.values():
                accepted(data)

    for _ in range(repeat):
        invites = [accepted(messages["INVITE"]) for messages in calls]
        oks = [accepted(messages["200 INVITE"]) for messages in calls]
        timings = {
            "edits INVITE": cpu(lambda ms=invites: [forward_invite(m) for m in ms]),  # type: ignore[misc]
            "edits 200": cpu(lambda ms=oks: [forward_response(m) for m in ms]),  # type: ignore[misc]
        }
        for name in calls[0]:
            datas = [messages[name] for messages in calls]
            timings[f"parse+check {name}"] = cpu(lambda ds=datas: [accepted(d) for d in ds])  # type: ignore[misc]
        timings["parse+check, a call's six"] = cpu(whole_calls)
        for name, seconds in timings.items():
            results[name] = min(results.get(name, float("inf")), seconds)
    return results


def edits_main(args: argparse.Namespace) -> int:
    print(f"machine: {machine()}")
    print(f"runs: best of {args.repeat} x {args.number} messages, one core\n")
    results = time_edits(args.number, args.repeat)
    print(f"{'':<28} {'us':>8}")
    for name, seconds in results.items():
        print(f"{name:<28} {seconds * 1e6:8.2f}")
    edits = results["edits INVITE"] * 2 + results["edits 200"] * 3
    print(f"\nedits of a call (INVITE, BYE; 180, 200, 200): ~{edits * 1e6:.1f} us")
    if args.profile:
        calls = iter([call_messages(n) for n in range(args.number)])

        def one_call() -> None:
            for name, data in next(calls).items():
                m = accepted(data)
                if name in ("INVITE", "BYE"):
                    forward_invite(m)  # type: ignore[arg-type]
                elif isinstance(m, Response):
                    forward_response(m)

        print(f"\n== cProfile, {args.number} calls (parse, check, edits)")
        profile(one_call, number=args.number)
    return 0


def once(work: str, number: int) -> int:
    calls = [call_messages(n) for n in range(number)]
    invites = [accepted(messages["INVITE"]) for messages in calls]
    oks = [accepted(messages["200 INVITE"]) for messages in calls]
    if work == "parse":
        for messages in calls:
            for data in messages.values():
                accepted(data)
    elif work == "edits":
        for m in invites:
            forward_invite(m)  # type: ignore[arg-type]
        for m in oks:
            forward_response(m)  # type: ignore[arg-type]
    return 0


def machine() -> str:
    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    python = f"Python {sys.version.split()[0]} ({platform.python_implementation()})"
    return f"{model}, {os.cpu_count()} CPUs; {python}"


def check_same_fields(sippy_a) -> None:
    ours = triosip_a()
    theirs = sippy_a()
    # sippy gives sent-by as (host, port), CSeq and tags the same way.
    assert ours[0] == theirs[0], (ours, theirs)
    assert ours[2:] == theirs[2:], (ours, theirs)
    forwarded = parse_message(triosip_b())
    assert isinstance(forwarded, Request)
    assert forwarded.top_via.text == OUR_VIA
    assert forwarded.max_forwards == 69
    assert [str(r.uri) for r in forwarded.record_route] == ["sip:10.0.0.1;lr"]


def profile(function, *, number: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(number):
        function()
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(14)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=20000, help="messages per run")
    parser.add_argument("--repeat", type=int, default=7, help="runs; the best counts")
    parser.add_argument("--profile", action="store_true", help="cProfile triosip (a), (b)")
    parser.add_argument("--edits", action="store_true", help="the edits and messages of a call")
    parser.add_argument("--once", choices=("setup", "parse", "edits"), help="see above")
    args = parser.parse_args(argv)
    if args.once:
        return once(args.once, args.number)
    if args.edits:
        return edits_main(args)

    sippy_a, sippy_b = sippy_functions()
    check_same_fields(sippy_a)
    print(f"machine: {machine()}")
    lines = MESSAGE.count(b"\r\n", 0, MESSAGE.find(b"\r\n\r\n"))
    print(f"message: {len(MESSAGE)} bytes, {lines} header lines")
    print(f"runs: best of {args.repeat} x {args.number} messages, one core\n")

    functions = {
        "sippy (a)": sippy_a,
        "sippy (b)": sippy_b,
        "triosip (a)": triosip_a,
        "triosip (b)": triosip_b,
        "triosip (c)": triosip_c,
        "triosip (d)": triosip_d,
        "triosip (e)": triosip_e,
    }
    # Runs interleave (sippy first in each round: its cost per message is the budget), so
    # that whatever else the machine does weighs on both; each figure is the best run.
    results = dict.fromkeys(functions, float("inf"))
    for _ in range(args.repeat):
        for name, function in functions.items():
            seconds = timeit.timeit(function, number=args.number) / args.number
            results[name] = min(results[name], seconds)
    labels = {
        "a": "parse + matching fields",
        "b": "(a) + Via, Max-Forwards, Record-Route, bytes",
        "c": "(a) + check_message",
        "d": "(b) + Request-URI, all Vias, Route (proxy reads)",
        "e": "(d) + check_message",
    }
    print(f"{'':<12} {'workload':<48} {'us/msg':>8} {'msgs/s':>9}")
    for name, seconds in results.items():
        parser, workload = name.split()
        label = f"{workload} {labels[workload[1]]}"
        print(f"{parser:<12} {label:<48} {seconds * 1e6:8.2f} {1 / seconds:9.0f}")
    print()
    for workload in ("a", "b"):
        ratio = results[f"sippy ({workload})"] / results[f"triosip ({workload})"]
        print(f"({workload}) triosip is {ratio:.1f}x sippy")
    if args.profile:
        for name, function in (("(a)", triosip_a), ("(b)", triosip_b)):
            print(f"\n== cProfile, triosip {name}, {args.number} messages")
            profile(function, number=args.number)
    return 0


if __name__ == "__main__":
    sys.exit(main())
