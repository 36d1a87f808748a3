"""System-call semantics of the emulated mm, checked against the man pages
(mmap(2), munmap(2), mprotect(2), mlock(2), madvise(2), brk(2), fork(2),
ftruncate(2), fallocate(2)) and against /proc/meminfo accounting.

Every test ends with ``k.check()``: the invariant checks (page accounting,
mapcounts, rss and mlock counters, the VMA tree) must find nothing, and the
``kernel`` fixture fails the test on any finding it did not declare.

The helpers at the top (``vmas``, ``pte_folio``) are used by the other mm
test modules too.
"""
import errno

import pytest

import pymm
from pymm import (MADV_DONTNEED, MADV_POPULATE_READ, MADV_POPULATE_WRITE, MAP_ANONYMOUS,
                  MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_LOCKED, MAP_POPULATE, MAP_PRIVATE,
                  MAP_SHARED, MCL_CURRENT, MCL_FUTURE, MLOCK_ONFAULT, PAGE_SIZE, PROT_NONE,
                  PROT_READ, PROT_WRITE)
from pymm.mm.mm_types import VM_LOCKED, VM_LOCKONFAULT, VM_READ, VM_SHARED, VM_WRITE, Folio
from pymm.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from pymm.mm.pgtable import pte_index, pte_offset

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


# -- helpers ------------------------------------------------------------------------

def vmas(p):
    """The process's VMAs as (start, end, vm_flags), read under mmap_lock (read)."""
    mm = p.mm
    mmap_read_lock(mm)
    try:
        return [(v.vm_start, v.vm_end, v.vm_flags) for v in mm.mm_mt.all()]
    finally:
        mmap_read_unlock(mm)


def vmas_in(p, start, end):
    """The VMAs intersecting [start, end), as (start, end, vm_flags)."""
    return [v for v in vmas(p) if v[0] < end and v[1] > start]


def pte_folio(p, addr):
    """The folio the PTE at ``addr`` maps (the zero page included), or None.
    Context: takes mmap_lock for read and the table's ptl."""
    mm = p.mm
    mmap_read_lock(mm)
    try:
        pt = pte_offset(mm, addr)
        if pt is None:
            return None
        pt.ptl.lock()
        e = pt.ptes[pte_index(addr)]
        pt.ptl.unlock()
        return e if isinstance(e, Folio) else None
    finally:
        mmap_read_unlock(mm)


def mi(k, *names):
    m = k.meminfo()
    return m[names[0]] if len(names) == 1 else tuple(m[n] for n in names)


def page(c, n=P):
    return bytes([c]) * n


def clean(k):
    assert k.check() == []


# -- munmap / mprotect: split and merge --------------------------------------------------

def test_partial_munmap_splits_and_full_munmap_removes(kernel):
    k = kernel
    p = k.spawn("a")
    a = p.mmap(0, 10 * P, RW, ANON)
    assert vmas_in(p, a, a + 10 * P) == [(a, a + 10 * P, vmas(p)[0][2])]
    p.munmap(a + 3 * P, 2 * P)                     # a hole in the middle: two VMAs
    got = vmas_in(p, a, a + 10 * P)
    assert [(s, e) for s, e, _ in got] == [(a, a + 3 * P), (a + 5 * P, a + 10 * P)]
    p.munmap(a, P)                                 # trim the head
    p.munmap(a + 9 * P, P)                         # trim the tail
    got = vmas_in(p, a, a + 10 * P)
    assert [(s, e) for s, e, _ in got] == [(a + P, a + 3 * P), (a + 5 * P, a + 9 * P)]
    with pytest.raises(pymm.SegmentationFault):
        p.load(a + 3 * P, 1)
    p.munmap(a, 10 * P)                            # across both and the holes
    assert vmas_in(p, a, a + 10 * P) == []
    assert p.mm.map_count == len(vmas(p)) == 0
    clean(k)


