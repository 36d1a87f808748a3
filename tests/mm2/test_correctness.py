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


# -- 4, 4b: a hugetlb VMA is never split off a huge page boundary ---------------------------

def hkern(per_node=2, nodes=1):
    return pymm.Kernel(nodes=nodes, pages_per_node=128, hugepages_per_node=per_node)


def vma_ranges(p):
    return [(v.vm_start, v.vm_end) for v in p.mm.mm_mt.all_unchecked()]


def test_mlock_of_part_of_a_hugetlb_mapping_skips_it_without_splitting():
    """mlock_fixup skips hugetlb VMAs (no VM_LOCKED, no locked_vm, no split)."""
    from pymm.mm.mm_types import VM_LOCKED
    k = hkern()
    p = k.spawn("a")
    h = p.mmap(0, HS, RW, ANON | MAP_HUGETLB)
    before = vma_ranges(p)
    assert p.mlock(h + P, P) == 0
    assert p.munlock(h + P, P) == 0
    assert p.mlockall(pymm.MCL_CURRENT) == 0
    assert vma_ranges(p) == before
    assert not p.mm.mm_mt.lookup_unchecked(h).vm_flags & VM_LOCKED and p.mm.locked_vm == 0
    p.store(h + HS - 8, b"12345678")
    assert p.madvise(h, HS, MADV_DONTNEED) == 0          # not VM_LOCKED: allowed
    assert p.load(h + HS - 8, 8) == b"\0" * 8
    p.exit()
    clean(k)


@pytest.mark.parametrize("call", ["dontfork", "dofork", "mbind", "mprotect", "munmap"])
def test_splitting_a_hugetlb_vma_off_a_huge_page_boundary_is_einval(call):
    k = hkern()
    p = k.spawn("a")
    h = p.mmap(0, HS, RW, ANON | MAP_HUGETLB)
    p.store(h, b"x")
    before = vma_ranges(p)
    fn = {"dontfork": lambda: p.madvise(h + P, P, pymm.MADV_DONTFORK),
          "dofork": lambda: p.madvise(h + P, P, pymm.MADV_DOFORK),
          "mbind": lambda: p.mbind(h + P, P, pymm.MPOL_BIND, [0]),
          "mprotect": lambda: p.mprotect(h + P, P, PROT_READ),
          "munmap": lambda: p.munmap(h + P, P)}[call]
    with pytest.raises(OSError) as ei:
        fn()
    assert ei.value.errno == errno.EINVAL
    assert vma_ranges(p) == before
    assert p.load(h, 1) == b"x"
    p.exit()
    clean(k)


def test_brk_shrinking_into_a_hugetlb_mapping_over_the_heap_fails():
    k = hkern()
    p = k.spawn("a")
    base = p.brk(0)
    assert base % HS == 0
    assert p.brk(base + 2 * HS) == base + 2 * HS
    assert p.mmap(base + HS, HS, RW, ANON | MAP_HUGETLB | pymm.MAP_FIXED) == base + HS
    before = vma_ranges(p)
    assert p.brk(base + HS + P) == base + 2 * HS            # refused: the old break
    assert vma_ranges(p) == before
    p.store(base + HS, b"y")
    p.exit()
    clean(k)


def test_mprotect_decides_the_hugetlb_split_under_the_write_lock_it_splits_with():
    """4b: mprotect checked under mmap_lock for read, dropped it, and split
    later under the write lock; a MAP_FIXED hugetlb mmap in between got split."""
    def setup():
        k = hkern()
        p = k.spawn("a")
        x = p.mmap(0, 2 * HS, RW, ANON)
        x = (x + HS - 1) & ~(HS - 1)
        return k, p, x

    def protector(s):
        k, p, x = s
        try:
            p.mprotect(x + P, P, PROT_READ)
        except OSError as e:
            assert e.errno in (errno.EINVAL, errno.ENOMEM)

    def mapper(s):
        k, p, x = s
        p.mmap(x, HS, RW, ANON | MAP_HUGETLB | pymm.MAP_FIXED)

    def check(s):
        k, p, x = s
        for a, b in vma_ranges(p):
            v = p.mm.mm_mt.lookup_unchecked(a)
            if v.vm_flags & pymm.mm.mm_types.VM_HUGETLB:
                assert a % HS == 0 and b % HS == 0
        p.exit()
        clean(k)

    res = explore(setup, [protector, mapper], check, strategy="random", seed=0, max_schedules=80)
    assert res.failure is None, res.failure.message


