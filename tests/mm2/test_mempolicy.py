"""NUMA memory policy: set_mempolicy(2), mbind(2), migrate_pages(2),
move_pages(2) -- their semantics per the man pages, bad input, and the
"mbind" variants of SCENARIOS.md B under the controlled scheduler.

Semantics tests end with ``k.check()`` (page accounting, mapcounts, rss,
the VMA tree) and the ``kernel`` fixture fails on any finding; user bytes
are checked by reading them back (and by the data-integrity shadow, which
reports a lost migration copy as "data corruption").

Variant tests: an mbind of a populated range races a thread that munmaps
it, or one that faults in it.  With the validator on, ``early-unlock-vma-callback``
is caught as "suspicious RCU usage" (its allocation callback walks the VMA
tree unlocked) and ``unlock-before-ilx`` likewise (the interleave-index walk
after mmap_write_unlock); with the validator off the early unlock is caught
by KASAN (the callback reads the policy of a VMA munmap freed).
``hold-mmap-lock`` and ``mpol-alloc`` run clean.
"""
import errno

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pymm
from pymm import (MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, MAP_SHARED, MPOL_BIND, MPOL_DEFAULT,
                  MPOL_F_RELATIVE_NODES, MPOL_F_STATIC_NODES, MPOL_INTERLEAVE, MPOL_LOCAL,
                  MPOL_MF_MOVE, MPOL_MF_MOVE_ALL, MPOL_MF_STRICT, MPOL_PREFERRED,
                  MPOL_PREFERRED_MANY, PAGE_SIZE, PROT_READ, PROT_WRITE)
from pymm.debug.kasan import is_poisoned
from pymm.mm import mempolicy, migrate
from pymm.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from pymm.sched import explore, replay

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
EIO, EINVAL, EFAULT, ENOENT, EACCES, ENODEV = (errno.EIO, errno.EINVAL, errno.EFAULT,
                                               errno.ENOENT, errno.EACCES, errno.ENODEV)


# -- helpers ------------------------------------------------------------------------------

def pages(a, n):
    return [a + i * P for i in range(n)]


def where(p, a, n):
    """The node of each of n pages from a (move_pages with nodes=None)."""
    return p.move_pages(pages(a, n), None)


def fill(p, a, n, tag=0):
    """Write a distinct pattern into each page; return the expected bytes."""
    data = [bytes([(tag + i) % 251 + 1]) * 64 + bytes([i]) * 8 for i in range(n)]
    for i, d in enumerate(data):
        p.store(a + i * P + 100, d)
    return data


def intact(p, a, data):
    return all(p.load(a + i * P + 100, len(d)) == d for i, d in enumerate(data))


def vma_policies(p):
    """[(start, end, mode or None, sorted nodes)] of every VMA, under mmap_read_lock."""
    mm = p.mm
    mmap_read_lock(mm)
    try:
        out = []
        for v in mm.mm_mt.all():
            pol = v.vm_policy
            out.append((v.vm_start, v.vm_end, None if pol is None else pol.mode,
                        [] if pol is None else sorted(pol.nodes)))
        return out
    finally:
        mmap_read_unlock(mm)


def vma_objects(p):
    mm = p.mm
    mmap_read_lock(mm)
    try:
        return mm.mm_mt.all()
    finally:
        mmap_read_unlock(mm)


def quiet(k):
    """Invariants hold and nothing is half done."""
    assert k.check() == []
    assert k.lru_disable_count == 0


def other(node):
    return 1 - node


# -- mbind ----------------------------------------------------------------------------------

def test_mbind_bind_move_migrates_pages_and_keeps_bytes(kernel):
    k = kernel
    p = k.spawn("a")
    a = p.mmap(0, 8 * P, RW, ANON)
    data = fill(p, a, 8)
    home = where(p, a, 1)[0]
    assert where(p, a, 8) == [home] * 8             # the default policy: local node
    free_before = k.meminfo()["MemFree"]
    assert p.mbind(a, 8 * P, MPOL_BIND, {other(home)}, MPOL_MF_MOVE) == 0
    assert where(p, a, 8) == [other(home)] * 8
    assert intact(p, a, data)
    assert vma_policies(p) == [(a, a + 8 * P, MPOL_BIND, [other(home)])]
    assert k.meminfo()["MemFree"] == free_before     # the old pages were freed
    st = k.nodes[other(home)].vm_stat["NR_ANON_MAPPED"].sum()
    assert st == 8
    b = p.mmap(0, P, RW, ANON)                        # other VMAs keep the default policy
    p.store(b, b"x")
    assert where(p, b, 1) == [home]
    quiet(k)


def test_mbind_without_move_sets_the_policy_for_new_faults_only(kernel):
    k = kernel
    p = k.spawn("a")
    a = p.mmap(0, 4 * P, RW, ANON)
    fill(p, a, 2)                                   # two pages exist, two do not yet
    home = where(p, a, 1)[0]
    p.mbind(a, 4 * P, MPOL_BIND, {other(home)})
    assert where(p, a, 2) == [home, home]           # existing pages stay
    fill(p, a + 2 * P, 2)
    assert where(p, a + 2 * P, 2) == [other(home)] * 2
    quiet(k)