def test_adjacent_compatible_mappings_merge(kernel):
    k = kernel
    p = k.spawn("a")
    a = p.mmap(0, 4 * P, RW, ANON)
    p.store(a, b"low")
    b = p.mmap(a + 4 * P, 4 * P, RW, ANON | MAP_FIXED)
    assert b == a + 4 * P
    p.store(b, b"high")
    assert [(s, e) for s, e, _ in vmas(p)] == [(a, a + 8 * P)]
    c = p.mmap(a + 8 * P, 2 * P, PROT_READ, ANON | MAP_FIXED)  # other flags: no merge
    assert [(s, e) for s, e, _ in vmas(p)] == [(a, a + 8 * P), (c, c + 2 * P)]
    assert p.load(a, 3) == b"low" and p.load(b, 4) == b"high"
    clean(k)


def test_mprotect_splits_sets_flags_and_merges_back(kernel):
    k = kernel
    p = k.spawn("a")
    a = p.mmap(0, 8 * P, RW, ANON)
    p.store(a, page(1, 8 * P))
    p.mprotect(a + 2 * P, 3 * P, PROT_READ)
    got = vmas(p)
    assert [(s, e) for s, e, _ in got] == [(a, a + 2 * P), (a + 2 * P, a + 5 * P), (a + 5 * P, a + 8 * P)]
    assert got[0][2] & VM_WRITE and got[2][2] & VM_WRITE
    assert got[1][2] & VM_READ and not got[1][2] & VM_WRITE
    with pytest.raises(pymm.SegmentationFault) as ei:
        p.store(a + 3 * P, b"x")
    assert ei.value.errno == errno.EFAULT
    assert p.load(a + 3 * P, 2) == b"\x01\x01"      # read still allowed, data intact
    p.mprotect(a + 2 * P, 3 * P, RW)               # same flags again: one VMA
    assert [(s, e) for s, e, _ in vmas(p)] == [(a, a + 8 * P)]
    p.store(a + 3 * P, b"w")                       # writable again (write-protect fault path)
    assert p.load(a + 3 * P, 2) == b"w\x01"
    p.mprotect(a, 8 * P, PROT_NONE)
    with pytest.raises(pymm.SegmentationFault):
        p.load(a, 1)
    clean(k)


# -- fork / COW ------------------------------------------------------------------------

def test_cow_isolation_after_fork(kernel):
    k = kernel
    p = k.spawn("parent")
    a = p.mmap(0, 4 * P, RW, ANON)
    for i in range(3):                              # page 3 is never written
        p.store(a + i * P, page(0x10 + i))
    anon = mi(k, "AnonPages")
    c = p.fork()
    assert mi(k, "AnonPages") == anon               # fork copies no page
    f0 = pte_folio(p, a)
    assert f0 is pte_folio(c, a) and f0._mapcount == 2   # shared until written
    c.store(a, b"child")
    p.store(a + P, b"parent")
    assert p.load(a, 5) == page(0x10, 5)            # the child's write is invisible here
    assert c.load(a, 5) == b"child"
    assert c.load(a + P, 6) == page(0x11, 6)        # ... and the parent's there
    assert p.load(a + P, 6) == b"parent"
    assert p.load(a + 2 * P, P) == c.load(a + 2 * P, P) == page(0x12)
    assert pte_folio(p, a + 2 * P) is pte_folio(c, a + 2 * P)    # read: still one page
    assert p.load(a + 3 * P, 8) == c.load(a + 3 * P, 8) == bytes(8)
    assert mi(k, "AnonPages") == anon + 2 * 4       # exactly the two COW copies
    c.exit()
    assert mi(k, "AnonPages") == anon
    assert p.load(a, 5) == page(0x10, 5)
    clean(k)


def test_fork_child_exit_then_parent_writes_reuse_page(kernel):
    k = kernel
    p = k.spawn("parent")
    a = p.mmap(0, 2 * P, RW, ANON)
    p.store(a, b"before")
    c = p.fork()
    c.exit()
    free = mi(k, "MemFree")
    p.store(a, b"after!")                           # sole owner again: no copy
    assert mi(k, "MemFree") == free
    assert p.load(a, 6) == b"after!"
    clean(k)


# -- files: MAP_SHARED, MAP_PRIVATE, truncation, hole punch ----------------------------------