# -- 5, 6: hugetlb MADV_DONTNEED -----------------------------------------------------------

def test_hugetlb_dontneed_needs_an_aligned_start_and_rounds_the_end_down():
    k = hkern()
    p = k.spawn("a")
    h = p.mmap(0, 2 * HS, RW, ANON | MAP_HUGETLB)
    p.store(h, b"first")
    p.store(h + HS, b"second")
    with pytest.raises(OSError) as ei:
        p.madvise(h + P, P, MADV_DONTNEED)
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(OSError) as ei:
        p.madvise(h, HS, pymm.MADV_FREE)
    assert ei.value.errno == errno.EINVAL
    assert p.madvise(h, P, MADV_DONTNEED) == 0               # rounds down to nothing
    assert p.load(h, 5) == b"first"
    assert p.madvise(h, HS + P, MADV_DONTNEED) == 0          # only the first huge page
    assert p.load(h, 5) == b"\0" * 5
    assert p.load(h + HS, 6) == b"second"
    p.exit()
    clean(k)


def test_hugetlb_dontneed_of_a_private_page_restores_its_reservation():
    """df7a6d1f6405: otherwise a NORESERVE mapping takes the freed page and
    the owner, who had a reservation, gets SIGBUS."""
    k = hkern(per_node=1)
    a, b = k.spawn("a"), k.spawn("b")
    ha = p_h = a.mmap(0, HS, RW, ANON | MAP_HUGETLB)
    assert k.meminfo()["HugePages_Rsvd"] == 1
    a.store(ha, b"a")
    assert k.meminfo()["HugePages_Rsvd"] == 0
    assert a.madvise(p_h, HS, MADV_DONTNEED) == 0
    assert k.meminfo()["HugePages_Rsvd"] == 1
    clean(k)
    hb = b.mmap(0, HS, RW, ANON | MAP_HUGETLB | pymm.MAP_NORESERVE)
    with pytest.raises(pymm.BusError):
        b.store(hb, b"b")                                    # the free page is a's
    a.store(ha, b"A")
    assert a.load(ha, 1) == b"A"
    b.exit()
    a.exit()
    assert k.meminfo()["HugePages_Rsvd"] == 0 and k.meminfo()["HugePages_Free"] == 1
    clean(k)


# -- 7: the page tables at the top of the address space -------------------------------------

def test_page_tables_at_the_top_of_the_address_space_are_freed():
    from pymm.constants import TASK_SIZE
    k = pymm.Kernel(nodes=1, pages_per_node=64, hugepages_per_node=0)
    p = k.spawn("a")
    for addr in (TASK_SIZE - P, TASK_SIZE - 4 * 1024 * 1024):
        assert p.mmap(addr, P, RW, ANON | pymm.MAP_FIXED) == addr
        p.store(addr, b"top")
        assert k.meminfo()["PageTables"] > 0
        p.munmap(addr, P)
        assert k.meminfo()["PageTables"] == 0
    p.mmap(TASK_SIZE - P, P, RW, ANON | pymm.MAP_FIXED)
    p.store(TASK_SIZE - P, b"top")
    p.exit()
    clean(k)


# -- 8, 10, 10b: mlock, populate and protection semantics -----------------------------------

