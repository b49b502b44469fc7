"""The SIP grammar as named regular-expression fragments (RFC 3261 §25, RFC 3966, RFC 3581).

Theory of operation
-------------------
Each fragment below is a plain ``str`` regex built from the ABNF quoted above it, so that
the grammar reads like the RFC and each pattern can be checked against its rule. The
fragments are composed into the few patterns the parser needs, compiled once at import
time, and always applied with ``fullmatch`` (never ``match``/``search``), so that nothing
after a valid prefix slips through.

The patterns run on header *values* that the parser has already cut out of their line
and unfolded, so LWS is ``[ \\t]+`` and SWS ``[ \\t]*`` here (RFC 3261 §7.3.1: a folded
line is equivalent to one SP). Text is ``str`` decoded from UTF-8 with
``errors="surrogateescape"``: UTF8-NONASCII is every code point above U+007F.

Possessive quantifiers (``*+``, ``++``) and atomic groups (``(?>…)``, Python 3.11) are
used where what follows a run can never be part of it; they keep a failing match linear
on hostile input instead of backtracking through every split of a long run. A repeated
group that holds a capture is written ``(?>(?:…)*)``, never ``(?:…)*+``: on CPython 3.11
the latter can raise SystemError ("The span of capturing group is wrong",
https://github.com/python/cpython/issues/101955), and nothing but ParseError may escape
the parser. tests/sip/test_grammar.py holds the regression test.

Deliberate leniencies, each tested in tests/sip/test_grammar.py (which also feeds every
pattern long hostile values, to keep it that way). The RFCs cited are at
https://www.rfc-editor.org/rfc/rfc3261, …/rfc3966, …/rfc5118 and …/rfc4475:

* L1 — display names made of tokens may touch the ``<`` (``Bob<sip:b@h>``): the ABNF
  (``*(token LWS)`` then ``LAQUOT = SWS "<"``) wants a space, but RFC 3261 §25.1 itself
  makes SWS optional around ``<``, and deployed stacks (Kamailio's parse_nameaddr,
  PJSIP) accept it.
* L2 — ``received`` may hold a bracketed IPv6 reference as well as the bare IPv6address
  of the ABNF: RFC 5118 §4.5 notes that implementations send both.
* L3 — a ``tel:`` local number needs no ``phone-context``: RFC 3966 §5.1.5 requires it,
  but many gateways send ``tel:1234``; we keep the URI as it came either way.
* L4 — TEXT-UTF8 and quoted strings accept any code point above U+007F, including the
  lone surrogates that stand for bytes which are not valid UTF-8 (they are forwarded
  byte for byte; RFC 3261 §25.1 asks for UTF-8 but says nothing about rejecting it).
* L5 — SIP-Version compares case-insensitively (RFC 3261 §7.1: quoted ABNF strings are
  case-insensitive), so ``sip/2.0`` is 2.0; only other numbers get a 505.
* L6 — ``Status-Line`` reason phrases may contain any character but CR, LF, NUL and the
  other C0 controls except HTAB (RFC 3261 §25.1 lists reserved / unreserved / escaped /
  UTF8 / SP / HTAB, which is every printable character anyway).
"""

from __future__ import annotations

import re


def ci(word: str) -> str:
    """A case-insensitive literal as character classes (``ci("via")`` is ``[Vv][Ii][Aa]``).

    RFC 3261 §7.3.1 makes header and parameter names case-insensitive. Classes rather
    than ``(?i:…)``: sre skips an alternative at once when its first class does not
    match, which it cannot do for case-folded literals, and every Via parameter tries
    several alternatives.
    """
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in word)


# ---------------------------------------------------------------------------------------
# RFC 3261 §25.1 basic rules

# alphanum  =  ALPHA / DIGIT
ALPHANUM = r"A-Za-z0-9"
# LWS  =  [*WSP CRLF] 1*WSP ; linear whitespace   (values are unfolded: CRLF is gone)
# SWS  =  [LWS] ; sep whitespace
# Possessive: whatever follows LWS or SWS in the grammar never starts with SP or HT, so
# giving back blanks could never help a match, and trying to on a 64 KB run of blanks
# followed by garbage is what makes a failing match slow.
LWS = r"[ \t]++"
SWS = r"[ \t]*+"
# SEMI = SWS ";" SWS ; EQUAL = SWS "=" SWS ; SLASH = SWS "/" SWS ; COLON = SWS ":" SWS
# LAQUOT = SWS "<"   (COMMA and RAQUOT are written out where they are used)
SEMI = rf"{SWS};{SWS}"
EQUAL = rf"{SWS}={SWS}"
SLASH = rf"{SWS}/{SWS}"
COLON = rf"{SWS}:{SWS}"
LAQUOT = rf"{SWS}<"