def test_map_shared_visible_across_processes(kernel):
    k = kernel
    f = k.create_file("shm", 4 * P)
    p, q = k.spawn("p"), k.spawn("q")
    a = p.mmap(0, 4 * P, RW, MAP_SHARED, fd=f)
    b = q.mmap(0, 4 * P, RW, MAP_SHARED, fd=f, offset=P)   # q's page 0 is file page 1
    p.store(a + P, b"from p")
    assert q.load(b, 6) == b"from p"
    q.store(b + 2 * P, b"from q")
    assert p.load(a + 3 * P, 6) == b"from q"
    assert pte_folio(p, a + P) is pte_folio(q, b)   # one page-cache page, two mappings
    assert mi(k, "Shmem") == 2 * 4
    p.exit()
    assert q.load(b, 6) == b"from p"                # the file keeps the data
    clean(k)


def test_map_shared_anonymous_shared_with_child(kernel):
    k = kernel
    p = k.spawn("parent")
    a = p.mmap(0, 4 * P, RW, MAP_SHARED | MAP_ANONYMOUS)
    p.store(a, b"before")
    c = p.fork()
    c.store(a, b"child1")
    assert p.load(a, 6) == b"child1"                # a page touched before fork
    c.store(a + P, b"child2")
    assert p.load(a + P, 6) == b"child2"            # a page first touched after fork
    p.store(a + 2 * P, b"parent")
    assert c.load(a + 2 * P, 6) == b"parent"
    assert mi(k, "Shmem", "AnonPages") == (3 * 4, 0)
    c.exit()
    p.exit()
    clean(k)


def test_map_private_file_cow(kernel):
    k = kernel
    f = k.create_file("f", 2 * P)
    p, q = k.spawn("writer"), k.spawn("private")
    a = p.mmap(0, 2 * P, RW, MAP_SHARED, fd=f)
    b = q.mmap(0, 2 * P, RW, MAP_PRIVATE, fd=f)
    p.store(a, b"file v1")
    assert q.load(b, 7) == b"file v1"               # a read maps the page-cache page
    q.store(b, b"private")                          # the first write copies it
    assert p.load(a, 7) == b"file v1"               # ... and the file does not see it
    assert q.load(b, 7) == b"private"
    p.store(a, b"file v2")
    assert q.load(b, 7) == b"private"               # nor the copy the file's later writes
    p.store(a + P, b"page 1")
    assert q.load(b + P, 6) == b"page 1"            # pages not yet copied still track the file
    assert mi(k, "AnonPages") == 4
    q.exit()
    assert mi(k, "AnonPages") == 0
    clean(k)


def test_truncate_then_sigbus_and_data_within_eof_kept(kernel):
    k = kernel
    f = k.create_file("f", 4 * P)
    p, q = k.spawn("p"), k.spawn("q")
    a = p.mmap(0, 4 * P, RW, MAP_SHARED, fd=f)
    b = q.mmap(0, 4 * P, PROT_READ, MAP_SHARED, fd=f)
    for i in range(4):
        p.store(a + i * P, page(0x41 + i))
    assert mi(k, "Shmem") == 16
    f.ftruncate(P + 100)                            # EOF inside page 1
    assert f.size == P + 100
    assert mi(k, "Shmem") == 8                      # pages 2 and 3 are gone
    for proc, base in ((p, a), (q, b)):
        assert proc.load(base, P) == page(0x41)
        assert proc.load(base + P, 100) == page(0x42, 100)
        assert proc.load(base + P + 100, P - 100) == bytes(P - 100)   # zeroed past EOF
        for off in (2 * P, 3 * P + 17):
            with pytest.raises(pymm.BusError):
                proc.load(base + off, 1)
    with pytest.raises(pymm.BusError):
        p.store(a + 2 * P, b"x")
    f.ftruncate(4 * P)                              # growing back brings zeros, not old data
    assert q.load(b + 3 * P, 4) == bytes(4)
    assert p.load(a, 4) == page(0x41, 4)
    clean(k)


