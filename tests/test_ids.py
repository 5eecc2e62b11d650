"""gateway.ids: random ids handed out of a buffer of os.urandom bytes."""

from __future__ import annotations

import os
import re

from gateway.ids import random_hex


def test_ids_are_hex_of_the_size_asked_and_never_repeat_across_refills() -> None:
    ids = [random_hex() for _ in range(2_000)]  # ~8 refills of the 4 KiB buffer
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert re.fullmatch(r"[0-9a-f]{24}", random_hex(12))
    assert re.fullmatch(r"[0-9a-f]{10000}", random_hex(5_000))  # larger than the buffer


def test_a_forked_child_does_not_hand_out_its_parents_next_ids() -> None:
    random_hex()  # the buffer holds bytes the child would inherit
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, then out at once
        try:
            os.write(write, random_hex().encode())
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert re.fullmatch(r"[0-9a-f]{32}", child)
    assert child != random_hex()