def shm_kern():
    return pymm.Kernel(nodes=1, pages_per_node=128, hugepages_per_node=1)


def test_mlock_of_a_write_only_shared_mapping_populates_it():
    """populate_vma_page_range uses FOLL_FORCE for any accessible VMA
    (fdf4c587a793): PROT_WRITE-only MAP_SHARED gets its pages mlocked."""
    k = shm_kern()
    p = k.spawn("a")
    f = k.create_file("w", 4 * P)
    a = p.mmap(0, 4 * P, PROT_WRITE, pymm.MAP_SHARED, fd=f)
    assert p.mlock(a, 4 * P) == 0
    assert k.meminfo()["Mlocked"] == 16
    a2 = p.mmap(0, 4 * P, PROT_WRITE, MAP_ANONYMOUS | pymm.MAP_SHARED)
    assert p.mlock2(a2, 4 * P, 0) == 0
    assert k.meminfo()["Mlocked"] == 32
    p.exit()
    clean(k)


def test_write_only_mapping_is_readable_as_on_x86_but_not_populate_read():
    k = shm_kern()
    p = k.spawn("a")
    a = p.mmap(0, P, PROT_WRITE, ANON)
    assert p.load(a, 4) == b"\0" * 4
    p.store(a, b"wo")
    assert p.load(a, 2) == b"wo"
    with pytest.raises(OSError) as ei:
        p.madvise(a, P, pymm.MADV_POPULATE_READ)             # gup still needs VM_READ
    assert ei.value.errno == errno.EINVAL
    assert p.madvise(a, P, pymm.MADV_POPULATE_WRITE) == 0
    n = p.mmap(0, P, pymm.PROT_NONE, ANON)
    with pytest.raises(pymm.SegmentationFault):
        p.load(n, 1)
    p.exit()
    clean(k)


def test_mlock_reports_a_populate_failure():
    """do_mlock: __mm_populate's error, as POSIX wants it (EFAULT -> ENOMEM,
    ENOMEM -> EAGAIN); the VMA stays VM_LOCKED."""
    k = shm_kern()
    p = k.spawn("a")
    f = k.create_file("short", P)
    a = p.mmap(0, 4 * P, PROT_READ, pymm.MAP_SHARED, fd=f)      # pages 1-3 beyond EOF: SIGBUS
    with pytest.raises(OSError) as ei:
        p.mlock(a, 4 * P)
    assert ei.value.errno == errno.ENOMEM
    p.exit()
    clean(k)


def test_mlockall_future_alone_leaves_existing_vmas_locked():
    k = shm_kern()
    p = k.spawn("a")
    base = p.brk(0)
    p.brk(base + P)
    assert p.mlockall(pymm.MCL_CURRENT) == 0
    assert p.mm.locked_vm == 1
    assert p.mlockall(pymm.MCL_FUTURE) == 0                     # apply_mlockall_flags: goto out
    assert p.mm.locked_vm == 1
    a = p.mmap(0, P, RW, ANON)
    assert p.mm.locked_vm == 2                                  # and the future is locked
    assert k.meminfo()["Mlocked"] == 8
    p.munlockall()
    assert p.mm.locked_vm == 0
    p.store(a, b"x")
    p.exit()
    clean(k)


def test_mprotect_write_on_a_locked_private_file_mapping_breaks_cow_now():
    from pymm.mm.mm_types import PG_anon
    k = shm_kern()
    p = k.spawn("a")
    f = k.create_file("cow", 2 * P)
    a = p.mmap(0, 2 * P, PROT_READ, MAP_PRIVATE | pymm.MAP_LOCKED, fd=f)
    assert p.mprotect(a, 2 * P, RW) == 0
    from pymm.mm.pgtable import pte_index, pte_offset
    pt = pte_offset(p.mm, a)
    assert all(pt.ptes[pte_index(a + i * P)].flags & PG_anon for i in range(2))
    p.exit()
    clean(k)