# token  =  1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" )
TOKEN_CHARS = ALPHANUM + r"\-.!%*_+`'~"
TOKEN = rf"[{TOKEN_CHARS}]++"
# word  =  1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" /
#            "(" / ")" / "<" / ">" / ":" / "\" / DQUOTE / "/" / "[" / "]" / "?" / "{" / "}" )
WORD = rf"[{TOKEN_CHARS}()<>:\\\"/\[\]?{{}}]++"

# quoted-string  =  SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
# qdtext         =  LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
# quoted-pair    =  "\" (%x00-09 / %x0B-0C / %x0E-7F)
QDTEXT = r"[ \t\x21\x23-\x5b\x5d-\x7e\x80-\U0010ffff]"  # L4: everything above U+007F
QUOTED_PAIR = r"\\[\x00-\x09\x0b\x0c\x0e-\x7f]"
QUOTED_STRING = rf'"(?>{QDTEXT}++|{QUOTED_PAIR})*+"'

# escaped  =  "%" HEXDIG HEXDIG
ESCAPED = r"%[0-9A-Fa-f]{2}"
# unreserved  =  alphanum / mark
# mark        =  "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"
UNRESERVED_CHARS = ALPHANUM + r"\-_.!~*'()"

# ---------------------------------------------------------------------------------------
# Hosts (RFC 3261 §25.1)

# hostname     =  *( domainlabel "." ) toplabel [ "." ]
# domainlabel  =  alphanum / alphanum *( alphanum / "-" ) alphanum
# toplabel     =  ALPHA / ALPHA *( alphanum / "-" ) alphanum
# (A label's inner run is taken whole, then must not end in "-": giving characters back
# cannot help, since what follows a label is never a label character.)
DOMAINLABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]*+(?<!-))?"
TOPLABEL = r"[A-Za-z](?:[A-Za-z0-9\-]*+(?<!-))?"
HOSTNAME = rf"(?>(?:{DOMAINLABEL}\.)*{TOPLABEL}\.?)"
# IPv4address  =  1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT
IPV4ADDRESS = r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}"
# IPv6address  =  hexpart [ ":" IPv4address ]
# hexpart      =  hexseq / hexseq "::" [ hexseq ] / "::" [ hexseq ]
# hexseq       =  hex4 *( ":" hex4)
# hex4         =  1*4HEXDIG
HEX4 = r"[0-9A-Fa-f]{1,4}"
HEXSEQ = rf"{HEX4}(?::{HEX4})*"
HEXPART = rf"(?:{HEXSEQ}::(?:{HEXSEQ})?|::(?:{HEXSEQ})?|{HEXSEQ})"
IPV6ADDRESS = rf"(?:{HEXPART}(?::{IPV4ADDRESS})?)"
# IPv6reference  =  "[" IPv6address "]"
IPV6REFERENCE = rf"\[{IPV6ADDRESS}\]"
# host  =  hostname / IPv4address / IPv6reference
# (IPv4address first: "192.0.2.1" is also a hostname-shaped string up to its last label)
HOST = rf"(?:{IPV4ADDRESS}(?![A-Za-z0-9\-.])|{IPV6REFERENCE}|{HOSTNAME})"
# port  =  1*DIGIT   (0..65535 in the pattern, leading zeros allowed up to 5 digits)
PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[0-5]?[0-9]{1,4})(?![0-9])"

# ---------------------------------------------------------------------------------------
# SIP and SIPS URIs (RFC 3261 §19.1.1, §25.1)