def test_hole_punch_zeroes_and_frees(kernel):
    k = kernel
    f = k.create_file("f", 4 * P)
    p = k.spawn("p")
    a = p.mmap(0, 4 * P, RW, MAP_SHARED, fd=f)
    for i in range(4):
        p.store(a + i * P, page(0x61 + i))
    assert mi(k, "Shmem") == 16
    free = mi(k, "MemFree")
    f.fallocate(pymm.FALLOC_FL_PUNCH_HOLE | pymm.FALLOC_FL_KEEP_SIZE, P, 2 * P)
    assert f.size == 4 * P                          # KEEP_SIZE
    assert mi(k, "Shmem") == 8 and mi(k, "MemFree") == free + 8
    assert p.load(a + P, P) == bytes(P) and p.load(a + 2 * P, P) == bytes(P)
    assert p.load(a, P) == page(0x61) and p.load(a + 3 * P, P) == page(0x64)
    assert mi(k, "Shmem") == 16                     # reading the hole through MAP_SHARED refills it
    f.fallocate(pymm.FALLOC_FL_PUNCH_HOLE | pymm.FALLOC_FL_KEEP_SIZE, 3 * P + 10, 20)
    assert mi(k, "Shmem") == 16                     # a partial page is zeroed, not freed
    assert p.load(a + 3 * P + 8, 24) == page(0x64, 2) + bytes(20) + page(0x64, 2)
    clean(k)


def test_madv_remove_punches_the_file(kernel):
    k = kernel
    f = k.create_file("f", 2 * P)
    p = k.spawn("p")
    a = p.mmap(0, 2 * P, RW, MAP_SHARED, fd=f)
    p.store(a, page(7, 2 * P))
    p.madvise(a + P, P, pymm.MADV_REMOVE)
    assert mi(k, "Shmem") == 4
    assert p.load(a + P, P) == bytes(P) and p.load(a, P) == page(7)
    clean(k)


# -- mlock ---------------------------------------------------------------------------------

def _zero_mlock(k):
    assert mi(k, "Mlocked", "Unevictable") == (0, 0)


@pytest.mark.parametrize("undo", ["munlock", "munmap", "exit", "munlockall"])
def test_mlock_accounting(kernel, undo):
    k = kernel
    p = k.spawn("p")
    a = p.mmap(0, 8 * P, RW, ANON)
    _zero_mlock(k)
    p.mlock(a + 2 * P, 5 * P)
    assert mi(k, "Mlocked", "Unevictable") == (20, 20)
    assert mi(k, "AnonPages") == 20                 # mlock populates
    assert p.mm.locked_vm == 5
    got = vmas(p)
    assert [(s, e, bool(fl & VM_LOCKED)) for s, e, fl in got] == [
        (a, a + 2 * P, False), (a + 2 * P, a + 7 * P, True), (a + 7 * P, a + 8 * P, False)]
    clean(k)
    if undo == "munlock":
        p.munlock(a, 8 * P)
        assert [(s, e) for s, e, _ in vmas(p)] == [(a, a + 8 * P)]    # merged again
    elif undo == "munmap":
        p.munmap(a + 2 * P, 5 * P)
    elif undo == "munlockall":
        p.munlockall()
    else:
        p.exit()
    _zero_mlock(k)
    if undo != "exit":
        assert p.mm.locked_vm == 0
    clean(k)


def test_mlock_unaligned_rounds_to_pages(kernel):
    k = kernel
    p = k.spawn("p")
    a = p.mmap(0, 8 * P, RW, ANON)
    p.mlock(a + P + 5, 2 * P)                       # touches pages 1, 2 and 3
    assert mi(k, "Mlocked") == 12 and p.mm.locked_vm == 3
    p.munlock(a + P + 5, 2 * P)
    _zero_mlock(k)
    clean(k)


@pytest.mark.parametrize("how", ["mlock2", "mlockall"])
def test_mlock_onfault_still_populates_hugetlb(how):
    """mlock_fixup gives a hugetlb VMA neither VM_LOCKED nor VM_LOCKONFAULT,
    and do_mlock/mlockall populate whatever the flags (mainline): so
    MLOCK_ONFAULT/MCL_ONFAULT fault a private hugetlb mapping in, for write
    (it is writable), and break the COW it shares with a fork child.  pymm
    skipped the populate for ONFAULT."""
    from pymm import MAP_HUGETLB, MCL_ONFAULT
    from pymm.constants import HPAGE_SIZE as HS
    k = pymm.Kernel(nodes=1, pages_per_node=64, hugepages_per_node=3)
    p = k.spawn("p")
    a = p.mmap(0, 2 * HS, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB)
    p.store(a, b"p")
    c = p.fork()
    assert k.meminfo()["HugePages_Free"] == 2
    if how == "mlock2":
        p.mlock2(a, 2 * HS, MLOCK_ONFAULT)
    else:
        p.mlockall(MCL_CURRENT | MCL_ONFAULT)
    # page 1 faulted in, page 0's COW broken: three pages in use
    assert k.meminfo()["HugePages_Free"] == 0
    assert not vmas(p)[0][2] & (VM_LOCKED | VM_LOCKONFAULT)
    c.store(a, b"c")                                # the child's page is its own now
    assert p.load(a, 1) == b"p" and c.load(a, 1) == b"c"
    c.exit()
    p.exit()
    assert k.check() == []


