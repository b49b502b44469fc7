"""Sample SIP messages for the tests, written for triosip in the spirit of RFC 4475.

Each message is built from a list of lines (joined with CRLF) plus a body, so that the
tables read like the wire and Content-Length can be computed where the case wants it.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import settings

CRLF = b"\r\n"
BENCH_INVITE = (Path(__file__).parents[2] / "bench" / "messages" / "invite_sdp.sip").read_bytes()

# Bounded so that the whole of tests/sip stays fast (tests are quick).
FUZZ = settings(max_examples=500, deadline=None)
FUZZ_SMALL = settings(max_examples=100, deadline=None)


def message(*lines: str | bytes, body: bytes = b"", length: int | str | None = -1) -> bytes:
    """Lines joined with CRLF, a blank line, then the body.

    ``length=-1`` adds a correct Content-Length; None adds none; anything else is
    written as given.
    """
    raw = [line.encode() if isinstance(line, str) else line for line in lines]
    if length == -1:
        raw.append(b"Content-Length: %d" % len(body))
    elif length is not None:
        raw.append(b"Content-Length: " + str(length).encode())
    return CRLF.join(raw) + CRLF + CRLF + body


def request(
    method: str = "INVITE",
    uri: str = "sip:bob@biloxi.example.com",
    *extra: str | bytes,
    via: str = "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
    cseq: str | None = None,
    body: bytes = b"",
    length: int | str | None = -1,
    start_line: str | bytes | None = None,
) -> bytes:
    """A small valid request; `extra` lines go after the mandatory ones."""
    return message(
        start_line if start_line is not None else f"{method} {uri} SIP/2.0",
        f"Via: {via}",
        "Max-Forwards: 70",
        "To: Bob <sip:bob@biloxi.example.com>",
        "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
        "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
        f"CSeq: {cseq if cseq is not None else '314159 ' + method}",
        *extra,
        body=body,
        length=length,
    )


def response(status_line: str = "SIP/2.0 200 OK", *extra: str | bytes, body: bytes = b"") -> bytes:
    """A small valid response."""
    return message(
        status_line,
        "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;received=192.0.2.1",
        "To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf",
        "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
        "Call-ID: a84b4c76e66710@pc33.atlanta.example.com",
        "CSeq: 314159 INVITE",
        *extra,
        body=body,
    )


# A body with binary parts: every byte value, a blank line, a NUL, and "\r\n\r\n"
# inside the second part (only Content-Length may say where the body ends).
BINARY_PART = bytes(range(256)) + b"\r\n\r\n\x00tail"
MULTIPART_BODY = (
    b"--boundary42\r\n"
    b"Content-Type: application/sdp\r\n"
    b"\r\n"
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0\r\n"
    b"\r\n"
    b"--boundary42\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: binary\r\n"
    b"\r\n" + BINARY_PART + b"\r\n"
    b"--boundary42--\r\n"
)

LONG_VALUE = "x" * 4000
MANY_VIAS = tuple(
    f"Via: SIP/2.0/UDP proxy{n}.example.net:5060;branch=z9hG4bK-hop{n};received=192.0.2.{n}"
    for n in range(1, 41)
)

# Every valid message of the tests, with a name (pytest ids) — used by the property tests
# as seeds to mutate.
VALID: dict[str, bytes] = {
    "bench invite": BENCH_INVITE,
    "plain invite": request(),
    "plain 200": response(),
    # -- whitespace and folding (RFC 4475 §3.1.1.1 "wsinv" in spirit)
    "whitespace around colons": message(
        "OPTIONS sip:carol@chicago.example.com SIP/2.0",
        "Via  :   SIP/2.0 / UDP   192.0.2.2 ; branch = z9hG4bK-ws1 ;rport",
        "MAX-FORWARDS:\t70",
        "to\t:\t<sip:carol@chicago.example.com>",
        'from:"J Rosenberg \\\\\\"" <sip:jdrosen@example.com>  ;  tag = 98asjd8',
        "call-id:\t\t0ha0isndaksdj@192.0.2.2",
        "cseq:   8   OPTIONS",
        "Subject:",
        "X-Empty:   ",
    ),
    "folded headers": message(
        "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0",
        "TO :",
        " sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n",
        'from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>',
        "  ;",
        "  tag = 98asjd8",
        "MaX-fOrWaRdS: 0068",
        "Call-ID: 0ha0isndaksdj@192.0.2.1",
        "cseq: 0009",
        "  INVITE",
        "Via  : SIP  /   2.0",
        " /UDP",
        "    192.0.2.2;branch=390skdjuw",
        "s :",
        "NewFangledHeader:   newfangled value",
        " continued newfangled value",
        "UnknownHeaderWithUnusualValue: ;;,,;;,;",
        "Content-Type: application/sdp",
        "v:  SIP/2.0/TCP spindle.example.com   ;",
        "  branch  =   z9hG4bK9ikj8  ,",
        " SIP  /    2.0   / UDP  192.168.255.111   ; branch=",
        " z9hG4bK30239",
        'm:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =',
        "      newvalue ;",
        "  secondparam ; q = 0.33",
    ),
    "compact forms": message(
        "MESSAGE sip:bob@biloxi.example.com SIP/2.0",
        "v: SIP/2.0/UDP 192.0.2.3:5060;branch=z9hG4bK-compact",
        "t: <sip:bob@biloxi.example.com>",
        "f: <sip:alice@atlanta.example.com>;tag=c1",
        "i: compact@192.0.2.3",
        "CSeq: 1 MESSAGE",
        "c: text/plain",
        "k: 100rel",
        "o: presence",
        "u: presence, dialog",
        "r: <sip:carol@example.com>",
        "b: <sip:alice@atlanta.example.com>",
        "x: 1800",
        "a: *;audio",
        "j: *;video",
        "d: proxy",
        "e: gzip",
        "s: compact",
        "l: 5",
        body=b"hello",
        length=None,
    ),
    # -- escapes
    "escapes": message(
        "INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0",
        "To: sip:%75se%72@example.com",
        'From: "\\"Bob\\" \\\\ the \\x builder" <sip:I%20have%20spaces@example.net>;tag=938',
        "Max-Forwards: 87",
        "i: esc01.239409asdfakjkn23onasd0-3234",
        "CSeq: 234234 INVITE",
        "Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw",
        "C: application/sdp",
        'Contact: "caf\u00e9 \\"au lait\\"" '
        "<sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>",
        body=b"v=0\r\n",
    ),
    "escaped null in uri": message(
        "REGISTER sip:example.com SIP/2.0",
        "To: sip:null-%00-null@example.com",
        "From: sip:null-%00-null@example.com;tag=839923423",
        "Max-Forwards: 70",
        "Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd",
        "CSeq: 14398234 REGISTER",
        "Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw",
        "Contact: <sip:%00@host5.example.com>",
        'Contact: <sip:%00%00@host5.example.com>, "x, y" <sip:z@host5.example.com>',
        "L: 0",
        length=None,
    ),
    # -- long values
    "long values": message(
        "INVITE sip:long" + "a" * 300 + "@example.net SIP/2.0",
        "To: " + '"' + "I have a user name of " + "extreme " * 40 + 'proportion" '
        "<sip:user@example.com:6000;unknownparam1=very" + "long" * 50 + "value>",
        "From: sip:amazinglylongcallername" + "x" * 200 + "@example.net;tag=12982" + "4" * 200,
        "Call-ID: longreq." + "onereallyreallyreallyreallyverylongcallid" * 20,
        "CSeq: 3882340 INVITE",
        "Max-Forwards: 70",
        *MANY_VIAS,
        "X-Long: " + LONG_VALUE,
        "Contact: <sip:amazinglylongcallername@host5.example.net>",
    ),
    # -- odd but legal tokens and methods
    "odd tokens and methods": message(
        "!interesting-Method0123456789_*+`.%indeed'~ "
        "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
        "@example.com SIP/2.0",
        "Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~",
        'To: "BEL:\\\x07 DEL:\\\x7f" '
        "<sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com>",
        "From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>"
        ";fromParam''~+*_!.-%=\"\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439\""
        ";tag=_token~1'+`*%!-.",
        "Call-ID: intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{",
        "CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~",
        "Max-Forwards: 255",
        "extensionHeader-!.%*+_`'~:\ufeff\u5927\u505c\u96fb",
        "Content-Length: 0",
        length=None,
    ),
    # -- multipart bodies with binary parts
    "multipart binary": request(
        "INVITE",
        "sip:bob@biloxi.example.com",
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed;boundary="boundary42"',
        body=MULTIPART_BODY,
    ),
    # -- unknown schemes and transports
    "unknown schemes and transports": message(
        "OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0",
        "To: sip:user@example.com",
        "From: sip:caller@example.net;tag=384",
        "Max-Forwards: 3",
        "Call-ID: unkscm.nasdfasser0q239nwsdfasdkl34",
        "CSeq: 3923423 OPTIONS",
        "Via: SIP/2.0/FROBNICATE host9.example.com;branch=z9hG4bKkdjuw",
        "Contact: <soap.beep://192.0.2.103:3002>, <tel:+1-201-555-0123;ext=22>",
        "Route: <im:user@example.com>, <sips:proxy.example.com;lr>",
    ),
    "tel uri": request("INVITE", "tel:+1-201-555-0123;phone-context=example.com"),
    # -- IPv6 references
    "ipv6": message(
        "REGISTER sip:[2001:db8::10]:5070 SIP/2.0",
        "To: sip:user@[2001:db8::10]",
        "From: sip:user@example.com;tag=81x2",
        "Via: SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111;received=2001:db8::9:255",
        "Via: SIP/2.0/UDP [::ffff:192.0.2.1]:5060;maddr=[2001:db8::1];branch=z9hG4bK-v6",
        "Call-ID: SSG9559905523997077@hlau_4100",
        "Max-Forwards: 70",
        'Contact: "Caller" <sip:caller@[2001:db8::9:255];transport=udp>',
        "CSeq: 98176 REGISTER",
    ),
    # -- empty reason phrases
    "empty reason": response("SIP/2.0 100 "),
    "reason with odd text": response("SIP/2.0 699 Ca\u00e7a va\tbien? 100% (yes)"),
    # -- the datagram's own rules
    "no content-length (udp)": message(
        "NOTIFY sip:b@h SIP/2.0",
        "Via: SIP/2.0/UDP h;branch=z9hG4bK-n",
        "From: <sip:a@h>;tag=1",
        "To: <sip:b@h>",
        "Call-ID: nocl",
        "CSeq: 2 NOTIFY",
        "Event: dialog",
        body=b"the rest of the datagram",
        length=None,
    ),
    "lower-case version": request(start_line="INVITE sip:bob@biloxi.example.com sip/2.0"),
    "combined via line": request(
        "OPTIONS",
        "sip:bob@biloxi.example.com",
        via="SIP/2.0/UDP first.example.com;branch=z9hG4bK-1, SIP/2.0/TCP second.example.com"
        ";branch=z9hG4bK-2;received=192.0.2.9 , SIP/2.0/UDP third.example.com",
    ),
    "record-route and route": request(
        "BYE",
        "sip:bob@192.0.2.4",
        "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
        "Route: <sip:p3.example.com;lr>",
        "Record-Route: <sip:rr.example.com;lr>",
    ),
}


# Bytes that mean something to the grammar, for mutations: separators, quotes, line
# ends, the bytes of broken UTF-8, and parameter names the parser looks for.
SPECIAL = [
    b":",
    b"\r\n",
    b"\r\n ",
    b"\r\n\t",
    b" ",
    b"\t",
    b"\x00",
    b";",
    b",",
    b"<",
    b">",
    b'"',
    b"\\",
    b"=",
    b"%",
    b"@",
    b"[",
    b"]",
    b"\n",
    b"\r",
    b"\xff",
    b"\xc3",
    b"tag=",
    b";branch=",
    b";rport",
    b";ttl=",
    b";received=",
    b"SIP/2.0",
    b"Content-Length: 9999\r\n",
    b"l: 5\r\n",
    b"99999999999",
    b"2147483648",
    b"-1",
    b"v: ",
    b"Via: SIP/2.0/UDP x\r\n",
    b"sip:",
    b"tel:",
    b"*",
    b"?",
    b"&",
    b"\r\n\r\n",
    b"[::1]",
    b"65536",
]