# user             =  1*( unreserved / escaped / user-unreserved )
# user-unreserved  =  "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
USER = rf"(?:[{UNRESERVED_CHARS}&=+$,;?/]|{ESCAPED})++"
# password  =  *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
PASSWORD = rf"(?:[{UNRESERVED_CHARS}&=+$,]|{ESCAPED})*+"
# userinfo  =  ( user / telephone-subscriber ) [ ":" password ] "@"
# (telephone-subscriber's characters are a subset of user's, so USER covers both)
USERINFO = rf"(?P<user>{USER})(?::(?P<password>{PASSWORD}))?@"
# uri-parameters  =  *( ";" uri-parameter)
# uri-parameter   =  transport-param / user-param / method-param / ttl-param / maddr-param
#                    / lr-param / other-param
# other-param     =  pname [ "=" pvalue ]
# pname           =  1*paramchar
# pvalue          =  1*paramchar
# paramchar       =  param-unreserved / unreserved / escaped
# param-unreserved  =  "[" / "]" / "/" / ":" / "&" / "+" / "$"
# (the named params are all other-params syntactically: their values are paramchars too)
PARAMCHARS = rf"(?:[{UNRESERVED_CHARS}\[\]/:&+$]|{ESCAPED})++"
URI_PARAMETERS = rf"(?:;{PARAMCHARS}(?:={PARAMCHARS})?)*+"
# headers  =  "?" header *( "&" header )
# header   =  hname "=" hvalue
# hname    =  1*( hnv-unreserved / unreserved / escaped )
# hvalue   =  *( hnv-unreserved / unreserved / escaped )
# hnv-unreserved  =  "[" / "]" / "/" / "?" / ":" / "+" / "$"
HNV = rf"(?:[{UNRESERVED_CHARS}\[\]/?:+$]|{ESCAPED})"
URI_HEADER = rf"{HNV}++={HNV}*+"
URI_HEADERS = rf"\?{URI_HEADER}(?:&{URI_HEADER})*+"
# SIP-URI   =  "sip:" [ userinfo ] hostport uri-parameters [ headers ]
# SIPS-URI  =  "sips:" [ userinfo ] hostport uri-parameters [ headers ]
# hostport  =  host [ ":" port ]
SIP_URI = (
    rf"(?P<scheme>[Ss][Ii][Pp][Ss]?):(?:{USERINFO})?(?P<host>{HOST})(?::(?P<port>{PORT}))?"
    rf"(?P<params>{URI_PARAMETERS})(?P<headers>{URI_HEADERS})?"
)
# ---------------------------------------------------------------------------------------
# tel URIs (RFC 3966 §3)

# telephone-uri        = "tel:" telephone-subscriber
# telephone-subscriber = global-number / local-number
# global-number        = global-number-digits *par
# local-number         = local-number-digits *par context *par      (L3: context optional)
# global-number-digits = "+" *phonedigit DIGIT *phonedigit
# local-number-digits  = *phonedigit-hex (HEXDIG / "*" / "#")*phonedigit-hex
# phonedigit           = DIGIT / [ visual-separator ]
# phonedigit-hex       = HEXDIG / "*" / "#" / [ visual-separator ]
# visual-separator     = "-" / "." / "(" / ")"
# par                  = parameter / extension / isdn-subaddress
# parameter            = ";" pname ["=" pvalue ]
# pname                = 1*( alphanum / "-" )
# pvalue               = 1*paramchar
# (extension ";ext=", isdn-subaddress ";isub=" and context ";phone-context=" are
#  parameters syntactically; their values are paramchars)
GLOBAL_NUMBER_DIGITS = r"\+[0-9\-.()]*[0-9][0-9\-.()]*"
LOCAL_NUMBER_DIGITS = r"[0-9A-Fa-f*#\-.()]*[0-9A-Fa-f*#][0-9A-Fa-f*#\-.()]*"
TEL_PARAMS = rf"(?:;[{ALPHANUM}\-]++(?:={PARAMCHARS})?)*+"
TEL_URI = (
    rf"(?P<scheme>[Tt][Ee][Ll]):(?P<user>(?>{GLOBAL_NUMBER_DIGITS}|{LOCAL_NUMBER_DIGITS}))"
    rf"(?P<params>{TEL_PARAMS})"
)

# ---------------------------------------------------------------------------------------
# Any other URI (RFC 3261 §25.1, from RFC 2396)

# absoluteURI   =  scheme ":" ( hier-part / opaque-part )
# scheme        =  ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
# hier-part and opaque-part are sequences of uric (with "/" rules we need not check):
# uric          =  reserved / unreserved / escaped
# reserved      =  ";" / "/" / "?" / ":" / "@" / "&" / "=" / "+" / "$" / ","
SCHEME = r"[A-Za-z][A-Za-z0-9+\-.]*+"
URIC = rf"(?:[{UNRESERVED_CHARS};/?:@&=+$,]|{ESCAPED})"
ABSOLUTE_URI = rf"(?P<scheme>{SCHEME}):(?P<opaque>{URIC}*+)"