def test_mlock2_onfault_does_not_populate(kernel):
    k = kernel
    p = k.spawn("p")
    a = p.mmap(0, 8 * P, RW, ANON)
    p.mlock2(a, 8 * P, MLOCK_ONFAULT)
    assert mi(k, "AnonPages", "Mlocked") == (0, 0)
    (s, e, fl), = vmas(p)
    assert fl & VM_LOCKED and fl & VM_LOCKONFAULT
    assert p.mm.locked_vm == 8
    p.store(a + 3 * P, b"x")                        # faulted in: now locked
    assert mi(k, "AnonPages", "Mlocked", "Unevictable") == (4, 4, 4)
    p.load(a + 5 * P, 1)                            # the zero page is never mlocked
    assert mi(k, "Mlocked") == 4
    p.munmap(a, 8 * P)
    _zero_mlock(k)
    clean(k)


def test_mlockall_future_locks_and_populates_later_mappings(kernel):
    k = kernel
    p = k.spawn("p")
    before = p.mmap(0, 2 * P, RW, ANON)             # mapped before: MCL_FUTURE leaves it alone
    p.mlockall(MCL_FUTURE)
    assert mi(k, "Mlocked") == 0
    a = p.mmap(0, 8 * P, RW, ANON)
    assert mi(k, "AnonPages", "Mlocked", "Unevictable") == (32, 32, 32)
    assert all(fl & VM_LOCKED for s, e, fl in vmas_in(p, a, a + 8 * P))
    assert not vmas_in(p, before, before + 2 * P)[0][2] & VM_LOCKED
    brk = p.brk(0)
    assert p.brk(brk + 3 * P) == brk + 3 * P        # brk growth is locked and populated too
    assert mi(k, "Mlocked") == 44
    assert p.mm.locked_vm == 11
    c = p.fork()                                    # locks are not inherited
    assert c.mm.locked_vm == 0 and c.mm.def_flags & VM_LOCKED == 0
    c.exit()
    assert mi(k, "Mlocked") == 44
    p.munlockall()
    _zero_mlock(k)
    p.mlockall(MCL_CURRENT)                         # everything mapped now, populated
    assert mi(k, "Mlocked") == 44 + 8
    p.exit()
    _zero_mlock(k)
    clean(k)


def test_map_locked_populates_and_locks(kernel):
    k = kernel
    p = k.spawn("p")
    p.mmap(0, 4 * P, RW, ANON | MAP_LOCKED)
    assert mi(k, "AnonPages", "Mlocked") == (16, 16)
    assert p.mm.locked_vm == 4
    p.exit()
    _zero_mlock(k)
    clean(k)


# -- populate ----------------------------------------------------------------------------

def test_map_populate_residency(kernel):
    k = kernel
    p = k.spawn("p")
    free = mi(k, "MemFree")
    a = p.mmap(0, 64 * P, RW, ANON | MAP_POPULATE)
    assert mi(k, "AnonPages") == 64 * 4             # resident right after mmap returns
    assert mi(k, "MemFree") <= free - 64 * 4
    assert all(pte_folio(p, a + i * P) is not None for i in range(64))
    f = k.create_file("f", 16 * P)
    p.mmap(0, 16 * P, PROT_READ, MAP_SHARED | MAP_POPULATE, fd=f)
    assert mi(k, "Shmem") == 16 * 4                 # file pages brought into the page cache
    clean(k)


