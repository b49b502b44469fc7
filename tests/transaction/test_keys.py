"""Matching keys: RFC 3261 §17.1.3, §17.2.3, §9.2 and the RFC 2543 fallback."""

from __future__ import annotations

from tests.support.transaction import ack_for, cancel_for, request, response
from triosip.transaction._keys import (
    client_key,
    has_magic_cookie,
    invite_key,
    response_key,
    server_key,
)


def test_magic_cookie() -> None:
    assert has_magic_cookie("z9hG4bK776asdhds")
    assert not has_magic_cookie("776asdhds")
    assert not has_magic_cookie("Z9HG4BK776asdhds")  # the cookie is case-sensitive
    assert not has_magic_cookie(None)


def test_retransmission_has_the_same_key() -> None:
    assert server_key(request()) == server_key(request())


def test_rfc3261_key_is_branch_sent_by_method() -> None:
    assert server_key(request()) == ("z9hG4bK776asdhds", "192.0.2.10", 5070, "INVITE")


def test_ack_matches_its_invite() -> None:
    invite = request()
    ack = ack_for(invite, response(invite, 486))
    assert server_key(ack) == server_key(invite)


def test_cancel_is_its_own_transaction_but_finds_the_invite() -> None:
    invite = request()
    cancel = cancel_for(invite)
    assert server_key(cancel) != server_key(invite)
    assert invite_key(cancel) == server_key(invite)


def test_sent_by_and_method_and_branch_each_tell_transactions_apart() -> None:
    base = server_key(request())
    assert server_key(request(sent_by="192.0.2.11:5070")) != base
    assert server_key(request(sent_by="192.0.2.10:5071")) != base
    assert server_key(request(branch="z9hG4bKother")) != base
    assert server_key(request("OPTIONS")) != base


def test_sent_by_host_is_case_insensitive() -> None:
    assert server_key(request(sent_by="PC33.Example.COM")) == server_key(
        request(sent_by="pc33.example.com")
    )


def test_rfc2543_key_without_branch() -> None:
    # §17.2.3: Request-URI, To tag, From tag, Call-ID, CSeq and top Via.
    invite = request(branch=None)
    key = server_key(invite)
    assert len(key) == 7
    assert key == server_key(request(branch=None))
    assert server_key(request(branch=None, cseq=2)) != key
    assert server_key(request(branch=None, from_tag="x")) != key
    assert server_key(request(branch=None, call_id="other@x")) != key
    assert server_key(request(branch=None, uri="sip:carol@example.com")) != key
    assert server_key(request(branch=None, to_tag="t")) != key


def test_rfc2543_key_with_a_branch_without_cookie() -> None:
    assert len(server_key(request(branch="1234"))) == 7


def test_rfc2543_ack_and_cancel_use_the_invite_key() -> None:
    invite = request(branch=None)
    ack = ack_for(invite, response(invite, 486))
    cancel = cancel_for(invite)
    assert server_key(ack) == invite_key(invite)
    assert invite_key(cancel) == invite_key(invite)
    assert server_key(cancel) != server_key(invite)
    # The three kinds of key never collide: different lengths.
    assert len({len(server_key(invite)), len(invite_key(invite)), len(server_key(request()))}) == 3


def test_client_keys() -> None:
    invite = request(branch="z9hG4bKabc")
    cancel = cancel_for(invite)
    assert client_key(invite) == ("z9hG4bKabc", "INVITE")
    assert client_key(cancel) == ("z9hG4bKabc", "CANCEL")
    # §17.1.3: branch and CSeq method: a 200 to the CANCEL is not the INVITE's.
    assert response_key(response(invite, 180)) == client_key(invite)
    assert response_key(response(cancel, 200)) == client_key(cancel)
    assert client_key(request(branch=None)) is None
    assert response_key(response(request(branch=None), 200)) is None