# ---------------------------------------------------------------------------------------
# Start lines (RFC 3261 §7.1, §7.2, §25.1)

# Method  =  INVITEm / ACKm / OPTIONSm / BYEm / CANCELm / REGISTERm / extension-method
# extension-method  =  token
# Request-Line  =  Method SP Request-URI SP SIP-Version CRLF
# Request-URI   =  SIP-URI / SIPS-URI / absoluteURI
# SIP-Version   =  "SIP" "/" 1*DIGIT "." 1*DIGIT
# The Request-URI is checked here only for what can be seen without parsing it (no SP,
# no <>, no control characters); the URI itself is parsed on first access (Request.uri).
SIP_VERSION = r"[Ss][Ii][Pp]/[0-9]{1,9}\.[0-9]{1,9}"
REQUEST_URI = r"[^\x00-\x20\x7f<>\"]++"
REQUEST_LINE = re.compile(rf"(?P<method>{TOKEN}) (?P<uri>{REQUEST_URI}) (?P<version>{SIP_VERSION})")
# Status-Line   =  SIP-Version SP Status-Code SP Reason-Phrase CRLF
# Status-Code   =  3DIGIT   (RFC 3261 §21: 100..699)
# Reason-Phrase =  *(reserved / unreserved / escaped / UTF8-NONASCII / UTF8-CONT / SP / HTAB)
# (L6: any text but control characters)
STATUS_LINE = re.compile(
    rf"(?P<version>{SIP_VERSION}) (?P<status>[1-6][0-9][0-9]) "
    r"(?P<reason>[^\x00-\x08\x0a-\x1f\x7f]*+)"
)
# The only version we speak (L5: compared case-insensitively by the parser)
SIP_2_0 = "SIP/2.0"

# ---------------------------------------------------------------------------------------
# Header values (RFC 3261 §20, §25.1)

# Call-ID  =  ( "Call-ID" / "i" ) HCOLON callid
# callid   =  word [ "@" word ]
CALLID = re.compile(rf"{WORD}(?:@{WORD})?")

# CSeq  =  "CSeq" HCOLON 1*DIGIT LWS Method
# (at most 10 digits, so that int() is cheap; the parser checks < 2**31, RFC 3261 §8.1.1.5)
CSEQ = re.compile(rf"(?P<number>[0-9]{{1,10}}){LWS}(?P<method>{TOKEN})")

# Max-Forwards  =  "Max-Forwards" HCOLON 1*DIGIT ;  Content-Length  =  ... HCOLON 1*DIGIT
# (bounded so that int() is cheap; the parser checks the ranges)
DIGITS = re.compile(r"[0-9]{1,10}")

# Where a parameter may end: before the next parameter, the next value, or the end of
# the value (the fast path joins the values it checks with "\r", see EAGER).
END_OF_PARAM = r"(?=[ \t]*+(?:[;,\r]|\Z))"

# generic-param  =  token [ EQUAL gen-value ]
# gen-value      =  token / host / quoted-string
GEN_VALUE = rf"(?:{TOKEN}|{HOST}|{QUOTED_STRING})"
GENERIC_PARAM = rf"{TOKEN}(?:{EQUAL}{GEN_VALUE})?"
# One parameter for splitting a validated parameter list: name, value (None when absent).
PARAM = re.compile(rf"{SEMI}(?P<name>{TOKEN})(?:{EQUAL}(?P<value>{GEN_VALUE}))?")


