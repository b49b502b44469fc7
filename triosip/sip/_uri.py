"""URIs parsed from untrusted text: `URI` (sip, sips, tel, any absoluteURI).

A `URI` is text-backed like the header field values of ``_fields.py``: ``str(uri)`` is the
text as it came, its components are read from a parse kept in a private slot, and
`URI.replace` recomposes the text and parses it again. Nothing here may raise anything
but `ParseError` on text from the wire. The parameter helpers serve the header fields too.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from triosip.sip import _abnf
from triosip.sip._errors import LocalSIPError
from triosip.sip._parse_error import ParseError
from triosip.sip._text import show

if TYPE_CHECKING:
    import re
    from collections.abc import Mapping

_EMPTY: Mapping[str, str | None] = MappingProxyType({})
_EMPTY_HEADERS: Mapping[str, str] = MappingProxyType({})


def _params(text: str, pattern: re.Pattern[str]) -> Mapping[str, str | None]:
    # The text was validated by the caller's pattern, so the matches are contiguous.
    # RFC 3261 §7.3.1: parameter names are case-insensitive, values are not (in general),
    # so names are lower-cased and values kept; a name given twice keeps its last value,
    # like the captured groups (see _abnf.VIA_PARM).
    if not text:
        return _EMPTY
    return MappingProxyType(
        {m.group("name").lower(): m.group("value") for m in pattern.finditer(text)}
    )


def _compose_params(params: Mapping[str, str | None]) -> str:
    # ";name" for a parameter without a value (";lr", ";rport"), else ";name=value".
    return "".join([f";{k}" if v is None else f";{k}={v}" for k, v in params.items()])


def _port(text: str | None) -> int | None:
    # At most 5 ASCII digits, 0..65535: the grammar (_abnf.PORT) says so.
    return None if text is None else int(text)


class _Keep:
    """The type of `KEEP`, the default of `URI.replace` arguments that may be set to None."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "KEEP"


KEEP = _Keep()


class _URISlots:
    __slots__ = ("_parts",)
    # scheme, user, password, host, port, params, headers, opaque
    _parts: tuple[
        str,
        str | None,
        str | None,
        str,
        int | None,
        Mapping[str, str | None],
        Mapping[str, str],
        str,
    ]