def test_mbind_splits_then_default_merges_back_and_policies_are_freed(kernel):
    k = kernel
    p = k.spawn("a")
    a = p.mmap(0, 10 * P, RW, ANON)                 # unpopulated: no anon_vma to block merging
    p.mbind(a + 2 * P, 3 * P, MPOL_INTERLEAVE, {0, 1})
    got = vma_policies(p)
    assert [(s - a, e - a) for s, e, _, _ in got] == [(0, 2 * P), (2 * P, 5 * P), (5 * P, 10 * P)]
    assert [m for _, _, m, _ in got] == [None, MPOL_INTERLEAVE, None]
    mid = vma_objects(p)[1].vm_policy
    p.mbind(a + 3 * P, 4 * P, MPOL_INTERLEAVE, {0, 1})   # overlaps: equal policies merge
    got = vma_policies(p)
    assert [(s - a, e - a, m) for s, e, m, _ in got] == [
        (0, 2 * P, None), (2 * P, 7 * P, MPOL_INTERLEAVE), (7 * P, 10 * P, None)]
    pol = vma_objects(p)[1].vm_policy
    p.mbind(a, 10 * P, MPOL_DEFAULT, None)
    assert vma_policies(p) == [(a, a + 10 * P, None, [])]
    assert is_poisoned(mid) and is_poisoned(pol)     # the last put freed them
    quiet(k)


def test_mbind_interleave_spreads_new_pages_by_offset():
    k = pymm.Kernel(nodes=3, pages_per_node=256)
    p = k.spawn("a")
    a = p.mmap(0, 12 * P, RW, ANON)
    p.mbind(a, 12 * P, MPOL_INTERLEAVE, {0, 1, 2})
    fill(p, a, 12)
    got = where(p, a, 12)
    first = (a >> 12) % 3                            # ilx = the page's offset in the object
    assert got == [(first + i) % 3 for i in range(12)]
    assert k.check() == [] and k.findings() == []


def test_mbind_preferred_prefers_and_falls_back():
    k = pymm.Kernel(nodes=2, pages_per_node=16)
    p = k.spawn("a")
    a = p.mmap(0, 24 * P, RW, ANON)
    p.mbind(a, 24 * P, MPOL_PREFERRED, {1})
    fill(p, a, 20)                                  # 16 fit on node 1, then node 0
    got = where(p, a, 20)
    assert got.count(1) == 16 and got.count(0) == 4
    assert k.check() == [] and k.findings() == []


def test_mbind_bind_does_not_fall_back():
    k = pymm.Kernel(nodes=2, pages_per_node=8)
    p = k.spawn("a")
    a = p.mmap(0, 16 * P, RW, ANON)
    p.mbind(a, 16 * P, MPOL_BIND, {1})
    fill(p, a, 8)
    with pytest.raises(OSError) as e:
        p.store(a + 8 * P, b"one too many")
    assert e.value.errno == errno.ENOMEM
    assert where(p, a, 8) == [1] * 8 and k.meminfo()["MemFree"] == 8 * 4
    assert k.check() == [] and k.findings() == []


def test_mbind_preferred_many_and_local():
    k = pymm.Kernel(nodes=3, pages_per_node=64)
    p = k.spawn("a")
    b = p.mmap(0, P, RW, ANON)
    p.store(b, b"default")
    home = where(p, b, 1)[0]
    a = p.mmap(0, 4 * P, RW, ANON)
    p.mbind(a, 2 * P, MPOL_PREFERRED_MANY, {(home + 1) % 3})
    p.mbind(a + 2 * P, 2 * P, MPOL_LOCAL, None)
    fill(p, a, 4)
    assert where(p, a, 4) == [(home + 1) % 3] * 2 + [home] * 2
    assert [m for s, _, m, _ in vma_policies(p) if a <= s < a + 4 * P] == [MPOL_PREFERRED_MANY,
                                                                           MPOL_LOCAL]
    assert k.check() == [] and k.findings() == []


def test_mbind_default_move_brings_pages_home(kernel):
    k = kernel
    p = k.spawn("a")
    a = p.mmap(0, 4 * P, RW, ANON)
    data = fill(p, a, 4)
    home = where(p, a, 1)[0]
    p.mbind(a, 4 * P, MPOL_BIND, {other(home)}, MPOL_MF_MOVE)
    p.mbind(a, 4 * P, MPOL_DEFAULT, None, MPOL_MF_MOVE)      # migrate by the task policy: local
    assert where(p, a, 4) == [home] * 4 and intact(p, a, data)
    assert vma_policies(p) == [(a, a + 4 * P, None, [])]
    quiet(k)