# from-spec / to-spec / contact-param / a Route entry, with its parameters.
# Groups, in order: quoted, tokens, uri, bare, params, tag (_fields.py slices the groups
# tuple by position: see the layout at the bottom).
# display-name  =  *(token LWS)/ quoted-string        (L1: no LWS needed before "<")
# name-addr     =  [ display-name ] LAQUOT addr-spec RAQUOT
# addr-spec     =  SIP-URI / SIPS-URI / absoluteURI
# tag-param     =  "tag" EQUAL token
# The URI between <> is checked by the URI patterns when NameAddr.uri is read; here only
# its extent matters, and no valid URI can end early: it holds no "<", ">", '"' or
# whitespace. Outside <> it holds no ";", "?" or "," either (RFC 3261 §20.10). RAQUOT's
# trailing SWS is left to SEMI, so that the value never ends in whitespace.
_NAME_ADDR = (
    rf"(?:(?P<quoted>{QUOTED_STRING})|(?P<tokens>{TOKEN}(?:{LWS}{TOKEN})*+))?"
    rf"{LAQUOT}(?P<uri>[^\x00-\x20\x7f<>\"]++)>"
)
_ADDRESS_PARAMS = (
    rf"(?P<params>(?>(?:{SEMI}(?:{ci('tag')}{EQUAL}(?P<tag>{TOKEN}){END_OF_PARAM}"
    rf"|(?!{ci('tag')}[ \t]*+(?:[=;,\r]|\Z)){GENERIC_PARAM}))*))"
)
ADDRESS = rf"(?:{_NAME_ADDR}|(?P<bare>{SCHEME}:[^\x00-\x20\x7f<>\";?,]++)){_ADDRESS_PARAMS}"
# rec-route / route-param  =  name-addr *( SEMI rr-param ): <> required. The same groups
# (`bare` never matches), so that NameAddr reads both alike.
ROUTE_ADDRESS = rf"{_NAME_ADDR}(?P<bare>(?!))?{_ADDRESS_PARAMS}"

_VIA_KNOWN = rf"(?:{ci('branch')}|{ci('ttl')}|{ci('maddr')}|{ci('received')}|{ci('rport')})"
# ttl  =  1*3DIGIT ; 0 to 255    (the range in the pattern, leading zeros allowed)
TTL = r"(?:25[0-5]|2[0-4][0-9]|[01]?[0-9]?[0-9])(?![0-9])"


# One via-parm. Groups, in order: protocol, transport, host, port, params, branch, ttl,
# maddr, received, rport, rport_value (sliced by position, like ADDRESS's).
# via-parm         =  sent-protocol LWS sent-by *( SEMI via-params )
# via-params       =  via-ttl / via-maddr / via-received / via-branch / via-extension
# via-ttl          =  "ttl" EQUAL ttl
# via-maddr        =  "maddr" EQUAL host
# via-received     =  "received" EQUAL (IPv4address / IPv6address)   (L2: or IPv6reference)
# via-branch       =  "branch" EQUAL token
# via-extension    =  generic-param
# response-port    =  "rport" [EQUAL 1*DIGIT]     (RFC 3581 §3; a port, so 0..65535)
# sent-protocol    =  protocol-name SLASH protocol-version SLASH transport
# protocol-name    =  "SIP" / token ;  protocol-version  =  token
# transport        =  "UDP" / "TCP" / "TLS" / "SCTP" / other-transport (a token)
# sent-by          =  host [ COLON port ]
# Named params are captured as they go by (the last wins if a name repeats); the generic
# alternative refuses their names, so that "branch" with a non-token value, or
# "ttl=300", fails instead of passing as an extension.
VIA_PARM = (
    rf"(?P<protocol>{TOKEN}{SLASH}{TOKEN}){SLASH}(?P<transport>{TOKEN})"
    rf"{LWS}(?P<host>{HOST})(?:{COLON}(?P<port>{PORT}))?"
    rf"(?P<params>(?>(?:{SEMI}(?:"
    rf"{ci('branch')}{EQUAL}(?P<branch>{TOKEN})"
    rf"|{ci('ttl')}{EQUAL}(?P<ttl>{TTL})"
    rf"|{ci('maddr')}{EQUAL}(?P<maddr>{HOST})"
    rf"|{ci('received')}{EQUAL}(?P<received>{IPV4ADDRESS}|{IPV6ADDRESS}|{IPV6REFERENCE})"
    rf"|(?P<rport>{ci('rport')})(?:{EQUAL}(?P<rport_value>{PORT}))?"
    rf"|(?!{_VIA_KNOWN}[ \t]*+(?:[=;,\r]|\Z)){GENERIC_PARAM}"
    rf"){END_OF_PARAM})*))"
)