def test_madvise_free_is_for_private_anonymous_memory_only():
    k = shm_kern()
    p = k.spawn("a")
    f = k.create_file("ff", P)
    for a in (p.mmap(0, P, RW, pymm.MAP_SHARED, fd=f), p.mmap(0, P, RW, MAP_PRIVATE, fd=f),
              p.mmap(0, P, RW, MAP_ANONYMOUS | pymm.MAP_SHARED)):
        p.store(a, b"keep")
        with pytest.raises(OSError) as ei:
            p.madvise(a, P, pymm.MADV_FREE)
        assert ei.value.errno == errno.EINVAL
        assert p.load(a, 4) == b"keep"
    p.exit()
    clean(k)


def test_move_pages_reports_enomem_when_the_target_node_is_full():
    k = pymm.Kernel(nodes=2, pages_per_node=16, hugepages_per_node=0)
    p, hog = k.spawn("a"), k.spawn("hog")
    a = p.mmap(0, P, RW, ANON)
    p.store(a, b"x")
    n = node_of(p, a)
    other = k.spawn("o2") if (hog.pid % 2) == n else hog      # a process local to the other node
    h = other.mmap(0, 64 * P, RW, ANON)
    i = 0
    while k.nodes[1 - n].nr_free:
        other.store(h + i * P, b"h")
        i += 1
    assert p.move_pages([a], [1 - n], MPOL_MF_MOVE) == [-errno.ENOMEM]
    assert p.load(a, 1) == b"x"
    for q in k.processes():
        q.exit()
    clean(k)


# -- 11: MADV_FREE is a lazy free ---------------------------------------------------------------

def test_madvise_free_pages_are_freed_by_reclaim_unless_written_again():
    """LTP madvise09: clean MADV_FREE'd pages are discarded by reclaim (they
    read back as zeros); a store after MADV_FREE cancels it for that page."""
    k = pymm.Kernel(nodes=1, pages_per_node=128, hugepages_per_node=0)
    p = k.spawn("a")
    a = p.mmap(0, 8 * P, RW, ANON)
    for i in range(8):
        p.store(a + i * P, b"page%d" % i)
    assert p.madvise(a, 8 * P, pymm.MADV_FREE) == 0
    for i in range(8):                                         # nothing happened yet
        assert p.load(a + i * P, 5) == b"page%d" % i
    p.store(a + 3 * P, b"again")
    free_before = k.meminfo()["MemFree"]
    assert k.reclaim(64) == 7                 # the redirtied page is swap-backed again, kept
    m = k.meminfo()
    assert m["SwapTotal"] == m["SwapFree"]
    assert m["MemFree"] == free_before + 7 * 4
    assert k.reclaim(64) == 1                 # and is swapped out like any other next time
    for i in range(8):
        want = b"again" if i == 3 else b"\0" * 5
        assert p.load(a + i * P, 5) == want
    clean(k)
    p.exit()
    clean(k)
    assert k.meminfo()["MemFree"] == k.meminfo()["MemTotal"]


def test_madvise_free_drops_swapped_out_pages_and_keeps_shared_ones():
    k = pymm.Kernel(nodes=1, pages_per_node=128, hugepages_per_node=0)
    p = k.spawn("a")
    a = p.mmap(0, 2 * P, RW, ANON)
    p.store(a, b"out")
    p.store(a + P, b"shared")
    assert k.reclaim(1) == 1                                   # page 0 (oldest) to swap
    c = p.fork()
    assert p.madvise(a, 2 * P, pymm.MADV_FREE) == 0
    assert p.load(a, 3) == b"\0\0\0"                           # its swap entry is gone
    assert c.load(a, 3) == b"out"
    k.reclaim(64)
    assert p.load(a + P, 6) == b"shared" and c.load(a + P, 6) == b"shared"
    clean(k)
    c.exit()
    p.exit()
    clean(k)