@dataclass(frozen=True, slots=True)
class URI(_URISlots):
    """A SIP, SIPS, tel or other absolute URI (RFC 3261 §19.1, RFC 3966), as it came.

    ``URI(text)`` and ``URI.parse(text)`` validate the text. Components keep their
    %-escapes as they came; compare them yourself if you need RFC 3261 §19.1.4 equality.

    Attributes:
        text: the URI exactly as received (or as recomposed by `replace`).
    """

    text: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "_parts", _parse_uri(self.text))

    @classmethod
    def parse(cls, text: str) -> URI:
        """Parse a URI.

        Args:
            text: ``sip:``, ``sips:``, ``tel:`` or any ``scheme:`` absoluteURI text.

        Returns:
            The URI.

        Raises:
            ParseError: the text is not a URI of the grammar (RFC 3261 §25.1).
        """
        return cls(text)

    def __str__(self) -> str:
        return self.text

    @property
    def scheme(self) -> str:
        """The scheme, lower-case: "sip", "sips", "tel" or any other."""
        return self._parts[0]

    @property
    def user(self) -> str | None:
        """The user part as it came (%-escapes kept); for tel: the number."""
        return self._parts[1]

    @property
    def password(self) -> str | None:
        """The password of the userinfo, if any (RFC 3261 §19.1.1 discourages it)."""
        return self._parts[2]

    @property
    def host(self) -> str:
        """The host as it came, IPv6 brackets kept; "" for tel: and unknown schemes."""
        return self._parts[3]

    @property
    def port(self) -> int | None:
        """The port, if the URI gives one."""
        return self._parts[4]

    @property
    def params(self) -> Mapping[str, str | None]:
        """uri-parameters: names lower-cased, values as they came, None for ``;lr``."""
        return self._parts[5]

    @property
    def headers(self) -> Mapping[str, str]:
        """The ``?name=value&…`` headers, as they came."""
        return self._parts[6]

    @property
    def opaque(self) -> str:
        """Everything after ``scheme:``, as it came."""
        return self._parts[7]

    @property
    def host_port(self) -> str:
        """``host`` or ``host:port``."""
        port = self._parts[4]
        return self._parts[3] if port is None else f"{self._parts[3]}:{port}"

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter, lower-case, if any."""
        value = self._parts[5].get("transport")
        return value.lower() if value else None

    def replace(
        self,
        *,
        scheme: str | None = None,
        user: str | _Keep | None = KEEP,
        password: str | _Keep | None = KEEP,
        host: str | None = None,
        port: int | _Keep | None = KEEP,
        params: Mapping[str, str | None] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> URI:
        """A URI with some components changed, recomposed.

        Components not given stay as they are. ``user``, ``password`` and ``port`` may be
        set to None to remove them; pass `KEEP` (the default) to keep them.

        Returns:
            The new URI, its text recomposed from its components.

        Raises:
            LocalSIPError: the result is not a valid URI, or the scheme is neither
                sip, sips nor tel.
        """
        old_scheme, old_user, old_password, old_host, old_port, old_params, old_headers, _ = (
            self._parts
        )
        new_scheme = (scheme or old_scheme).lower()
        new_user = old_user if isinstance(user, _Keep) else user
        new_password = old_password if isinstance(password, _Keep) else password
        new_port = old_port if isinstance(port, _Keep) else port
        new_host = old_host if host is None else host
        new_params = old_params if params is None else params
        new_headers = old_headers if headers is None else headers
        if new_scheme == "tel":
            text = f"tel:{new_user or ''}{_compose_params(new_params)}"
        elif new_scheme in ("sip", "sips"):
            userinfo = ""
            if new_user is not None:
                userinfo = new_user if new_password is None else f"{new_user}:{new_password}"
                userinfo += "@"
            hostport = new_host if new_port is None else f"{new_host}:{new_port}"
            text = f"{new_scheme}:{userinfo}{hostport}{_compose_params(new_params)}"
            if new_headers:
                text += "?" + "&".join(f"{k}={v}" for k, v in new_headers.items())
        else:
            raise LocalSIPError(f"Cannot recompose a {new_scheme}: URI")
        try:
            return URI(text)
        except ParseError as exc:
            raise LocalSIPError(f"Invalid URI {text!r}: {exc.reason}") from None


# How many URIs `uri_of` and `check_uri` remember, and the longest they remember: a
# bound on their memory (a few MB) that no sender can raise, however many or long the
# URIs it sends.
_CACHED_URIS = 2048
_MAX_CACHED_LENGTH = 256


def uri_of(text: str) -> URI:
    """``URI(text)``, shared between the messages that hold the same URI text.

    The messages of a dialog carry the same From, To and Contact URIs, its in-dialog
    requests the same Request-URI and Route (a proxy meets its own Record-Route entry in
    every one of them): each text is parsed once while it is in use, not once per
    message. A URI is a value (frozen, its parts immutable), so sharing one is safe.

    Raises:
        ParseError: the text is not a URI of the grammar (never remembered).
    """
    if len(text) > _MAX_CACHED_LENGTH:
        return URI(text)
    return _remembered_uri(text)


@functools.lru_cache(maxsize=_CACHED_URIS)
def _remembered_uri(text: str) -> URI:
    # functools.lru_cache remembers only what returned: a ParseError is raised each time.
    return URI(text)


def check_uri(text: str) -> None:
    """Check a URI's text against the grammar, as `match_uri`, remembering what passed.

    For the URIs a proxy checks but seldom reads (From, To, Contact): matching is
    cheaper than building, and the texts of a dialog's messages are matched once.

    Raises:
        ParseError: the text is not a URI of the grammar (never remembered).
    """
    if len(text) > _MAX_CACHED_LENGTH:
        match_uri(text)
    else:
        _remembered_check(text)


@functools.lru_cache(maxsize=_CACHED_URIS)
def _remembered_check(text: str) -> bool:
    match_uri(text)
    return True


def _parse_uri(
    text: str,
) -> tuple[
    str,
    str | None,
    str | None,
    str,
    int | None,
    Mapping[str, str | None],
    Mapping[str, str],
    str,
]:
    # RFC 3261 §19.1.1 (sip, sips), RFC 3966 (tel), else an absoluteURI (§25.1) kept
    # opaque: a proxy may route on the first two and only carries the others.
    m = match_uri(text)
    pattern = m.re
    if pattern is _abnf.SIP_URI_RE:
        scheme, user, password, host, port, params, headers = m.group(
            "scheme", "user", "password", "host", "port", "params", "headers"
        )
        return (
            scheme.lower(),
            user,
            password,
            host,
            _port(port),
            _params(params, _abnf.URI_PARAM),
            MappingProxyType(
                {h.group("name"): h.group("value") for h in _abnf.URI_HEADER_RE.finditer(headers)}
            )
            if headers
            else _EMPTY_HEADERS,
            text[len(scheme) + 1 :],
        )
    if pattern is _abnf.TEL_URI_RE:
        return (
            "tel",
            m.group("user"),
            None,
            "",
            None,
            _params(m.group("params"), _abnf.TEL_PARAM),
            _EMPTY_HEADERS,
            text[4:],
        )
    scheme = m.group("scheme")
    return (scheme.lower(), None, None, "", None, _EMPTY, _EMPTY_HEADERS, m.group("opaque"))


def match_uri(text: str) -> re.Match[str]:
    """Check a URI's text against the grammar of its scheme; returns the match.

    Cheaper than `URI` (nothing is built), for checking a URI that may never be read.

    Raises:
        ParseError: the text is not a URI of the grammar (RFC 3261 §25.1, RFC 3966).
    """
    head = text[:5].lower()
    if head.startswith("sip"):
        m = _abnf.SIP_URI_RE.fullmatch(text)
        if m is not None:
            return m
        if head.startswith(("sip:", "sips:")):
            # Not an absoluteURI either: a sip: URI must follow its own grammar.
            raise ParseError(f"Bad SIP URI {show(text)}")
    elif head.startswith("tel:"):
        m = _abnf.TEL_URI_RE.fullmatch(text)
        if m is None:
            raise ParseError(f"Bad tel URI {show(text)}")
        return m
    m = _abnf.ABSOLUTE_URI_RE.fullmatch(text)
    if m is None:
        raise ParseError(f"Bad URI {show(text)}")
    return m