# Via  =  ( "Via" / "v" ) HCOLON via-parm *(COMMA via-parm)
# The first via-parm of a Via line, and what follows its comma (checked when read).
VIA_FIRST = re.compile(rf"{VIA_PARM}{SWS}(?:,{SWS}(?P<rest>.*+))?", re.DOTALL)
VIA_GROUPS = 11
# Every via-parm of every Via line at once, the lines' values joined by CR: only to check
# them (nothing captured), for the Vias of a response, which the proxy seldom reads.
# The same via-parm as VIA_FIRST's; the separators as parse_vias splits them (a comma
# inside a quoted string is the string's, as in LIST_ELEMENT). Each repetition is
# possessive: a via-parm never ends where another could start, so nothing is retried.
_VIA_PARM_UNNAMED = re.sub(r"\(\?P<\w+>", "(?:", VIA_PARM)
_VIA_LINE = rf"{_VIA_PARM_UNNAMED}{SWS}(?:,{SWS}{_VIA_PARM_UNNAMED}{SWS})*+"
VIA_LINES = re.compile(rf"{_VIA_LINE}(?:\r{_VIA_LINE})*+")
# From / To / one Contact value: one address (Contact is split at commas first)
ADDRESS_VALUE = re.compile(ADDRESS)
ADDRESS_GROUPS = 6
# Route / Record-Route entries (rec-route = name-addr *( SEMI rr-param )): <> required
ROUTE_VALUE = re.compile(ROUTE_ADDRESS)
# A URI as it stands alone (Request-URI, or between <>): tried in this order.
SIP_URI_RE = re.compile(SIP_URI)
TEL_URI_RE = re.compile(TEL_URI)
ABSOLUTE_URI_RE = re.compile(ABSOLUTE_URI)
URI_PARAM = re.compile(rf";(?P<name>{PARAMCHARS})(?:=(?P<value>{PARAMCHARS}))?")
URI_HEADER_RE = re.compile(rf"[?&](?P<name>{HNV}++)=(?P<value>{HNV}*+)")
TEL_PARAM = re.compile(rf";(?P<name>[{ALPHANUM}\-]++)(?:=(?P<value>{PARAMCHARS}))?")
# One Via parameter, for splitting a validated list (received may be a bare IPv6address).
VIA_PARAM = re.compile(
    rf"{SEMI}(?P<name>{TOKEN})"
    rf"(?:{EQUAL}(?P<value>{IPV6ADDRESS}{END_OF_PARAM}|{GEN_VALUE}))?"
)

# Header names. RFC 3261 §7.3.1: field names are case-insensitive; §7.3.3 compact forms.
HEADER_NAME = re.compile(TOKEN)
# What a Request-URI may hold before it is parsed: no SP, no control, no <, > or '"'.
REQUEST_URI_RE = re.compile(REQUEST_URI)

# ---------------------------------------------------------------------------------------
# Helpers for cutting values apart (not grammar rules themselves)

# RFC 3261 §7.3.1: a header line may hold several comma-separated values; commas inside
# quoted strings and inside <> do not separate. One element runs up to the next such
# comma. An unterminated quote or "<" swallows the rest of the value, so that the element
# then fails its own pattern and says so (it is never silently cut short).
LIST_ELEMENT = re.compile(r'(?:[^,"<]++|"(?:[^"\\]++|\\.)*+"|<[^>]*+>|["<].*+)*+', re.DOTALL)
# RFC 3261 §7.3.1: "replace any linear white space with a single SP before interpreting
# the field value"; only the folds need it, runs of SP/HT on one line are kept as they are.
# FOLD matches a fold and the blanks and folds after it; the blanks before it are
# stripped by the code that splits at FOLD (_fields.unfold). The pattern starts with a
# literal CRLF on purpose: ``[ \t]*\r\n[ \t]+`` with ``re.sub`` tried every position of
# a run of blanks that no fold follows and scanned the rest of the run from each one
# (quadratic: 64 KB of spaces then a fold used to cost seconds). Several folds in a row
# make one SP, as the RFC says.
FOLD = re.compile(r"\r\n[ \t]++(?:\r\n[ \t]++)*+")
# Where one header line ends and the next begins: a CRLF that is not a fold (§7.3.1).
LINE_BREAK = re.compile(r"\r\n(?![ \t])")
# quoted-pair  =  "\" (%x00-09 / %x0B-0C / %x0E-7F)
QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)
SIP_VERSION_RE = re.compile(SIP_VERSION)
# What may not be sent back in a header line: NUL, and CR or LF outside a fold.
UNSOUND = re.compile(r"[\x00\r\n]")