def test_madvise_populate_read_and_write(kernel):
    k = kernel
    p = k.spawn("p")
    a = p.mmap(0, 8 * P, RW, ANON)
    p.madvise(a, 8 * P, MADV_POPULATE_READ)
    assert mi(k, "AnonPages") == 0                  # private anon reads map the zero page
    assert pte_folio(p, a) is k.zero_page
    p.madvise(a, 8 * P, MADV_POPULATE_WRITE)
    assert mi(k, "AnonPages") == 32
    assert pte_folio(p, a) is not k.zero_page
    f = k.create_file("f", 4 * P)
    b = p.mmap(0, 4 * P, PROT_READ, MAP_SHARED, fd=f)
    p.madvise(b, 4 * P, MADV_POPULATE_READ)
    assert mi(k, "Shmem") == 16
    with pytest.raises(OSError) as ei:              # POPULATE_WRITE needs write permission
        p.madvise(b, 4 * P, MADV_POPULATE_WRITE)
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(OSError) as ei:              # and a mapped range
        p.madvise(a + 8 * P, P, MADV_POPULATE_READ)
    assert ei.value.errno == errno.ENOMEM
    clean(k)


def test_madvise_dontneed_zeroes_private_anon(kernel):
    k = kernel
    p = k.spawn("p")
    a = p.mmap(0, 4 * P, RW, ANON)
    p.store(a, page(9, 4 * P))
    assert mi(k, "AnonPages") == 16
    p.madvise(a + P, 2 * P, MADV_DONTNEED)
    assert mi(k, "AnonPages") == 8
    assert p.load(a + P, 2 * P) == bytes(2 * P)     # refaults as zero-fill
    assert p.load(a, P) == page(9) and p.load(a + 3 * P, P) == page(9)
    assert [(s, e) for s, e, _ in vmas(p)] == [(a, a + 4 * P)]    # the mapping stays
    clean(k)


# -- MAP_FIXED, MAP_FIXED_NOREPLACE -------------------------------------------------------------

def test_map_fixed_replaces(kernel):
    k = kernel
    p = k.spawn("p")
    a = p.mmap(0, 8 * P, RW, ANON)
    p.store(a, page(3, 8 * P))
    r = p.mmap(a + 2 * P, 2 * P, PROT_READ, ANON | MAP_FIXED)
    assert r == a + 2 * P
    assert [(s, e) for s, e, _ in vmas(p)] == [(a, a + 2 * P), (a + 2 * P, a + 4 * P), (a + 4 * P, a + 8 * P)]
    assert p.load(a + 2 * P, 2 * P) == bytes(2 * P)  # the old pages are gone
    assert p.load(a + P, P) == page(3) and p.load(a + 4 * P, P) == page(3)
    assert mi(k, "AnonPages") == 6 * 4
    with pytest.raises(pymm.SegmentationFault):
        p.store(a + 2 * P, b"x")
    clean(k)


def test_map_fixed_noreplace(kernel):
    k = kernel
    p = k.spawn("p")
    a = p.mmap(0, 4 * P, RW, ANON)
    p.store(a, b"keep")
    for addr, n in ((a, P), (a + 3 * P, 2 * P), (a - P, 2 * P), (a - P, 6 * P)):
        with pytest.raises(OSError) as ei:
            p.mmap(addr, n, RW, ANON | MAP_FIXED_NOREPLACE)
        assert ei.value.errno == errno.EEXIST
    assert p.load(a, 4) == b"keep" and len(vmas(p)) == 1
    r = p.mmap(a + 4 * P, P, PROT_READ, ANON | MAP_FIXED_NOREPLACE)
    assert r == a + 4 * P                           # a free range is mapped exactly there
    clean(k)


def test_map_fixed_noreplace_wins_over_map_fixed(kernel):
    k = kernel
    p = k.spawn("p")
    a = p.mmap(0, 4 * P, RW, ANON)
    p.store(a, b"keep")
    with pytest.raises(OSError) as ei:
        p.mmap(a, P, RW, ANON | MAP_FIXED | MAP_FIXED_NOREPLACE)
    assert ei.value.errno == errno.EEXIST
    assert p.load(a, 4) == b"keep"
    clean(k)


# -- brk ------------------------------------------------------------------------------------

