"""Public ids: shape, and no id minted twice across a fork (the random pool is per process)."""

from __future__ import annotations

import os

from tracker.core import ids


def test_ids_have_their_shape_and_do_not_repeat() -> None:
    made = [ids.new_id("conversion") for _ in range(20_000)]
    assert len(set(made)) == len(made)
    assert all(ids.looks_like("conversion", i) and len(i) == len("cnv_") + 16 for i in made)


def test_a_forked_child_does_not_mint_its_parents_ids() -> None:
    ids.new_id("conversion")  # the pool holds random bytes now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the id it mints first
        os.write(write, ids.new_id("conversion").encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    os.close(write)
    assert child != ids.new_id("conversion")


def test_request_ids_are_16_hex_digits_and_do_not_repeat() -> None:
    made = [ids.request_id() for _ in range(20_000)]
    assert len(set(made)) == len(made)
    assert all(len(r) == 16 and int(r, 16) >= 0 and r == r.lower() for r in made)