def test_madvise_free_racing_loads_is_not_data_corruption():
    def setup():
        k = pymm.Kernel(nodes=1, pages_per_node=64, hugepages_per_node=0)
        a = k.spawn("a")
        addr = a.mmap(0, P, RW, ANON)
        a.store(addr, b"\xaa" * 16)
        a.madvise(addr, P, pymm.MADV_FREE)
        return k, a, addr

    def reclaimer(s):
        s[0].reclaim(8)

    def reader(s):
        k, a, addr = s
        for _ in range(2):
            assert a.load(addr, 16) in (b"\xaa" * 16, b"\0" * 16)

    def check(s):
        clean(s[0])

    res = explore(setup, [reclaimer, reader], check, strategy="random", seed=0, max_schedules=40)
    assert res.failure is None, res.failure.message


# -- 9b: ftruncate to the current size drops what was fallocated beyond EOF ----------------

@pytest.mark.parametrize("huge", [False, True])
def test_ftruncate_to_the_same_size_frees_pages_beyond_eof(huge):
    k = pymm.Kernel(nodes=1, pages_per_node=128, hugepages_per_node=2)
    f = k.create_file("f", 0, hugetlb=huge)
    size = HS if huge else 4 * P
    f.fallocate(pymm.FALLOC_FL_KEEP_SIZE, 0, size)
    m = k.meminfo()
    assert (m["HugePages_Free"] == 1) if huge else (m["Shmem"] == 16)
    f.ftruncate(0)
    m = k.meminfo()
    assert m["HugePages_Free"] == 2 and m["HugePages_Rsvd"] == 0 and m["Shmem"] == 0
    clean(k)


# -- 9: a fault waiting on a migration entry holds no folio reference -----------------------

@pytest.mark.parametrize("shared", [False, True])
def test_migration_waiters_hold_no_reference(monkeypatch, shared):
    """selftests/mm migration.c shared_anon: readers of a page being moved
    made move_pages fail with -EBUSY, because a fault waiting on the
    migration entry held a reference (the refcount check saw it).  One
    attempt per folio here, so a single such waiter shows."""
    from pymm.mm import migrate
    monkeypatch.setattr(migrate, "NR_MAX_MIGRATE_PAGES_RETRY", 1)

    def setup():
        k = pymm.Kernel(nodes=2, pages_per_node=64, hugepages_per_node=0)
        p = k.spawn("a")
        addr = p.mmap(0, P, RW, (MAP_ANONYMOUS | pymm.MAP_SHARED) if shared else ANON)
        p.store(addr, b"data")
        return k, p, addr, node_of(p, addr)

    def mover(s):
        k, p, addr, n = s
        assert p.move_pages([addr], [1 - n], MPOL_MF_MOVE_ALL) == [1 - n]

    def reader(s):
        k, p, addr, n = s
        for _ in range(3):
            assert p.load(addr, 4) == b"data"

    def check(s):
        k, p, addr, n = s
        p.exit()
        clean(k)

    res = explore(setup, [mover, reader], check, strategy="random", seed=0, max_schedules=150)
    assert res.failure is None, res.failure.message


# -- 12: NUMA policy for hugetlb faults and shmem ---------------------------------------------

def test_hugetlb_faults_follow_the_vma_policy():
    k = pymm.Kernel(nodes=2, pages_per_node=64, hugepages_per_node=2)
    p = k.spawn("a")                           # pid 1: local node 1
    h = p.mmap(0, 2 * HS, RW, ANON | MAP_HUGETLB)
    assert p.mbind(h, HS, pymm.MPOL_BIND, [0]) == 0
    assert p.mbind(h + HS, HS, pymm.MPOL_PREFERRED, [0]) == 0
    p.store(h, b"a")
    p.store(h + HS, b"b")
    assert p.move_pages([h, h + HS], None) == [0, 0]
    q = k.spawn("b")
    hq = q.mmap(0, 2 * HS, RW, ANON | MAP_HUGETLB)
    assert q.mbind(hq, 2 * HS, pymm.MPOL_INTERLEAVE, [0, 1]) == 0
    q.store(hq, b"c")
    q.store(hq + HS, b"d")
    assert sorted(q.move_pages([hq, hq + HS], None)) == [1, 1]      # node 0 is full
    p.exit()
    q.exit()
    clean(k)