def test_mbind_strict(kernel):
    k = kernel
    p = k.spawn("a")
    a = p.mmap(0, 4 * P, RW, ANON)
    data = fill(p, a, 4)
    home = where(p, a, 1)[0]
    # STRICT alone: a misplaced page is EIO, and nothing changes
    with pytest.raises(OSError) as e:
        p.mbind(a, 4 * P, MPOL_BIND, {other(home)}, MPOL_MF_STRICT)
    assert e.value.errno == EIO
    assert vma_policies(p) == [(a, a + 4 * P, None, [])] and where(p, a, 4) == [home] * 4
    # STRICT alone with every page in place: fine
    assert p.mbind(a, 4 * P, MPOL_BIND, {home}, MPOL_MF_STRICT) == 0
    # STRICT|MOVE: misplaced pages move, and nothing is left behind
    assert p.mbind(a, 4 * P, MPOL_BIND, {other(home)}, MPOL_MF_STRICT | MPOL_MF_MOVE) == 0
    assert where(p, a, 4) == [other(home)] * 4 and intact(p, a, data)
    quiet(k)


def test_mbind_move_leaves_shared_pages_unless_move_all(kernel):
    k = kernel
    p = k.spawn("a")
    a = p.mmap(0, 4 * P, RW, ANON)
    data = fill(p, a, 4)
    home = where(p, a, 1)[0]
    child = p.fork()                                 # every page now mapped twice (COW)
    p.mbind(a, 4 * P, MPOL_BIND, {other(home)}, MPOL_MF_MOVE)
    assert where(p, a, 4) == [home] * 4              # shared: skipped...
    assert p.mbind(a, 4 * P, MPOL_BIND, {other(home)}, MPOL_MF_MOVE | MPOL_MF_STRICT) == 0
    assert where(p, a, 4) == [home] * 4              # ...and not a failure, even for STRICT
    p.mbind(a, 4 * P, MPOL_BIND, {other(home)}, MPOL_MF_MOVE_ALL)
    assert where(p, a, 4) == [other(home)] * 4 == where(child, a, 4)   # both mappings moved
    assert intact(p, a, data) and intact(child, a, data)
    child.store(a + 100, b"child's own")             # COW still breaks correctly
    assert intact(p, a, data)
    child.exit()
    quiet(k)


def test_mbind_file_mapping_moves_page_cache_pages(kernel):
    k = kernel
    f = k.create_file("f", 4 * P)
    p = k.spawn("a")
    a = p.mmap(0, 4 * P, RW, MAP_SHARED, fd=f)
    p.store(a, b"shared bytes")
    p.store(a + 3 * P, b"more")
    home = where(p, a, 1)[0]
    p.mbind(a, 4 * P, MPOL_BIND, {other(home)}, MPOL_MF_MOVE)
    assert where(p, a, 4) == [other(home), -ENOENT, -ENOENT, other(home)]
    assert p.load(a, 12) == b"shared bytes" and p.load(a + 3 * P, 4) == b"more"
    q = k.spawn("b")                                 # another process sees the moved page
    b = q.mmap(0, 4 * P, PROT_READ, MAP_SHARED, fd=f)
    assert q.load(b, 12) == b"shared bytes" and where(q, b, 1) == [other(home)]
    quiet(k)


def test_task_policy_set_mempolicy_fork_and_exit(kernel):
    k = kernel
    p = k.spawn("a")
    assert p.set_mempolicy(MPOL_BIND, {1}) == 0
    a = p.mmap(0, 4 * P, RW, ANON)
    fill(p, a, 4)
    assert where(p, a, 4) == [1] * 4                 # new faults land on node 1
    f = k.create_file("f", 2 * P)
    b = p.mmap(0, 2 * P, RW, MAP_SHARED, fd=f)
    p.store(b, b"cache")                            # page cache too
    assert where(p, b, 1) == [1]
    child = p.fork()                                # inherited (a copy)
    assert child.mempolicy == p.mempolicy and child.mempolicy is not p.mempolicy
    c = child.mmap(0, P, RW, ANON)
    child.store(c, b"c")
    assert where(child, c, 1) == [1]
    p.set_mempolicy(MPOL_INTERLEAVE, [0, 1])
    d = p.mmap(0, 8 * P, RW, ANON)
    fill(p, d, 8)
    got = where(p, d, 8)
    assert got.count(0) == got.count(1) == 4 and got[0] != got[1]
    old = p.mempolicy
    p.set_mempolicy(MPOL_DEFAULT, None)
    assert p.mempolicy is None and is_poisoned(old)
    pol = child.mempolicy
    child.exit()
    assert is_poisoned(pol)                         # exit put the task policy
    quiet(k)


def test_set_mempolicy_preferred_local_and_mode_flags():
    k = pymm.Kernel(nodes=4, pages_per_node=64)
    p = k.spawn("a")
    p.set_mempolicy(MPOL_PREFERRED, {3, 1})           # the first node of the set
    assert p.mempolicy.nodes == {1}
    p.set_mempolicy(MPOL_PREFERRED, None)             # no node: local allocation
    assert p.mempolicy.mode == MPOL_LOCAL
    p.set_mempolicy(MPOL_BIND | MPOL_F_RELATIVE_NODES, {5, 6})   # relative: folded onto 0..3
    assert p.mempolicy.nodes == {1, 2} and p.mempolicy.user_nodemask == {5, 6}
    p.set_mempolicy(MPOL_BIND | MPOL_F_STATIC_NODES, {2})
    a = p.mmap(0, P, RW, ANON)
    p.store(a, b"x")
    assert where(p, a, 1) == [2]
    assert k.check() == [] and k.findings() == []


