"""Typed header field values parsed from untrusted text: Via, NameAddr, CSeq.

Theory of operation
-------------------
Every value here is *text-backed*: a frozen slotted dataclass whose one field is the
text as it came on the wire, plus private slots holding what was parsed out of it. Its
components (``via.host``, ``addr.tag``…) are properties read from that parse. So:

* ``str(value)`` gives back the exact text received, and a proxy forwards what it did not
  change byte for byte (RFC 3261 §16.6 asks for nothing else);
* two values are equal when their text is, and they hash like their text;
* building one from a parse the message parser already did costs two slot stores, which
  is what lets the parser check the top Via, From and To of every message eagerly and
  still hand them out for free (see ``_parser.py``).

Constructing one from text (``Via.parse(text)`` or ``Via(text)``) parses and validates it
and raises `ParseError` for anything the grammar in ``_abnf.py`` refuses. Edits
(``with_params``) recompose the text and parse it again, raising
`LocalSIPError` if our own change made it invalid.

The private slots are set with ``object.__setattr__`` because the classes are frozen:
they are a cache of a pure function of ``text``, never state, so the value semantics
hold. Nothing here may raise anything but `ParseError` on text from the wire. The
`URI` inside an address is built the same way, in ``_uri.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self, TypeAlias

from triosip.sip import _abnf
from triosip.sip._errors import LocalSIPError
from triosip.sip._parse_error import ParseError
from triosip.sip._text import show, split_commas
from triosip.sip._uri import URI, _compose_params, _params, uri_of

if TYPE_CHECKING:
    from collections.abc import Mapping

_new = object.__new__
_set = object.__setattr__


# ---------------------------------------------------------------------------------------
# Via

# The groups of one via-parm, in _abnf.via_parm's order (protocol … rport_value).
ViaParts: TypeAlias = tuple[str | None, ...]
# The groups of one address, in _abnf.address's order (quoted … tag).
AddressParts: TypeAlias = tuple[str | None, ...]


class _ViaSlots:
    __slots__ = ("_params", "_parts")
    _parts: ViaParts
    # None until read; set at creation, as NameAddr's (reading an unset slot raises).
    _params: Mapping[str, str | None] | None


@dataclass(frozen=True, slots=True)
class Via(_ViaSlots):
    """One via-parm of a Via header (RFC 3261 §20.42, §18.2.1; RFC 3581 rport).

    Attributes:
        text: the via-parm exactly as received (one of the values of a Via line).
    """

    text: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "_parts", via_parts(self.text))
        object.__setattr__(self, "_params", None)

    @classmethod
    def parse(cls, text: str) -> Via:
        """Parse one via-parm.

        Raises:
            ParseError: the text is not one via-parm (RFC 3261 §25.1).
        """
        return cls(text)

    @classmethod
    def make(cls, transport: str, host: str, port: int | None = None, **params: str | None) -> Via:
        """Build a Via, e.g. ``Via.make("UDP", "192.0.2.1", 5060, branch=..., rport=None)``.

        Raises:
            LocalSIPError: the parts do not make a valid via-parm.
        """
        hostport = host if port is None else f"{host}:{port}"
        text = f"SIP/2.0/{transport.upper()} {hostport}{_compose_params(params)}"
        try:
            return cls(text)
        except ParseError as exc:
            raise LocalSIPError(f"Invalid Via {text!r}: {exc.reason}") from None

    def __str__(self) -> str:
        return self.text

    @property
    def protocol(self) -> str:
        """protocol-name/protocol-version, e.g. "SIP/2.0" (upper-case, no spaces)."""
        protocol = self._parts[_abnf.VIA_PROTOCOL] or ""
        return protocol.replace(" ", "").replace("\t", "").upper()

    @property
    def transport(self) -> str:
        """The transport, upper-case: "UDP", "TCP", "TLS", "SCTP", "WS" or another token."""
        return (self._parts[_abnf.VIA_TRANSPORT] or "").upper()

    @property
    def host(self) -> str:
        """The sent-by host as it came (IPv6 brackets kept)."""
        return self._parts[_abnf.VIA_HOST] or ""

    @property
    def port(self) -> int | None:
        """The sent-by port, if given."""
        port = self._parts[_abnf.VIA_PORT]
        return None if port is None else int(port)

    @property
    def sent_by(self) -> tuple[str, int | None]:
        """(host, port) of the sent-by (RFC 3261 §17.2.3 matches on it)."""
        # Read on every request by the transaction layer: indexes spelled out.
        parts = self._parts
        port = parts[3]  # VIA_PORT
        return parts[2] or "", None if port is None else int(port)  # VIA_HOST

    @property
    def params(self) -> Mapping[str, str | None]:
        """via-params: names lower-cased, values as they came, None when valueless."""
        params = self._params
        if params is None:
            params = _params(self._parts[_abnf.VIA_PARAMS] or "", _abnf.VIA_PARAM)
            object.__setattr__(self, "_params", params)
        return params

    @property
    def branch(self) -> str | None:
        """The branch parameter (RFC 3261 §8.1.1.7), if any."""
        return self._parts[5]  # VIA_BRANCH

    @property
    def received(self) -> str | None:
        """The received parameter (RFC 3261 §18.2.1), if any."""
        return self._parts[_abnf.VIA_RECEIVED]

    @property
    def rport(self) -> str | None:
        """RFC 3581: None if absent, "" if present without a value, else its value."""
        parts = self._parts
        if parts[_abnf.VIA_RPORT] is None:
            return None
        return parts[_abnf.VIA_RPORT_VALUE] or ""

    @property
    def has_rport(self) -> bool:
        """Whether the rport parameter is present (with or without a value)."""
        return self._parts[_abnf.VIA_RPORT] is not None

    @property
    def maddr(self) -> str | None:
        """The maddr parameter, if any."""
        return self._parts[_abnf.VIA_MADDR]

    @property
    def ttl(self) -> int | None:
        """The ttl parameter (0..255), if any."""
        ttl = self._parts[_abnf.VIA_TTL]
        return None if ttl is None else int(ttl)

    def with_params(self, **params: str | None) -> Via:
        """This Via with parameters set or added, e.g. ``with_params(received=..., rport=...)``.

        A value of None sets a parameter without a value. Other parameters keep their
        order and values (names lower-cased, no whitespace around ``;`` and ``=``); the
        sent-protocol and sent-by are kept as they came.

        Raises:
            LocalSIPError: a value makes the Via invalid.
        """
        # RFC 3261 §18.2.1 / RFC 3581 §4: a server adds received and fills rport on the
        # top Via; existing parameters keep their place, new ones go last.
        current = dict(self.params)
        for name, value in params.items():
            current[name.lower()] = value
        own = self._parts[_abnf.VIA_PARAMS] or ""
        text = self.text[: len(self.text) - len(own)] + _compose_params(current)
        try:
            return Via(text)
        except ParseError as exc:
            raise LocalSIPError(f"Invalid Via {text!r}: {exc.reason}") from None

    def with_params_text(self, **params: str | None) -> str:
        """``str(self.with_params(**params))``, spliced without parsing when it can be.

        When this Via's parameters are already written as `with_params` writes them
        (lower-case names, each once, no whitespace, no quoted string) and the new
        values are a ``received`` IPv4 address and an ``rport`` port (the stamp of
        RFC 3261 §18.2.1 and RFC 3581 §4 on nearly every request), the text is put
        together by string operations alone; anything else goes through `with_params`.

        Raises:
            LocalSIPError: a value makes the Via invalid.
        """
        own = self._parts[_abnf.VIA_PARAMS] or ""
        if not _simple_stamp(params) or _PLAIN_PARAMS(own) is None:
            return str(self.with_params(**params))
        # ";a=1;b" -> ["", "a=1", "b"], names ["a", "b"]: without quoted strings, ";"
        # only separates.
        items = own.split(";")
        names = _PARAM_NAMES(own)
        if len(set(names)) != len(names):
            return str(self.with_params(**params))
        for name, value in params.items():
            item = f"{name}={value}"
            if name in names:  # in its place, as with_params keeps it
                items[names.index(name) + 1] = item
            else:
                items.append(item)
        # The text ends with its parameters (and they hold no whitespace, see above).
        return self.text.removesuffix(own) + ";".join(items)


# Parameters as `with_params` writes them: ";name" or ";name=value", names lower-case
# tokens, values without whitespace or quotes (then ";" only separates); and their names.
_PLAIN_PARAMS = re.compile(
    rf"(?:;[{_abnf.TOKEN_CHARS.replace('A-Z', '')}]*+(?:=[^;\" \t]*+)?)*+"
).fullmatch
_PARAM_NAMES = re.compile(r";([^=;]*)").findall
_IPV4_RE = re.compile(_abnf.IPV4ADDRESS)


def _simple_stamp(params: Mapping[str, str | None]) -> bool:
    # Values that make a valid Via whatever they join: an IPv4 received, a port rport.
    for name, value in params.items():
        if value is None:
            return False
        if name == "received":
            if _IPV4_RE.fullmatch(value) is None:
                return False
        elif name == "rport":
            if not (value.isascii() and value.isdigit() and len(value) <= 5):
                return False
            if int(value) > 65535:
                return False
        else:
            return False
    return True


def via_problem(value: str) -> str:
    """What is wrong with a Via value, said closer (only on the error path)."""
    for name, pattern, limit in (
        ("port", r":[ \t]*([0-9]+)", 65535),
        ("ttl", r";[ \t]*ttl[ \t]*=[ \t]*([0-9]+)", 255),
        ("rport", r";[ \t]*rport[ \t]*=[ \t]*([0-9]+)", 65535),
    ):
        for number in re.findall(pattern, value, re.IGNORECASE):
            if len(number) > 5 or int(number) > limit:
                return f"Bad Via: {name} {show(number)}"
    return f"Bad Via {show(value)}"


def via_parts(text: str) -> ViaParts:
    """The parts of one via-parm (a Via's text).

    Raises:
        ParseError: it is not one via-parm.
    """
    m = _abnf.VIA_FIRST.fullmatch(text)
    if m is None or m.group("rest") is not None:
        raise ParseError(via_problem(text))
    return m.groups()[: _abnf.VIA_GROUPS]


def new_via(text: str, parts: ViaParts) -> Via:
    """A Via from parts the parser already checked (no second parse, no __init__)."""
    via: Via = _new(Via)
    _set(via, "text", text)
    _set(via, "_parts", parts)
    _set(via, "_params", None)
    return via


def first_via(value: str) -> tuple[str, ViaParts, str | None]:
    """Check the first via-parm of a Via line's value.

    Returns:
        The text of the first via-parm, its parts, and what follows its comma (None if
        it is alone on the line).

    Raises:
        ParseError: it is not a via-parm.
    """
    m = _abnf.VIA_FIRST.fullmatch(value)
    if m is None:
        raise ParseError(via_problem(value))
    groups = m.groups()
    parts = groups[: _abnf.VIA_GROUPS]
    rest = groups[_abnf.VIA_GROUPS]
    if rest is None:
        return value.rstrip(" \t"), parts, None
    return value[: m.end("params")], parts, rest


def parse_vias(values: list[str]) -> tuple[Via, ...]:
    """Every via-parm of the given Via values, top first.

    Raises:
        ParseError: one of them is not a via-parm.
    """
    vias: list[Via] = []
    for value in values:
        # RFC 3261 §7.3.1: "Via: a, b" and two lines "Via: a" / "Via: b" are the same.
        for element in split_commas(value):
            if not element:
                raise ParseError("Bad Via: empty value")
            vias.append(new_via(element, via_parts(element)))
    return tuple(vias)


# ---------------------------------------------------------------------------------------
# name-addr / addr-spec (From, To, Contact, Route, Record-Route, ...)


class _NameAddrSlots:
    __slots__ = ("_params", "_parts", "_uri")
    _parts: AddressParts
    # None until read; set at creation (check_message reads every address's URI, and
    # reading an unset slot raises an AttributeError, which costs more than the store).
    _params: Mapping[str, str | None] | None
    _uri: URI | None


@dataclass(frozen=True, slots=True)
class NameAddr(_NameAddrSlots):
    """An address with its header parameters: From, To, Contact, Route, Record-Route.

    ``name-addr`` or ``addr-spec`` followed by ``;params`` (RFC 3261 §20.10, §20.20,
    §20.39, §25.1). The URI inside is parsed when `uri` is first read.

    Attributes:
        text: the value exactly as received.
    """

    text: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "_parts", address_parts(self.text))
        object.__setattr__(self, "_uri", None)
        object.__setattr__(self, "_params", None)

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        """Parse a name-addr or addr-spec with its parameters.

        Raises:
            ParseError: the text is not one (RFC 3261 §25.1).
        """
        return cls(text)

    @classmethod
    def make(
        cls, uri: URI | str, display_name: str | None = None, **params: str | None
    ) -> NameAddr:
        """Build ``"display name" <uri>;params``; the display name is quoted and escaped.

        Raises:
            LocalSIPError: the parts do not make a valid address.
        """
        name = ""
        if display_name is not None:
            escaped = display_name.replace("\\", "\\\\").replace('"', '\\"')
            name = f'"{escaped}" '
        text = f"{name}<{uri}>{_compose_params(params)}"
        try:
            return cls(text)
        except ParseError as exc:
            raise LocalSIPError(f"Invalid address {text!r}: {exc.reason}") from None

    def __str__(self) -> str:
        return self.text

    @property
    def display_name(self) -> str | None:
        """The display name: unquoted with its escapes resolved, or None."""
        parts = self._parts
        quoted = parts[_abnf.ADDR_QUOTED]
        if quoted is not None:
            # RFC 3261 §25.1 quoted-pair: a backslash stands for the character after it.
            return _abnf.QUOTED_PAIR_RE.sub(r"\1", quoted[1:-1])
        return parts[_abnf.ADDR_TOKENS]

    @property
    def uri(self) -> URI:
        """The URI (parsed on first access).

        Raises:
            ParseError: the URI is malformed.
        """
        uri = self._uri
        if uri is None:
            uri = uri_of(self.uri_text)
            object.__setattr__(self, "_uri", uri)
        return uri

    @property
    def uri_text(self) -> str:
        """The URI's text as it came, without parsing it."""
        parts = self._parts
        return parts[_abnf.ADDR_URI] or parts[_abnf.ADDR_BARE] or ""

    @property
    def params(self) -> Mapping[str, str | None]:
        """Header parameters (after ``>`` or the addr-spec): names lower-cased."""
        params = self._params
        if params is None:
            params = _params(self._parts[_abnf.ADDR_PARAMS] or "", _abnf.PARAM)
            object.__setattr__(self, "_params", params)
        return params

    @property
    def tag(self) -> str | None:
        """The tag parameter (RFC 3261 §19.3), if any."""
        return self._parts[5]  # ADDR_TAG

    def with_tag(self, tag: str) -> NameAddr:
        """This address with ``;tag=`` set (added, or replacing the one it has).

        Raises:
            LocalSIPError: the tag is not a token.
        """
        return self.with_params(tag=tag)

    def with_params(self, **params: str | None) -> NameAddr:
        """This address with header parameters set or added (None: without a value).

        Raises:
            LocalSIPError: a value makes the address invalid.
        """
        current = dict(self.params)
        for name, value in params.items():
            current[name.lower()] = value
        own = self._parts[_abnf.ADDR_PARAMS] or ""
        text = self.text[: len(self.text) - len(own)] + _compose_params(current)
        try:
            return NameAddr(text)
        except ParseError as exc:
            raise LocalSIPError(f"Invalid address {text!r}: {exc.reason}") from None


def new_name_addr(text: str, parts: AddressParts) -> NameAddr:
    """A NameAddr from parts the parser already checked (no second parse)."""
    addr: NameAddr = _new(NameAddr)
    _set(addr, "text", text)
    _set(addr, "_parts", parts)
    _set(addr, "_uri", None)
    _set(addr, "_params", None)
    return addr


def address_parts(text: str) -> AddressParts:
    """The parts of an address (a NameAddr's text).

    Raises:
        ParseError: it is not a name-addr or addr-spec with parameters.
    """
    m = _abnf.ADDRESS_VALUE.fullmatch(text)
    if m is None:
        raise ParseError(f"Bad address: {address_problem(text)}")
    return m.groups()


def check_address(value: str, header: str) -> AddressParts:
    """Check a From / To value; returns its parts.

    Raises:
        ParseError: it is not a name-addr or addr-spec with parameters.
    """
    m = _abnf.ADDRESS_VALUE.fullmatch(value)
    if m is None:
        raise ParseError(f"Bad {header} header: {address_problem(value)}")
    return m.groups()


def address_problem(value: str) -> str:
    """What is wrong with an address, said closer (only on the error path)."""
    if not value:
        return "empty value"
    if (value.count('"') - value.count('\\"')) % 2:
        return "unterminated quoted string"
    if value.count("<") != value.count(">"):
        return "unbalanced <>"
    return show(value)


def parse_addresses(values: list[str], *, header: str, brackets: bool) -> tuple[NameAddr, ...]:
    """Every address of the given header line values, top first.

    Args:
        values: the values of each line of the header.
        header: its name, for error messages.
        brackets: name-addr required (Route, Record-Route: RFC 3261 §25.1 rec-route).

    Raises:
        ParseError: one of them is malformed.
    """
    out: list[NameAddr] = []
    # RFC 3261 §20.10: Contact may be an addr-spec; §20.30, §20.34: Route and
    # Record-Route are name-addr, so that their ;lr is the URI's, not the header's.
    pattern = _abnf.ROUTE_VALUE if brackets else _abnf.ADDRESS_VALUE
    for value in values:
        for element in split_commas(value):
            m = pattern.fullmatch(element)
            if m is None:
                raise ParseError(f"Bad {header} header: {address_problem(element)}")
            out.append(new_name_addr(element, m.groups()))
    return tuple(out)


# ---------------------------------------------------------------------------------------
# CSeq


@dataclass(frozen=True, slots=True)
class CSeq:
    """The CSeq header: sequence number and method (RFC 3261 §20.16).

    Attributes:
        number: the sequence number, 0 <= number < 2**31 (RFC 3261 §8.1.1.5).
        method: the method, case-sensitive as it came.
    """

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse a CSeq value.

        Raises:
            ParseError: not ``number method``, or the number is 2**31 or more.
        """
        number, method = check_cseq(text)
        return cls(int(number), method)


def check_cseq(value: str) -> tuple[str, str]:
    """Check a CSeq value; returns its number and method as text.

    Raises:
        ParseError: it is malformed or the number is too large.
    """
    m = _abnf.CSEQ.fullmatch(value)
    if m is None:
        # Only on the error path: say which half is wrong.
        number = value.split(" ", 1)[0]
        if number.isascii() and number.isdigit():
            if len(number) > 10:
                raise ParseError("Bad CSeq: number too large")
            raise ParseError(f"Bad CSeq: method {show(value[len(number) :].strip())}")
        raise ParseError(f"Bad CSeq: {show(value)}")
    number, method = m.group("number", "method")
    check_cseq_number(number)
    return number, method


def check_cseq_number(number: str) -> None:
    """RFC 3261 §8.1.1.5: the number is less than 2**31 (it has at most 10 digits).

    Raises:
        ParseError: it is not.
    """
    if len(number) == 10 and number > "2147483647":
        raise ParseError("Bad CSeq: number too large")


def new_cseq(number: str, method: str) -> CSeq:
    """A CSeq from checked parts, without the dataclass __init__."""
    cseq: CSeq = _new(CSeq)
    _set(cseq, "number", int(number))
    _set(cseq, "method", method)
    return cseq
