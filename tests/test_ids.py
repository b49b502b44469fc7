"""Random identifiers: the pool hands out fresh OS randomness, never the same bytes twice."""

from __future__ import annotations

import os

from triosip import ids


def test_token_hex_is_hex_of_the_asked_length() -> None:
    for nbytes in (1, 6, 8, 16):
        token = ids.token_hex(nbytes)
        assert len(token) == 2 * nbytes
        int(token, 16)  # hex digits only


def test_token_hex_does_not_repeat_across_refills() -> None:
    # Several pools' worth: a refill must not hand out bytes already given.
    tokens = [ids.token_hex(6) for _ in range(3 * ids._POOL_SIZE // 6)]
    assert len(set(tokens)) == len(tokens)


def test_a_forked_child_does_not_reuse_the_parents_pool() -> None:
    ids.token_hex(6)  # a pool with bytes left to hand out
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next token and leave at once
        os.write(write, ids.token_hex(6).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 12
    assert child != ids.token_hex(6)