# -- migrate_pages(2) and move_pages(2) -------------------------------------------------------------

def test_migrate_pages_moves_all_of_a_process():
    k = pymm.Kernel(nodes=3, pages_per_node=128)
    p = k.spawn("a")
    f = k.create_file("f", 4 * P)
    a = p.mmap(0, 6 * P, RW, ANON)
    b = p.mmap(0, 4 * P, RW, MAP_SHARED, fd=f)
    data = fill(p, a, 6)
    p.store(b, b"file")
    p.move_pages(pages(a, 6), [0, 0, 1, 1, 2, 2])
    p.move_pages([b], [0])
    # {0, 1} -> {1, 2} keeps the relative placement (by position in the sorted
    # sets): 0 -> 1 and 1 -> 2, node 1 emptied first so it does not crowd
    assert p.migrate_pages({0, 1}, [2, 1]) == 0
    assert where(p, a, 6) == [1, 1, 2, 2, 2, 2] and where(p, b, 1) == [1]
    assert p.migrate_pages({2}, {0}) == 0
    assert where(p, a, 6) == [1, 1, 0, 0, 0, 0] and where(p, b, 1) == [1]
    assert intact(p, a, data) and p.load(b, 4) == b"file"
    assert p.migrate_pages({1}, {0}) == 0           # nothing there: nothing to do
    assert k.check() == [] and k.findings() == [] and k.lru_disable_count == 0


def test_migrate_pages_moves_shared_pages_of_both_processes(kernel):
    k = kernel
    p = k.spawn("a")
    a = p.mmap(0, 4 * P, RW, ANON)
    data = fill(p, a, 4)
    p.move_pages(pages(a, 4), [0] * 4)
    child = p.fork()
    assert p.migrate_pages({0}, {1}) == 0           # privileged: MPOL_MF_MOVE_ALL
    assert where(p, a, 4) == where(child, a, 4) == [1] * 4
    assert intact(child, a, data)
    child.exit()
    quiet(k)


def test_move_pages_moves_listed_pages_and_reports(kernel):
    k = kernel
    p = k.spawn("a")
    a = p.mmap(0, 8 * P, RW, ANON)
    data = fill(p, a, 6)                            # pages 6 and 7 never touched
    p.load(a + 6 * P, 1)                            # page 6: the zero page
    home = where(p, a, 1)[0]
    hole = p.mmap(0, P, RW, ANON)
    p.munmap(hole, P)
    assert p.move_pages(pages(a, 8) + [hole], None) == [home] * 6 + [-EFAULT, -ENOENT, -EFAULT]
    there = other(home)
    status = p.move_pages([a, a + P, a + 2 * P, a + 6 * P, a + 7 * P, hole, a + 3 * P],
                          [there, there, home, there, there, there, there])
    assert status == [there, there, home, -EFAULT, -ENOENT, -EFAULT, there]
    assert where(p, a, 6) == [there, there, home, there, home, home]
    assert intact(p, a, data)
    quiet(k)


def test_move_pages_shared_page_needs_move_all(kernel):
    k = kernel
    p = k.spawn("a")
    a = p.mmap(0, 2 * P, RW, ANON)
    fill(p, a, 2)
    home = where(p, a, 1)[0]
    child = p.fork()
    assert p.move_pages(pages(a, 2), [other(home)] * 2) == [-EACCES, -EACCES]
    assert p.move_pages(pages(a, 2), [other(home)] * 2, MPOL_MF_MOVE_ALL) == [other(home)] * 2
    assert where(child, a, 2) == [other(home)] * 2
    child.exit()
    quiet(k)


def test_move_pages_to_a_full_node_reports_enomem():
    k = pymm.Kernel(nodes=2, pages_per_node=8)
    p = k.spawn("a")
    a = p.mmap(0, 6 * P, RW, ANON)
    data = fill(p, a, 6)
    p.move_pages(pages(a, 6), [0] * 6)
    b = p.mmap(0, 6 * P, RW, ANON)
    fill(p, b, 6)
    p.move_pages(pages(b, 6), [1] * 6)              # node 1: 2 pages left
    status = p.move_pages(pages(a, 4), [1] * 4)
    assert sorted(status) == [-errno.ENOMEM] * 2 + [1] * 2    # Linux: ENOMEM, not EBUSY
    assert where(p, a, 4) == [1 if s == 1 else 0 for s in status] and intact(p, a, data)
    assert k.check() == [] and k.findings() == [] and k.lru_disable_count == 0