def test_hugetlb_interleave_spreads_the_pages():
    k = pymm.Kernel(nodes=2, pages_per_node=64, hugepages_per_node=2)
    q = k.spawn("b")
    hq = q.mmap(0, 4 * HS, RW, ANON | MAP_HUGETLB)
    assert q.mbind(hq, 4 * HS, pymm.MPOL_INTERLEAVE, [0, 1]) == 0
    for i in range(4):
        q.store(hq + i * HS, b"x")
    assert q.move_pages([hq + i * HS for i in range(4)], None) == [0, 1, 0, 1]
    q.exit()
    clean(k)


@pytest.mark.parametrize("flags", [pymm.MAP_SHARED, MAP_PRIVATE])
def test_shmem_shared_policy_is_set_by_mbind_and_followed_by_every_mapping(flags):
    """LTP move_pages03/05/11 setup: mbind on a tmpfs mapping sets the
    inode's shared policy, which faults from other processes follow too."""
    k = pymm.Kernel(nodes=2, pages_per_node=64, hugepages_per_node=0)
    f = k.create_file("shm", 4 * P)
    a, b = k.spawn("a"), k.spawn("b")          # local nodes 1 and 0
    pa = a.mmap(0, 4 * P, RW, flags, fd=f)
    assert a.mbind(pa, 2 * P, pymm.MPOL_BIND, [0]) == 0
    assert a.mbind(pa + 2 * P, 2 * P, pymm.MPOL_INTERLEAVE, [0, 1]) == 0
    pb = b.mmap(0, 4 * P, PROT_READ, pymm.MAP_SHARED, fd=f)
    for i in range(4):
        b.load(pb + i * P, 1)                  # b faults the page-cache pages in
    nodes = b.move_pages([pb + i * P for i in range(4)], None)
    assert nodes[:2] == [0, 0]
    assert sorted(nodes[2:]) == [0, 1]
    assert a.mbind(pa, 4 * P, pymm.MPOL_DEFAULT, []) == 0     # back to the task policy
    a.exit()
    b.exit()
    clean(k)


# -- 10c: leaks found by a random program driver ------------------------------------------------

@pytest.mark.parametrize("popul", [pymm.MADV_POPULATE_READ, pymm.MADV_POPULATE_WRITE])
def test_write_fault_on_a_swap_cache_page_no_one_else_holds_reuses_it(popul):
    """Shrunk from a random program: a fork child swaps a page in read-only,
    the parent exits (the slot's count drops to 0, the folio stays in the
    swap cache), then the child's write fault (here mlockall's populate)
    COWed away from it and left it in the swap cache for good.  As the
    kernel: wp_can_reuse_anon_folio takes it out of the swap cache and
    reuses it; and wp_page_copy frees a copied-from swap-cache folio."""
    k = pymm.Kernel(nodes=1, pages_per_node=64, hugepages_per_node=0)
    p = k.spawn("a")
    a = p.mmap(0, 2 * P, RW, ANON)
    p.store(a, b"x")
    assert k.reclaim(64) == 1
    c = p.fork()
    c.madvise(a, 2 * P, popul)
    p.exit()
    assert c.mlockall(pymm.MCL_CURRENT) == 0
    assert c.load(a, 1) == b"x"
    c.exit()
    m = k.meminfo()
    assert m["SwapCached"] == 0 and m["MemFree"] == m["MemTotal"] and m["SwapFree"] == m["SwapTotal"]
    clean(k)