def test_brk_grow_shrink_query(kernel):
    k = kernel
    p = k.spawn("p")
    base = p.brk(0)                                 # query
    assert base == p.mm.start_brk
    assert p.brk(base + 3 * P + 10) == base + 3 * P + 10
    assert p.brk(0) == base + 3 * P + 10
    (s, e, fl), = vmas_in(p, base, base + 4 * P)
    assert (s, e) == (base, base + 4 * P) and fl & VM_WRITE and not fl & VM_SHARED
    p.store(base + 3 * P, b"heap")
    assert mi(k, "AnonPages") == 4
    assert p.brk(base + P) == base + P              # shrink: pages above are unmapped
    assert mi(k, "AnonPages") == 0
    with pytest.raises(pymm.SegmentationFault):
        p.load(base + 2 * P, 1)
    assert p.brk(base + 4 * P) == base + 4 * P      # grow again: fresh zero pages
    assert p.load(base + 3 * P, 4) == bytes(4)
    assert p.brk(base - P) == base + 4 * P          # below start_brk: fails, returns the old break
    assert p.brk(pymm.TASK_SIZE + P) == base + 4 * P
    other = p.mmap(base + 8 * P, P, PROT_READ, ANON | MAP_FIXED)
    assert p.brk(other + P) == base + 4 * P         # would run into a mapping: fails
    assert p.brk(base) == base
    assert vmas_in(p, base, base + 8 * P) == []
    clean(k)


# -- faults ------------------------------------------------------------------------------

def test_segfaults(kernel):
    k = kernel
    p = k.spawn("p")
    a = p.mmap(0, 3 * P, RW, ANON)
    p.mprotect(a + P, P, PROT_READ)
    p.mprotect(a + 2 * P, P, PROT_NONE)
    p.munmap(a, P)
    cases = [(p.load, (a, 1)), (p.store, (a, b"x")),          # unmapped
             (p.store, (a + P, b"x")),                          # PROT_READ
             (p.load, (a + 2 * P, 1)), (p.store, (a + 2 * P, b"x")),   # PROT_NONE
             (p.load, (a + P, 2 * P)),                          # runs into PROT_NONE
             (p.load, (pymm.TASK_SIZE - 1, 1))]
    for fn, args in cases:
        with pytest.raises(pymm.SegmentationFault) as ei:
            fn(*args)
        assert ei.value.errno == errno.EFAULT and isinstance(ei.value, OSError)
    assert p.load(a + P, P) == bytes(P)
    clean(k)


def test_access_spanning_pages_and_vmas(kernel):
    k = kernel
    p = k.spawn("p")
    a = p.mmap(0, 4 * P, RW, ANON)
    p.mprotect(a + 2 * P, 2 * P, PROT_READ | pymm.PROT_EXEC)   # two VMAs under one load
    data = bytes(range(256)) * 8
    p.store(a + 2 * P - 1000, data[:1000])
    assert p.load(a + 2 * P - 1000, 1000 + 5) == data[:1000] + bytes(5)
    clean(k)


# -- exit returns everything --------------------------------------------------------------------

def test_exit_returns_every_page(kernel):
    k = kernel
    total = mi(k, "MemTotal")
    assert mi(k, "MemFree") == total
    f = k.create_file("f", 8 * P)
    p = k.spawn("p")
    a = p.mmap(0, 32 * P, RW, ANON | MAP_POPULATE)
    b = p.mmap(0, 8 * P, RW, MAP_PRIVATE, fd=f)
    p.store(b, page(1, 8 * P))                      # COW copies; the page cache fills on read
    p.mlock(a, 8 * P)
    c = p.fork()
    c.store(a, b"child")
    g = c.fork()
    g.brk(g.brk(0) + 4 * P)
    g.store(g.brk(0) - P, b"grandchild")
    assert mi(k, "MemFree") < total and mi(k, "PageTables") > 0
    for proc in (c, p, g):
        proc.exit()
    assert mi(k, "AnonPages", "Mlocked", "Unevictable", "PageTables") == (0, 0, 0, 0)
    assert mi(k, "MemFree") == total - mi(k, "Shmem")   # only the file's cached pages remain
    f.ftruncate(0)
    assert mi(k, "MemFree") == total
    assert k.processes() == []
    with pytest.raises(OSError) as ei:
        p.mmap(0, P, RW, ANON)
    assert ei.value.errno == errno.ESRCH
    clean(k)