@pytest.mark.parametrize("variant", ["hold-mmap-lock", "mpol-alloc"])
def test_huge_pages_move_with_mbind_migrate_pages_and_move_pages(variant):
    k = pymm.Kernel(nodes=2, pages_per_node=256, hugepages_per_node=4, variants={"mbind": variant})
    p = k.spawn("a")
    H = pymm.HPAGE_SIZE
    a = p.mmap(0, 2 * H, RW, ANON | pymm.MAP_HUGETLB)
    p.store(a + 5, b"first huge")
    p.store(a + H + 7, b"second huge")
    home = p.move_pages([a, a + H], None)[0]
    assert p.move_pages([a, a + H], None) == [home, home]
    assert p.move_pages([a + 4096], [other(home)]) == [other(home)]     # any address in it
    p.mbind(a, 2 * H, MPOL_BIND, {other(home)}, MPOL_MF_MOVE)
    assert p.move_pages([a, a + H], None) == [other(home)] * 2
    assert p.migrate_pages({other(home)}, {home}) == 0
    assert p.move_pages([a, a + H], None) == [home] * 2
    assert p.load(a + 5, 10) == b"first huge" and p.load(a + H + 7, 11) == b"second huge"
    assert k.meminfo()["HugePages_Free"] == 6
    p.exit()
    assert k.meminfo()["HugePages_Free"] == 8
    assert k.check() == [] and k.findings() == [] and k.lru_disable_count == 0


# -- bad input: the errno the man page gives, and nothing changes --------------------------------

def _state(k, p, a, n):
    return (vma_policies(p), where(p, a, n), p.mempolicy and (p.mempolicy.mode, p.mempolicy.nodes),
            k.meminfo(), k.lru_disable_count)


@pytest.fixture
def world(kernel):
    k = kernel
    p = k.spawn("victim")
    a = p.mmap(0x1000_0000, 8 * P, RW, ANON | MAP_FIXED)
    fill(p, a, 8)
    p.mmap(0x1000_0000 + 12 * P, 4 * P, RW, ANON | MAP_FIXED)   # a 4-page hole between
    return k, p, a


BAD_MBIND = [
    # (description, args, errno)
    ("unaligned start", lambda a: (a + 1, P, MPOL_BIND, {0}), EINVAL),
    ("unknown mode", lambda a: (a, P, 42, {0}), EINVAL),
    ("negative mode", lambda a: (a, P, -1, {0}), EINVAL),
    ("unknown flag", lambda a: (a, P, MPOL_BIND, {0}, 1 << 3), EINVAL),
    ("static and relative", lambda a: (a, P, MPOL_BIND | MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES,
                                       {0}), EINVAL),
    ("bind, empty nodemask", lambda a: (a, P, MPOL_BIND, set()), EINVAL),
    ("interleave, no nodemask", lambda a: (a, P, MPOL_INTERLEAVE, None), EINVAL),
    ("default with nodes", lambda a: (a, P, MPOL_DEFAULT, {0}), EINVAL),
    ("local with nodes", lambda a: (a, P, MPOL_LOCAL, {0}), EINVAL),
    ("preferred static, no node", lambda a: (a, P, MPOL_PREFERRED | MPOL_F_STATIC_NODES, set()), EINVAL),
    ("a node that does not exist", lambda a: (a, P, MPOL_BIND, {0, 2}), EINVAL),
    ("a negative node", lambda a: (a, P, MPOL_BIND, {-1}), EINVAL),
    ("a node that is not an int", lambda a: (a, P, MPOL_BIND, ["0"]), EINVAL),
    ("nodes not iterable", lambda a: (a, P, MPOL_BIND, 1), EFAULT),
    ("negative length", lambda a: (a, -P, MPOL_BIND, {0}), EINVAL),
    ("address not an int", lambda a: (float(a), P, MPOL_BIND, {0}), EINVAL),
    ("unmapped range", lambda a: (a + 8 * P, 4 * P, MPOL_BIND, {0}), EFAULT),
    ("hole in the middle", lambda a: (a, 16 * P, MPOL_BIND, {0}, MPOL_MF_MOVE), EFAULT),
    ("hole at the head", lambda a: (a + 8 * P, 8 * P, MPOL_BIND, {0}), EFAULT),
    ("hole at the tail", lambda a: (a + 12 * P, 8 * P, MPOL_BIND, {0}), EFAULT),
    ("default over nothing", lambda a: (a + 8 * P, 4 * P, MPOL_DEFAULT, None), EFAULT),
    ("strict, misplaced pages", lambda a: (a, 8 * P, MPOL_BIND, {"other"}, MPOL_MF_STRICT), EIO),
]


@pytest.mark.parametrize("what,args,err", BAD_MBIND, ids=[b[0] for b in BAD_MBIND])
def test_mbind_bad_input_changes_nothing(world, what, args, err):
    k, p, a = world
    before = _state(k, p, a, 8)
    args = args(a)
    if args[3] == {"other"}:
        args = args[:3] + ({other(where(p, a, 1)[0])},) + args[4:]
    with pytest.raises(OSError) as e:
        p.mbind(*args)
    assert e.value.errno == err, e.value
    assert _state(k, p, a, 8) == before
    quiet(k)