# StreamParser's framing (RFC 3261 §18.3), on the raw header section before decoding:
# every Content-Length line's value, folds included ("l" is its compact form, §7.3.3).
CONTENT_LENGTH_LINE = re.compile(
    rb"\n(?:content-length|l)[ \t]*+:([^\r\n]*+(?:\r\n[ \t][^\r\n]*+)*+)", re.IGNORECASE
)
FOLD_BYTES = re.compile(rb"\r\n[ \t]++(?:\r\n[ \t]++)*+")  # as FOLD
DIGITS_BYTES = re.compile(rb"[0-9]{1,10}")
# A request line's beginning: "Method SP" (to tell a broken request from garbage).
REQUEST_START = re.compile(rf"{TOKEN} ")

# ---------------------------------------------------------------------------------------
# The parser's fast path

# Names of the lines of a (lower-cased, "\n"-joined) header section when each is a
# long-form name followed at once by ":"; any other shape is read line by line.
FAST_NAMES = re.compile(rf"\n([{TOKEN_CHARS}]{{2,}}):")


def _prefixed(pattern: str, prefix: str) -> str:
    # The same pattern with its group names prefixed, to hold it twice in one pattern.
    return re.sub(r"\(\?P<(\w+)>", lambda m: f"(?P<{prefix}{m.group(1)}>", pattern)


# The start line and the five values RFC 3261 §8.1.1 requires, in two fullmatches of
# values joined by CR: EAGER the start line, the first via-parm of the first Via line
# (and what follows its comma) and CSeq; DIALOG From, To and Call-ID, which are the same
# in every message of a dialog, so that the parser remembers the parts of the texts it
# matched (_parser._dialog_parts). Two calls instead of six, and groups() tuples whose
# slices are the parts Via and NameAddr keep. CR separates the values because none may
# hold one (so matching the two joins is matching the five values one by one); it also
# ends a parameter for END_OF_PARAM. The same rules as REQUEST_LINE / STATUS_LINE,
# VIA_FIRST, ADDRESS_VALUE, CALLID and CSEQ, which the careful path uses one by one.
_START_LINE = (
    rf"(?:{_prefixed(REQUEST_LINE.pattern, 'request_')}"
    rf"|{_prefixed(STATUS_LINE.pattern, 'status_')})"
)
EAGER = re.compile(
    rf"{_START_LINE}\r(?P<via>{_prefixed(VIA_PARM, 'via_')})(?:{SWS},{SWS}[^\r]*+)?"
    rf"\r{_prefixed(CSEQ.pattern, 'cseq_')}"
)
DIALOG = re.compile(
    rf"{_prefixed(ADDRESS, 'from_')}\r{_prefixed(ADDRESS, 'to_')}\r{CALLID.pattern}"
)
_EAGER_INDEX = {name: number - 1 for name, number in EAGER.groupindex.items()}
G_METHOD = _EAGER_INDEX["request_method"]
G_URI = _EAGER_INDEX["request_uri"]
G_REQUEST_VERSION = _EAGER_INDEX["request_version"]
G_STATUS_VERSION = _EAGER_INDEX["status_version"]
G_STATUS = _EAGER_INDEX["status_status"]
G_REASON = _EAGER_INDEX["status_reason"]
G_VIA = _EAGER_INDEX["via"]
G_CSEQ_NUMBER = _EAGER_INDEX["cseq_number"]
G_CSEQ_METHOD = _EAGER_INDEX["cseq_method"]
G_VIA_PARTS = slice(_EAGER_INDEX["via_protocol"], _EAGER_INDEX["via_rport_value"] + 1)
_DIALOG_INDEX = {name: number - 1 for name, number in DIALOG.groupindex.items()}
G_FROM_PARTS = slice(_DIALOG_INDEX["from_quoted"], _DIALOG_INDEX["from_tag"] + 1)
G_TO_PARTS = slice(_DIALOG_INDEX["to_quoted"], _DIALOG_INDEX["to_tag"] + 1)

# Each part's place in a Via's or a NameAddr's parts (VIA_FIRST's, ADDRESS_VALUE's groups).
VIA_PROTOCOL, VIA_TRANSPORT, VIA_HOST, VIA_PORT, VIA_PARAMS = range(5)
VIA_BRANCH, VIA_TTL, VIA_MADDR, VIA_RECEIVED, VIA_RPORT, VIA_RPORT_VALUE = range(5, 11)
ADDR_QUOTED, ADDR_TOKENS, ADDR_URI, ADDR_BARE, ADDR_PARAMS, ADDR_TAG = range(6)
assert VIA_FIRST.groupindex["rport_value"] == VIA_GROUPS  # the layout above
assert ADDRESS_VALUE.groupindex["tag"] == ADDRESS_GROUPS
