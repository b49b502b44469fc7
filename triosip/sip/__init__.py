"""The SIP message layer: bytes in, values out, and back (sans-IO, stdlib only).

Parse a datagram with `parse_message`, frame a TCP stream with `StreamParser`; accept
what came from the network with `check_message`; read and edit the `Request` /
`Response` values they give; answer them with `build_response`, or
answer what could not be parsed with `build_error_response`. Nothing that reads bytes
from the network raises anything but `ParseError`.
"""

from triosip.sip._builders import REASON_PHRASES as REASON_PHRASES
from triosip.sip._builders import build_ack as build_ack
from triosip.sip._builders import build_cancel as build_cancel
from triosip.sip._builders import build_error_response as build_error_response
from triosip.sip._builders import build_response as build_response
from triosip.sip._check import check_message as check_message
from triosip.sip._errors import LocalSIPError as LocalSIPError
from triosip.sip._errors import SIPError as SIPError
from triosip.sip._fields import CSeq as CSeq
from triosip.sip._fields import NameAddr as NameAddr
from triosip.sip._fields import Via as Via
from triosip.sip._headers import COMPACT_FORMS as COMPACT_FORMS
from triosip.sip._headers import Header as Header
from triosip.sip._message import MAGIC_COOKIE as MAGIC_COOKIE
from triosip.sip._message import Message as Message
from triosip.sip._message import Request as Request
from triosip.sip._message import Response as Response
from triosip.sip._parse_error import ParseError as ParseError
from triosip.sip._parser import StreamParser as StreamParser
from triosip.sip._parser import parse_message as parse_message
from triosip.sip._uri import KEEP as KEEP
from triosip.sip._uri import URI as URI

__all__ = [
    "COMPACT_FORMS",
    "KEEP",
    "MAGIC_COOKIE",
    "REASON_PHRASES",
    "URI",
    "CSeq",
    "Header",
    "LocalSIPError",
    "Message",
    "NameAddr",
    "ParseError",
    "Request",
    "Response",
    "SIPError",
    "StreamParser",
    "Via",
    "build_ack",
    "build_cancel",
    "build_error_response",
    "build_response",
    "check_message",
    "parse_message",
]