def test_mbind_default_over_holes_is_fine_and_zero_length_is_a_no_op(world):
    k, p, a = world
    assert p.mbind(a, 16 * P, MPOL_DEFAULT, None) == 0   # MPOL_DEFAULT: holes are fine
    assert p.mbind(a, 0, MPOL_BIND, {0}) == 0
    assert p.mbind(a + 8 * P, 0, MPOL_BIND, {0}) == 0     # even unmapped
    quiet(k)


@pytest.mark.parametrize("mode,nodes,err", [
    (99, {0}, EINVAL), (MPOL_BIND, set(), EINVAL), (MPOL_INTERLEAVE, None, EINVAL),
    (MPOL_DEFAULT, {1}, EINVAL), (MPOL_LOCAL, {0}, EINVAL), (MPOL_BIND, {5}, EINVAL),
    (MPOL_BIND, {0, 1, 2}, EINVAL), (MPOL_BIND, "01", EFAULT), (MPOL_BIND, [True], EINVAL),
    (MPOL_INTERLEAVE | pymm.MPOL_F_NUMA_BALANCING, {0}, EINVAL), ("bind", {0}, EINVAL),
])
def test_set_mempolicy_bad_input_changes_nothing(world, mode, nodes, err):
    k, p, a = world
    p.set_mempolicy(MPOL_PREFERRED, {1})
    before = _state(k, p, a, 8)
    pol = p.mempolicy
    with pytest.raises(OSError) as e:
        p.set_mempolicy(mode, nodes)
    assert e.value.errno == err
    assert p.mempolicy is pol and _state(k, p, a, 8) == before
    quiet(k)


@pytest.mark.parametrize("old,new,err", [
    ({0}, set(), EINVAL), ({0}, None, EINVAL), ({0}, {2}, EINVAL), ({7}, {1}, EINVAL),
    ({-1}, {1}, EINVAL), (0, {1}, EFAULT), ({0}, {"1"}, EINVAL),
])
def test_migrate_pages_bad_input_changes_nothing(world, old, new, err):
    k, p, a = world
    before = _state(k, p, a, 8)
    with pytest.raises(OSError) as e:
        p.migrate_pages(old, new)
    assert e.value.errno == err
    assert _state(k, p, a, 8) == before
    quiet(k)


@pytest.mark.parametrize("addrs,nodes,flags,err", [
    ("pages", "other", 1 << 3, EINVAL),            # only MPOL_MF_MOVE(_ALL)
    ("pages", "other", MPOL_MF_STRICT, EINVAL),
    ("pages", [0, 0, 0, 0, 0, 0, 0, 2], 0, ENODEV),  # the last one is bad: nothing moves
    ("pages", [-1] * 8, 0, ENODEV),
    ("pages", [0, 1], 0, EFAULT),                  # fewer nodes than pages
    ([1.5], [0], 0, EINVAL),
    (42, None, 0, EFAULT),
    ("pages", 42, 0, EFAULT),
])
def test_move_pages_bad_input_changes_nothing(world, addrs, nodes, flags, err):
    k, p, a = world
    before = _state(k, p, a, 8)
    if addrs == "pages":
        addrs = pages(a, 8)
    if nodes == "other":
        nodes = [other(where(p, a, 1)[0])] * 8
    with pytest.raises(OSError) as e:
        p.move_pages(addrs, nodes, flags)
    assert e.value.errno == err
    assert _state(k, p, a, 8) == before
    quiet(k)


