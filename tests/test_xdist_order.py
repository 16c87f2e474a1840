"""Against pytest-xdist's real `load` scheduler: every worker starts on a fair share of the slow modules."""

from __future__ import annotations

import pytest
from xdist.scheduler import LoadScheduling

from tests import xdist_order

# Seconds per slow module, about the suite's own (tests marked `slow(seconds=...)`), and its test count.
SLOW = [(75, 6), (40, 2), (30, 6), (30, 2), (25, 4), (20, 10), (15, 2), (12, 2), (12, 1), (12, 1), (10, 1),
        (10, 1), (10, 1), (10, 3)]


class _Config:
    def __init__(self, workers: int) -> None:
        self.workers = workers

    def getvalue(self, name: str) -> list[str]:
        assert name == "tx"
        return [f"{self.workers}*popen"]

    def getoption(self, name: str) -> None:
        assert name == "maxschedchunk"


class _Gateway:
    def __init__(self, name: str) -> None:
        self.id = name


class _Node:
    shutting_down = False

    def __init__(self, name: str) -> None:
        self.gateway = _Gateway(name)
        self.sent: list[int] = []

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent.extend(indices)

    def shutdown(self) -> None:
        self.shutting_down = True


def _first_blocks(collection: list[str], workers: int) -> list[list[str]]:
    scheduler = LoadScheduling(_Config(workers))  # type: ignore[arg-type]
    nodes = [_Node(f"gw{i}") for i in range(workers)]
    for node in nodes:
        scheduler.add_node(node)  # type: ignore[arg-type]
    for node in nodes:
        scheduler.add_node_collection(node, collection)  # type: ignore[arg-type]
    scheduler.schedule()
    return [[collection[i] for i in node.sent] for node in nodes]


def _world(fast: int) -> tuple[list[tuple[float, list[str]]], list[str], dict[str, float]]:
    slow = [(float(s), [f"slow{m}::t{i}" for i in range(n)]) for m, (s, n) in enumerate(SLOW)]
    seconds = {f"slow{m}": float(s) for m, (s, _) in enumerate(SLOW)}
    return slow, [f"fast::t{i}" for i in range(fast)], seconds


@pytest.mark.parametrize(("workers", "fast"), [(2, 1_500), (3, 3_300), (3, 400), (4, 3_300)])
def test_every_worker_starts_on_a_fair_share_of_the_slow_modules(workers: int, fast: int) -> None:
    slow, fast_items, seconds = _world(fast)
    collection = xdist_order.arrange(slow, fast_items, workers)
    assert sorted(collection) == sorted([i for _, members in slow for i in members] + fast_items)

    blocks = _first_blocks(collection, workers)
    shares = [sum(seconds[m] for m in {i.split("::")[0] for i in block if i.startswith("slow")}) for block in blocks]
    assert sum(shares) == sum(seconds.values())  # every slow module starts in a first block
    assert max(shares) - min(shares) <= 15, shares  # no worker left with the longest tail
    for _, members in slow:  # a module stays on one worker, in its order (its fixtures are set up once)
        holder = next(b for b in blocks if members[0] in b)
        assert [i for i in holder if i in members] == members


def test_one_process_runs_the_slow_modules_first() -> None:
    slow, fast_items, _ = _world(50)
    slow_items = [i for _, members in slow for i in members]
    assert xdist_order.arrange(slow, fast_items, 0) == slow_items + fast_items


def test_too_many_slow_tests_for_a_block_keep_them_all_first() -> None:
    slow, fast_items, _ = _world(20)  # 62 tests on 3 workers: blocks of 5 cannot hold a bin
    slow_items = [i for _, members in slow for i in members]
    assert xdist_order.arrange(slow, fast_items, 3) == slow_items + fast_items


def test_deal_puts_the_longest_first_into_the_lightest_bin() -> None:
    assert xdist_order.deal([(1.0, ["a"]), (5.0, ["b"]), (3.0, ["c"]), (3.0, ["d"])], 2) == [["b", "a"], ["c", "d"]]
