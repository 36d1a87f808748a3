"""Correctness regressions from issue 16 (ports of LTP and selftests/mm
cases, and a fuzzer of the syscall layer): each test fails without its fix.

False positives (a finding on correct behaviour), broken isolation, wrong
accounting, things Linux refuses that pymm accepted, and errno.
"""
import errno

import pytest

import pymm
from pymm import (MADV_DONTNEED, MAP_ANONYMOUS, MAP_HUGETLB, MAP_PRIVATE, MPOL_MF_MOVE,
                  MPOL_MF_MOVE_ALL, PAGE_SIZE, PROT_READ, PROT_WRITE)
from pymm.constants import HPAGE_SIZE
from pymm.locking import lockdep
from pymm.sched import explore

P = PAGE_SIZE
HS = HPAGE_SIZE
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


@pytest.fixture(autouse=True)
def fresh_lockdep():
    lockdep.reset()
    yield
    lockdep.reset()


def clean(k):
    assert k.check() == [], "\n\n".join(f.text for f in k.findings())
    assert k.findings() == [], "\n\n".join(f.text for f in k.findings())


def node_of(p, addr):
    return p.move_pages([addr], None)[0]


# -- 1: hugetlb migration pins the anon_vma with folio_get_anon_vma ------------------------

def test_hugetlb_migration_racing_munmap_does_not_touch_a_freed_anon_vma():
    """LTP move_pages12: munmap frees the anon_vma while move_pages holds the
    isolated huge folio; unmap_and_move_huge_page must pin it with
    folio_get_anon_vma (only while mapped), not folio_anon_vma+get_anon_vma."""
    def setup():
        k = pymm.Kernel(nodes=2, pages_per_node=64, hugepages_per_node=1)
        a = k.spawn("a")
        addr = a.mmap(0, HS, RW, ANON | MAP_HUGETLB)
        a.store(addr, b"x")
        return k, a, addr

    def unmapper(s):
        k, a, addr = s
        a.munmap(addr, HS)

    def mover(s):
        k, a, addr = s
        try:
            a.move_pages([addr], [0], MPOL_MF_MOVE_ALL)      # a's pages sit on node 1
        except OSError as e:
            assert e.errno == errno.EFAULT

    def check(s):
        k, a, addr = s
        a.exit()
        clean(k)

    res = explore(setup, [unmapper, mover], check, strategy="pct", seed=0, max_schedules=60)
    assert res.failure is None, res.failure.message


# -- 2: COW isolation through swap ---------------------------------------------------------

def test_swap_in_of_a_page_the_other_process_maps_is_not_exclusive():
    """The parent swaps the fork-shared page in first (read-only); the
    child's write fault on its swap entry must COW, not map the parent's
    folio writable."""
    k = pymm.Kernel(nodes=1, pages_per_node=64, hugepages_per_node=0)
    a = k.spawn("a")
    addr = a.mmap(0, P, RW, ANON)
    a.store(addr, b"parent")
    c = a.fork()
    assert k.reclaim(8) == 1
    assert a.load(addr, 6) == b"parent"
    c.store(addr, b"CHILD!")
    assert a.load(addr, 6) == b"parent"
    assert c.load(addr, 6) == b"CHILD!"
    clean(k)
    c.exit()
    a.exit()
    clean(k)
    assert k.meminfo()["MemFree"] == k.meminfo()["MemTotal"]


# -- 3: AnonPages follows the mappings -----------------------------------------------------

def test_anonpages_after_migrating_a_private_page():
    k = pymm.Kernel(nodes=2, pages_per_node=64, hugepages_per_node=0)
    a = k.spawn("a")
    addr = a.mmap(0, P, RW, ANON)
    a.store(addr, b"x")
    n = node_of(a, addr)
    assert a.move_pages([addr], [1 - n], MPOL_MF_MOVE) == [1 - n]
    assert k.meminfo()["AnonPages"] == 4
    clean(k)
    a.exit()
    assert k.meminfo()["AnonPages"] == 0
    clean(k)


def test_anonpages_and_migration_of_fork_shared_pages_swapped_out_and_in():
    """Swap-cache folios migrate too (their slot moves to the new folio, as
    folio_migrate_mapping does for the swap address space)."""
    k = pymm.Kernel(nodes=2, pages_per_node=64, hugepages_per_node=0)
    a = k.spawn("a")
    addrs = [a.mmap(0, 10 * P, RW, ANON) + i * P for i in range(10)]
    for i, x in enumerate(addrs):
        a.store(x, b"p%d" % i)
    c = a.fork()
    assert k.reclaim(64) == 10
    for x in addrs:
        a.load(x, 2)
    for x in addrs[::2]:
        c.load(x, 2)
    for x in addrs[::3]:
        c.store(x, b"c")
    assert k.meminfo()["AnonPages"] == 4 * 14
    clean(k)
    st = a.move_pages(addrs, None)
    assert a.move_pages(addrs, [1 - s for s in st], MPOL_MF_MOVE_ALL) == [1 - s for s in st]
    assert k.meminfo()["AnonPages"] == 4 * 14
    for i, x in enumerate(addrs):
        assert a.load(x, 2) == b"p%d" % i
    clean(k)
    c.exit()
    a.exit()
    assert k.meminfo()["AnonPages"] == 0
    assert k.meminfo()["MemFree"] == k.meminfo()["MemTotal"]
    clean(k)


def test_the_accounting_check_catches_a_wrong_or_negative_anonpages():
    k = pymm.Kernel(nodes=1, pages_per_node=64, hugepages_per_node=0)
    a = k.spawn("a")
    addr = a.mmap(0, P, RW, ANON)
    a.store(addr, b"x")
    k.nodes[0].vm_stat["NR_ANON_MAPPED"].add(-2)
    titles = {f.title for f in k.check()}
    assert "BUG: NR_ANON_MAPPED accounting" in titles
    assert "BUG: negative NR_ANON_MAPPED" in titles


# -- 3b: the integrity shadow follows MADV_DONTNEED under the PTE lock ----------------------

def test_dontneed_racing_a_load_is_not_data_corruption():
    """A reader sees the pattern or zeros, as on Linux; the shadow must be
    dropped under the ptl that clears the PTE, not after the whole zap."""
    def setup():
        k = pymm.Kernel(nodes=1, pages_per_node=64, hugepages_per_node=0)
        a = k.spawn("a")
        return k, a, a.mmap(0, P, RW, ANON)

    def writer(s):
        k, a, addr = s
        for _ in range(2):
            a.store(addr, b"\xaa" * 16)
            a.madvise(addr, P, MADV_DONTNEED)

    def reader(s):
        k, a, addr = s
        for _ in range(3):
            assert a.load(addr, 16) in (b"\xaa" * 16, b"\0" * 16)

    def check(s):
        k, a, addr = s
        clean(k)

    res = explore(setup, [writer, reader], check, strategy="random", seed=0, max_schedules=60)
    assert res.failure is None, res.failure.message
