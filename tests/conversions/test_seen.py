"""``SeenOrders``: the orders any worker recorded or read lately, one table mapped by every worker."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from tracker.conversions import seen
from tracker.conversions.seen import SeenOrders

KEY = b"k" * 32


def test_an_order_is_seen_once_added_and_brands_are_apart() -> None:
    table = SeenOrders(KEY, path="")
    assert table.check_and_add("br_a", "O-1") is False
    assert table.check_and_add("br_a", "O-1") is True
    assert table.check_and_add("br_b", "O-1") is False  # another brand's order of the same id
    assert table.check_and_add("br_a", "O-2") is False


def _add_in_child(path: str, order_id: str) -> None:
    SeenOrders(KEY, path=path).check_and_add("br_a", order_id)


def test_workers_share_the_table_through_its_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(seen.ENV, "")  # restored (removed) after the test, whatever the code under test sets
    path = seen.share_across_workers(tmp_path)
    assert os.environ[seen.ENV] == str(path) and path == tmp_path / seen.FILE_NAME
    parent = SeenOrders(KEY)  # opens the file the variable names, as a worker does
    # Another process (a spawned worker) records an order: this one sees it.
    child = multiprocessing.get_context("spawn").Process(target=_add_in_child, args=(str(path), "O-7"))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert parent.check_and_add("br_a", "O-7") is True
    assert parent.check_and_add("br_a", "O-8") is False
    # A process with its own table (no file) knows nothing of it.
    assert SeenOrders(KEY, path="").check_and_add("br_a", "O-7") is False
    # The next start makes a fresh table in its place; a process mapping the old one keeps it.
    assert seen.share_across_workers(tmp_path) == path
    assert SeenOrders(KEY).check_and_add("br_a", "O-7") is False
    assert parent.check_and_add("br_a", "O-8") is True
    assert sorted(p.name for p in tmp_path.iterdir()) == [seen.FILE_NAME]


def test_a_table_that_cannot_be_mapped_leaves_the_worker_its_own(tmp_path: Path) -> None:
    short = tmp_path / "short.table"
    short.write_bytes(b"\0" * 16)
    for path in (short, tmp_path / "gone.table"):
        table = SeenOrders(KEY, path=str(path))
        assert table.check_and_add("br_a", "O-1") is False and table.check_and_add("br_a", "O-1") is True
    assert short.read_bytes() == b"\0" * 16


def test_another_key_places_orders_elsewhere() -> None:
    # The slot and the mark come from a keyed hash: a table keyed otherwise does not match.
    first, other = SeenOrders(KEY, path=""), SeenOrders(b"x" * 32, path="")
    slots_first = {first._where("br_a", f"O-{i}") for i in range(100)}
    slots_other = {other._where("br_a", f"O-{i}") for i in range(100)}
    assert not slots_first & slots_other