SETTINGS = settings(derandomize=True, max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
MODES = st.sampled_from([MPOL_DEFAULT, MPOL_PREFERRED, MPOL_BIND, MPOL_INTERLEAVE, MPOL_LOCAL,
                         MPOL_PREFERRED_MANY, 7, -3])
NODESETS = st.one_of(st.none(), st.sets(st.integers(-1, 3), max_size=3))
FLAGS = st.sampled_from([0, MPOL_MF_MOVE, MPOL_MF_MOVE_ALL, MPOL_MF_STRICT,
                         MPOL_MF_STRICT | MPOL_MF_MOVE, 1 << 3])


@SETTINGS
@given(off=st.integers(-2, 20), n=st.integers(-1, 20), mode=MODES, nodes=NODESETS, flags=FLAGS)
def test_mbind_any_arguments_keep_the_kernel_consistent(world, off, n, mode, nodes, flags):
    """Whatever the arguments: success or an errno mbind(2) lists, the bytes
    stay, the invariants hold, and a failure other than EIO changed nothing."""
    k, p, a = world
    data = [p.load(a + i * P + 100, 72) for i in range(8)]
    before = _state(k, p, a, 8)
    try:
        p.mbind(a + off * P, n * P, mode, nodes, flags)
    except OSError as e:
        assert e.errno in (EINVAL, EFAULT, EIO), e
        if e.errno != EIO:
            assert _state(k, p, a, 8) == before
    assert [p.load(a + i * P + 100, 72) for i in range(8)] == data
    quiet(k)
    assert k.findings() == []


# -- the "mbind" variants under the controlled scheduler ---------------------------------------------

A = 0x2000_0000
N = 4
FIXED = ("hold-mmap-lock", "mpol-alloc")


def mbind_program(variant, racer, mode=MPOL_INTERLEAVE):
    """Thread 0 mbinds a populated range (all pages on node 0) to node 1 with
    MPOL_MF_MOVE; thread 1 munmaps the range, or faults (load and store) in
    it.  check: invariants, no finding, the bytes, every page freed at exit."""
    def setup():
        k = pymm.Kernel(nodes=2, pages_per_node=64, variants={"mbind": variant})
        p = k.spawn("p")
        p.mmap(A, N * P, RW, ANON | MAP_FIXED)
        for i in range(N):
            p.store(A + i * P, bytes([i + 1]) * 8)
        p.move_pages(pages(A, N), [0] * N)
        return k, p

    def mbinder(st):
        k, p = st
        try:
            p.mbind(A, N * P, mode, {1}, MPOL_MF_MOVE)
        except OSError as e:                     # the racer unmapped it first
            assert e.errno == EFAULT, e

    def unmapper(st):
        k, p = st
        p.munmap(A, N * P)

    def faulter(st):
        k, p = st
        for i in range(N):
            assert p.load(A + i * P, 8) == bytes([i + 1]) * 8
            p.store(A + i * P + 8, b"fault")

    def check(st):
        k, p = st
        assert k.check() == [] and k.findings() == []
        assert k.lru_disable_count == 0
        if racer == "fault":
            for i in range(N):
                assert p.load(A + i * P, 13) == bytes([i + 1]) * 8 + b"fault"
        p.exit()
        assert k.meminfo()["MemFree"] == k.meminfo()["MemTotal"]
        assert k.findings() == []

    return setup, [mbinder, unmapper if racer == "munmap" else faulter], check


def migrate_program(variant, racer):
    """migrate_pages(2) from node 0 to 1 against munmap or faults."""
    setup, (_, racer_fn), check = mbind_program(variant, racer)

    def migrator(st):
        k, p = st
        # a page a fault holds through all of migration's retries may stay behind
        assert 0 <= p.migrate_pages({0}, {1}) <= N

    return setup, [migrator, racer_fn], check


@pytest.mark.parametrize("racer", ["munmap", "fault"])
@pytest.mark.parametrize("variant", ["early-unlock-vma-callback", "unlock-before-ilx"])
def test_buggy_mbind_variants_are_caught_as_suspicious_rcu_usage(lockdep, variant, racer):
    setup, threads, check = mbind_program(variant, racer)
    res = explore(setup, threads, check, strategy="random", seed=0, max_schedules=200)
    f = res.failure
    assert f is not None, f"{variant} ran {res.schedules_run} schedules clean"
    assert f.kind == "rcu", f.message
    assert f.message.startswith("WARNING: suspicious RCU usage")
    where_ = "new_folio" if variant == "early-unlock-vma-callback" else "mbind_interleave_ilx"
    assert where_ in f.message and "neither mmap_lock nor rcu_read_lock" in f.message
    again = replay(setup, threads, f.schedule, check)
    assert again is not None and again.kind == "rcu"


@pytest.fixture
def no_validator():
    from pymm.locking import lockdep
    was = lockdep.is_enabled()
    lockdep.disable()
    yield
    if was:
        lockdep.enable()


def test_early_unlock_is_a_use_after_free_without_the_validator(no_validator):
    """With lockdep off nothing checks the walk itself, but munmap frees the
    VMA -- and its policy -- that the callback is using."""
    setup, threads, check = mbind_program("early-unlock-vma-callback", "munmap", MPOL_BIND)
    # about 1 schedule in 120 hits it (seeds 0-5: 16 to 322 schedules)
    res = explore(setup, threads, check, strategy="random", seed=0, max_schedules=1000)
    f = res.failure
    assert f is not None and f.kind == "use-after-free", f and f.message
    assert "numa_policy" in f.message or "vm_area_struct" in f.message
    assert "new_folio" in f.message and "Freed by task " in f.message
    again = replay(setup, threads, f.schedule, check)
    assert again is not None and again.kind == "use-after-free"
    assert again.message.splitlines()[0] == f.message.splitlines()[0]


@pytest.mark.parametrize("mode", [MPOL_BIND, MPOL_INTERLEAVE])
@pytest.mark.parametrize("racer", ["munmap", "fault"])
@pytest.mark.parametrize("variant", FIXED)
def test_fixed_mbind_variants_run_clean(lockdep, variant, racer, mode):
    setup, threads, check = mbind_program(variant, racer, mode)
    res = explore(setup, threads, check, strategy="random", seed=0, max_schedules=120)
    assert res.failure is None, res.failure.message
    assert res.schedules_run == 120


@pytest.mark.parametrize("variant", FIXED)
def test_fixed_mbind_variants_clean_under_pct(lockdep, variant):
    setup, threads, check = mbind_program(variant, "munmap")
    res = explore(setup, threads, check, strategy="pct", seed=1, max_schedules=100)
    assert res.failure is None, res.failure.message


@pytest.mark.parametrize("racer", ["munmap", "fault"])
@pytest.mark.parametrize("variant", ["hold-mmap-lock", "mpol-alloc", "early-unlock-vma-callback",
                                     "unlock-before-ilx"])
def test_migrate_pages_syscall_runs_clean_in_every_variant(lockdep, variant, racer):
    """The mbind variants change do_migrate_pages only in how long it holds
    mmap_lock (its callback never walked VMAs): clean everywhere."""
    setup, threads, check = migrate_program(variant, racer)
    res = explore(setup, threads, check, strategy="random", seed=0, max_schedules=100)
    assert res.failure is None, res.failure.message


@pytest.mark.parametrize("variant,held_in_mbind,held_in_migrate_pages", [
    ("hold-mmap-lock", "write", "read"), ("mpol-alloc", None, None),
    ("early-unlock-vma-callback", None, None), ("unlock-before-ilx", None, None)])
def test_mmap_lock_across_migration(lockdep, monkeypatch, variant, held_in_mbind,
                                    held_in_migrate_pages):
    """Under hold-mmap-lock, every folio is copied with mmap_lock held (write
    in mbind, read in migrate_pages(2)); otherwise with no mmap_lock at all."""
    k = pymm.Kernel(nodes=2, pages_per_node=64, variants={"mbind": variant})
    p = k.spawn("p")
    a = p.mmap(0, 4 * P, RW, ANON)
    data = fill(p, a, 4)
    p.move_pages(pages(a, 4), [0] * 4)
    seen = []
    real = migrate.move_to_new_folio

    def spy(kernel, dst, src):
        lk = p.mm.mmap_lock
        seen.append("write" if lk.held_by_current(0) else "read" if lk.held_by_current(1) else None)
        return real(kernel, dst, src)
    monkeypatch.setattr(migrate, "move_to_new_folio", spy)
    p.mbind(a, 4 * P, MPOL_BIND, {1}, MPOL_MF_MOVE)
    assert seen == [held_in_mbind] * 4
    seen.clear()
    p.mbind(a, 4 * P, MPOL_DEFAULT, None)
    assert p.migrate_pages({1}, {0}) == 0
    assert seen == [held_in_migrate_pages] * 4
    assert where(p, a, 4) == [0] * 4 and intact(p, a, data)
    quiet(k)
    # single-threaded nothing is freed under the early unlock; the validator still sees the walk
    expect = {"rcu"} if variant == "early-unlock-vma-callback" else set()
    assert {f.kind for f in k.findings()} == expect


def test_interleave_mbind_places_moved_pages_like_new_ones(lockdep):
    """alloc_migration_target_by_mpol: the ilx base computed from the first
    queued folio's VMA puts each moved page where a fault would have."""
    k = pymm.Kernel(nodes=3, pages_per_node=64)
    p = k.spawn("p")
    a = p.mmap(0, 9 * P, RW, ANON)
    data = fill(p, a, 9)
    p.move_pages(pages(a, 9), [0] * 9)
    p.mbind(a, 9 * P, MPOL_INTERLEAVE, {1, 2}, MPOL_MF_MOVE)
    moved = where(p, a, 9)
    assert moved == [1 + ((a >> 12) + i) % 2 for i in range(9)]
    b = p.mmap(0, 9 * P, RW, ANON)
    p.mbind(b, 9 * P, MPOL_INTERLEAVE, {1, 2})
    fill(p, b, 9)
    assert where(p, b, 9) == [1 + ((b >> 12) + i) % 2 for i in range(9)]
    assert intact(p, a, data)
    quiet(k)
    assert k.findings() == [] and lockdep.reports() == []


def test_lru_cache_disable_nests_and_balances(kernel):
    k = kernel
    mempolicy.lru_cache_disable(k)
    mempolicy.lru_cache_disable(k)
    assert k.lru_disable_count == 2
    mempolicy.lru_cache_enable(k)
    mempolicy.lru_cache_enable(k)
    assert k.lru_disable_count == 0


def test_policy_refcounts_follow_vma_split_and_free(kernel):
    k = kernel
    p = k.spawn("a")
    a = p.mmap(0, 6 * P, RW, ANON)
    p.mbind(a, 6 * P, MPOL_BIND, {1})
    pol = vma_objects(p)[0].vm_policy
    assert pol.refcnt == 1
    p.munmap(a + 2 * P, 2 * P)                     # split: the pieces share it
    assert pol.refcnt == 2 and all(v.vm_policy is pol for v in vma_objects(p))
    p.munmap(a, 2 * P)
    assert pol.refcnt == 1 and not is_poisoned(pol)
    p.munmap(a + 4 * P, 2 * P)
    assert is_poisoned(pol)
    quiet(k)
