"""hugetlb and hugetlbfs semantics: MAP_HUGETLB and hugetlbfs mappings,
reservations and /proc/meminfo, COW, PMD sharing, truncation and hole punch,
migration, the hugetlb_walk locking rule, and bad input (mmap(2),
munmap(2), mprotect(2), ftruncate(2), fallocate(2) on hugetlbfs).

Every test ends with ``clean(k)``: the invariant checks -- the huge page
pool's accounting, huge PTE map and reference counts, PMD share counts,
HugePages_Rsvd against the reservations outstanding -- find nothing, and
nothing was reported.
"""
import errno

import pytest

import pymm
from pymm import (FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, MADV_DONTNEED, MAP_ANONYMOUS, MAP_FIXED,
                  MAP_HUGETLB, MAP_NORESERVE, MAP_POPULATE, MAP_PRIVATE, MAP_SHARED, PAGE_SIZE,
                  PROT_READ, PROT_WRITE)
from pymm.constants import HPAGE_SIZE, MAP_HUGE_SHIFT, PUD_SIZE
from pymm.locking import lockdep
from pymm.mm import hugetlb as H
from pymm.mm.mm_types import VM_HUGETLB, VM_LOCKED
from pymm.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from pymm.mm.page_alloc import folio_put
from pymm.mm.rmap import i_mmap_lock_read, i_mmap_unlock_read
from pymm.scenarios.hugetlb_common import migrate_mapped_page

HS = HPAGE_SIZE
G = PUD_SIZE
P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
ANON_HUGE = MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB


@pytest.fixture(autouse=True)
def fresh_lockdep():
    """Lock classes are global: start and end every test with an empty
    dependency graph, so orders recorded elsewhere never leak in or out."""
    lockdep.reset()
    yield
    lockdep.reset()


def kern(per_node=4, nodes=2, **variants):
    return pymm.Kernel(nodes=nodes, pages_per_node=256, hugepages_per_node=per_node,
                       variants=variants or None)


def mi(k, *names):
    m = k.meminfo()
    return m[names[0]] if len(names) == 1 else tuple(m[n] for n in names)


def clean(k):
    assert k.check() == []
    assert k.findings() == [], "\n\n".join(f.text for f in k.findings())


def folio_at(p, addr):
    """The huge folio ``p`` maps at ``addr`` (no reference kept), or None."""
    mmap_read_lock(p.mm)
    try:
        f = H.hugetlb_folio_at(p.mm, addr)
    finally:
        mmap_read_unlock(p.mm)
    if f is not None:
        p.kernel.run_syscall(folio_put, f, p.kernel)
    return f


def huge_ptes(p):
    """Every huge PTE in ``p``'s page tables: [(addr, entry)]."""
    out = []
    for key, pmd in list(p.mm.pgd.items()):
        for i, e in enumerate(pmd.entries):
            if e is not None and not isinstance(e, pymm.mm.pgtable.PteTable):
                out.append(((key << 30) + (i << 21), e))
    return out


def vma_flags(p, addr):
    mmap_read_lock(p.mm)
    try:
        return p.mm.mm_mt.vma_lookup(addr).vm_flags
    finally:
        mmap_read_unlock(p.mm)


# -- MAP_HUGETLB ---------------------------------------------------------------------------

def test_map_hugetlb_faults_huge_pages_and_keeps_bytes():
    k = kern()
    total = mi(k, "HugePages_Total")
    assert (total, mi(k, "Hugepagesize"), mi(k, "Hugetlb")) == (8, 2048, 8 * 2048)
    p = k.spawn("p")
    a = p.mmap(0, 3 * HS, RW, ANON_HUGE)
    assert a % HS == 0 and vma_flags(p, a) & VM_HUGETLB
    assert mi(k, "HugePages_Free", "HugePages_Rsvd") == (8, 3)     # reserved, not yet used
    p.store(a + 5, b"first")
    p.store(a + 2 * HS + HS - 6, b"last!!")
    assert mi(k, "HugePages_Free", "HugePages_Rsvd") == (6, 1)     # two pages faulted in
    assert p.load(a + 5, 5) == b"first"
    assert p.load(a + 3 * HS - 6, 6) == b"last!!"
    assert p.load(a + HS, 4) == bytes(4)                            # a fresh page reads zero
    assert mi(k, "HugePages_Free", "HugePages_Rsvd") == (5, 0)
    assert folio_at(p, a).order == 9
    clean(k)
    p.munmap(a, 3 * HS)
    assert mi(k, "HugePages_Free", "HugePages_Rsvd") == (8, 0)
    clean(k)


def test_length_rounds_up_to_a_huge_page_and_populate():
    k = kern()
    p = k.spawn("p")
    a = p.mmap(0, 1, RW, ANON_HUGE | MAP_POPULATE)
    assert vma_flags(p, a) and mi(k, "HugePages_Free") == 7        # MAP_POPULATE faulted it in
    assert p.load(a + HS - 1, 1) == b"\0"
    with pytest.raises(pymm.SegmentationFault):
        p.load(a + HS, 1)
    p.exit()
    assert mi(k, "HugePages_Free") == 8
    clean(k)


def test_map_locked_populates_but_hugetlb_vmas_are_never_vm_locked():
    k = kern()
    p = k.spawn("p")
    a = p.mmap(0, HS, RW, ANON_HUGE | pymm.MAP_LOCKED)
    assert not vma_flags(p, a) & VM_LOCKED and p.mm.locked_vm == 0
    assert mi(k, "HugePages_Free") == 7
    p.exit()
    clean(k)


def test_fork_cow_of_anonymous_huge_pages():
    k = kern()
    p = k.spawn("parent")
    a = p.mmap(0, HS, RW, ANON_HUGE)
    p.store(a, b"parent")
    c = p.fork()
    assert c.load(a, 6) == b"parent" and folio_at(c, a) is folio_at(p, a)
    c.store(a, b"child!")                        # COW: the child gets its own copy
    assert p.load(a, 6) == b"parent" and c.load(a, 6) == b"child!"
    assert folio_at(c, a) is not folio_at(p, a)
    p.store(a, b"again!")                        # the parent's page is its own again: no copy
    assert mi(k, "HugePages_Free") == 6
    clean(k)
    c.exit()
    p.exit()
    assert mi(k, "HugePages_Free", "HugePages_Rsvd") == (8, 0)
    clean(k)


def test_shared_anonymous_hugetlb_is_shared_with_the_child_and_freed_with_the_last_mapping():
    k = kern()
    p = k.spawn("p")
    a = p.mmap(0, HS, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB)
    c = p.fork()
    c.store(a, b"from child")
    assert p.load(a, 10) == b"from child"
    p.exit()
    assert mi(k, "HugePages_Free") == 7          # the child still maps it
    c.exit()
    assert mi(k, "HugePages_Free", "HugePages_Rsvd") == (8, 0)
    clean(k)


# -- hugetlbfs files -----------------------------------------------------------------------------

def test_hugetlbfs_shared_mapping_is_visible_across_processes():
    k = kern()
    f = k.create_file("shared", 2 * HS, hugetlb=True)
    p, q = k.spawn("p"), k.spawn("q")
    a = p.mmap(0, 2 * HS, RW, MAP_SHARED, fd=f)
    b = q.mmap(0, HS, RW, MAP_SHARED, fd=f, offset=HS)
    assert mi(k, "HugePages_Rsvd") == 2          # the file's pages, reserved once
    p.store(a + HS + 7, b"seen by q")
    assert q.load(b + 7, 9) == b"seen by q"
    q.store(b, b"and back")
    assert p.load(a + HS, 8) == b"and back"
    assert folio_at(p, a + HS) is folio_at(q, b)
    clean(k)
    p.exit()
    q.exit()
    assert mi(k, "HugePages_Free", "HugePages_Rsvd") == (7, 1)   # the file keeps its page
    clean(k)


def test_private_mapping_of_a_hugetlbfs_file_is_copy_on_write():
    k = kern()
    f = k.create_file("cow", HS, hugetlb=True)
    s, p = k.spawn("sharer"), k.spawn("private")
    sa = s.mmap(0, HS, RW, MAP_SHARED, fd=f)
    s.store(sa, b"file data")
    pa = p.mmap(0, HS, RW, MAP_PRIVATE, fd=f)
    assert p.load(pa, 9) == b"file data"
    assert folio_at(p, pa) is folio_at(s, sa)    # read: the page-cache page itself
    p.store(pa, b"mine")
    assert p.load(pa, 9) == b"mine data"
    assert s.load(sa, 9) == b"file data"         # the file never sees a private write
    assert folio_at(p, pa) is not folio_at(s, sa)
    s.store(sa, b"FILE")
    assert p.load(pa, 4) == b"mine"              # nor the private copy the file's later writes
    clean(k)


def test_fallocate_preallocates_against_reservations():
    k = kern()
    f = k.create_file("prealloc", 4 * HS, hugetlb=True)
    p = k.spawn("p")
    a = p.mmap(0, 4 * HS, RW, MAP_SHARED, fd=f)
    assert mi(k, "HugePages_Free", "HugePages_Rsvd") == (8, 4)
    f.fallocate(0, 0, 2 * HS)                    # consumes two of the reservations
    assert mi(k, "HugePages_Free", "HugePages_Rsvd") == (6, 2)
    assert p.load(a + HS, 1) == b"\0"
    clean(k)
    f.fallocate(0, 0, 8 * HS)                    # grows the file to the whole pool
    assert mi(k, "HugePages_Free", "HugePages_Rsvd") == (0, 0) and f.size == 8 * HS
    with pytest.raises(OSError) as e:
        f.fallocate(0, 8 * HS, HS)               # one more: the pool is empty
    assert e.value.errno == errno.ENOSPC and f.size == 8 * HS
    clean(k)


def test_pmd_sharing_shares_one_table_and_unshares_on_munmap():
    k = kern(per_node=8)
    f = k.create_file("big", G, hugetlb=True)
    a, b = k.spawn("a"), k.spawn("b")
    base = 64 * G
    aa = a.mmap(base, G, RW, MAP_SHARED | MAP_NORESERVE | MAP_FIXED, fd=f)
    bb = b.mmap(base + G, G, RW, MAP_SHARED | MAP_NORESERVE | MAP_FIXED, fd=f)   # same alignment
    a.store(aa, b"a")
    b.store(bb + HS, b"b")                       # b's fault shares a's PMD table
    ta, tb = a.mm.pgd[aa >> 30], b.mm.pgd[bb >> 30]
    assert ta is tb and ta.pt_share_count == 1
    assert b.load(bb, 1) == b"a" and a.load(aa + HS, 1) == b"b"
    assert len(huge_ptes(a)) == 2                # one table, both entries
    clean(k)
    a.munmap(aa, G)                              # a unshares: its PUD entry goes, b keeps the table
    assert (aa >> 30) not in a.mm.pgd and ta.pt_share_count == 0 and b.mm.pgd[bb >> 30] is ta
    assert b.load(bb, 1) == b"a" and b.load(bb + HS, 1) == b"b"
    clean(k)
    b.munmap(bb, G)                              # the last user frees it
    assert not b.mm.pgd and pymm.debug.kasan.is_poisoned(ta)
    clean(k)


def test_mprotect_split_unshares_the_pmd_table():
    k = kern(per_node=8)
    f = k.create_file("big", G, hugetlb=True)
    a, b = k.spawn("a"), k.spawn("b")
    base = 64 * G
    for p in (a, b):
        p.mmap(base, G, RW, MAP_SHARED | MAP_NORESERVE | MAP_FIXED, fd=f)
    a.store(base, b"x")
    b.store(base + HS, b"y")
    assert a.mm.pgd[base >> 30] is b.mm.pgd[base >> 30]
    b.mprotect(base + HS, HS, PROT_READ)         # splits b's VMA off the PUD boundary
    assert a.mm.pgd[base >> 30] is not b.mm.pgd.get(base >> 30)
    assert b.load(base + HS, 1) == b"y" and b.load(base, 1) == b"x"
    with pytest.raises(pymm.SegmentationFault):
        b.store(base + HS, b"z")
    clean(k)


def test_truncate_unmaps_every_process_and_returns_the_pages():
    k = kern()
    f = k.create_file("trunc", 3 * HS, hugetlb=True)
    p, q, r = k.spawn("p"), k.spawn("q"), k.spawn("r")
    pa = p.mmap(0, 3 * HS, RW, MAP_SHARED, fd=f)
    qa = q.mmap(0, 3 * HS, RW, MAP_SHARED, fd=f)
    ra = r.mmap(0, 3 * HS, RW, MAP_PRIVATE, fd=f)
    for i in range(3):
        p.store(pa + i * HS, bytes([65 + i]))
    assert q.load(qa + 2 * HS, 1) == b"C"
    r.load(ra + HS, 1)                           # r maps the page-cache page read-only
    r.store(ra + 2 * HS, b"r")                   # and has a private copy of the last one
    gone = [folio_at(p, pa + i * HS) for i in (1, 2)]
    assert mi(k, "HugePages_Free") == 4
    f.ftruncate(HS)
    for proc in (p, q, r):                       # nobody maps a removed page any more
        for _, e in huge_ptes(proc):
            assert e not in gone
    assert all(pymm.debug.kasan.is_poisoned(g) for g in gone)
    # the pages are back; r's private mapping keeps the reservations it has not used,
    # and gets back the one its unmapped private copy had consumed (df7a6d1f6405:
    # __unmap_hugepage_range restores a private owner's reservation)
    assert mi(k, "HugePages_Free", "HugePages_Rsvd") == (7, 3)
    assert p.load(pa, 1) == b"A" and q.load(qa, 1) == b"A"
    for proc, addr in ((p, pa), (q, qa), (r, ra)):
        with pytest.raises(pymm.BusError):
            proc.load(addr + HS, 1)
    clean(k)
    f.ftruncate(3 * HS)                          # growing back: holes read zero
    assert p.load(pa + HS, 1) == b"\0"
    clean(k)


def test_hole_punch_removes_whole_pages_and_zeroes_partial_ones():
    k = kern()
    f = k.create_file("punch", 3 * HS, hugetlb=True)
    p, q = k.spawn("p"), k.spawn("q")
    pa = p.mmap(0, 3 * HS, RW, MAP_SHARED, fd=f)
    qa = q.mmap(0, 3 * HS, RW, MAP_SHARED, fd=f)
    for i in range(3):
        p.store(pa + i * HS, bytes([65 + i]) * 8)
    middle = folio_at(q, qa + HS)
    f.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, HS, HS)
    assert middle not in [e for _, e in huge_ptes(p) + huge_ptes(q)]
    assert mi(k, "HugePages_Free") == 6
    assert q.load(qa + HS, 8) == bytes(8)         # refaults a zero page (the size is kept)
    f.fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 2 * HS + 2, 4)   # partial: zeroed
    assert p.load(pa + 2 * HS, 8) == b"CC\0\0\0\0CC"
    assert p.load(pa, 8) == b"A" * 8
    clean(k)


def test_madvise_dontneed_and_remove():
    k = kern()
    f = k.create_file("madv", HS, hugetlb=True)
    p = k.spawn("p")
    a = p.mmap(0, HS, RW, MAP_SHARED, fd=f)
    p.store(a, b"keep")
    p.madvise(a, HS, MADV_DONTNEED)              # unmaps; the file keeps the page
    assert huge_ptes(p) == [] and p.load(a, 4) == b"keep"
    p.madvise(a, HS, pymm.MADV_REMOVE)           # punches the file
    assert p.load(a, 4) == bytes(4)
    clean(k)


def test_migration_moves_the_node_and_keeps_the_bytes():
    k = kern()
    f = k.create_file("mig", HS, hugetlb=True)
    p, q = k.spawn("p"), k.spawn("q")
    anon = p.mmap(0, HS, RW, ANON_HUGE)
    fa = p.mmap(0, HS, RW, MAP_SHARED, fd=f)
    qa = q.mmap(0, HS, RW, MAP_SHARED, fd=f)
    p.store(anon + 100, b"anonymous bytes")
    p.store(fa + 200, b"file bytes")
    c = p.fork()                                 # the anon page mapped twice
    for addr in (anon, fa):
        before = folio_at(p, addr)
        node = before.node
        assert migrate_mapped_page(p, addr) == 0
        after = folio_at(p, addr)
        assert after is not before and after.node == 1 - node
        assert pymm.debug.kasan.is_poisoned(before)      # the old page went back to the pool
    assert p.load(anon + 100, 15) == b"anonymous bytes" == c.load(anon + 100, 15)
    assert p.load(fa + 200, 10) == b"file bytes" == q.load(qa + 200, 10)
    assert folio_at(c, anon) is folio_at(p, anon)
    clean(k)
    c.exit()
    p.exit()
    q.exit()
    clean(k)


def test_migration_of_a_page_in_a_shared_pmd_table():
    k = kern(per_node=8)
    f = k.create_file("big", G, hugetlb=True)
    a, b = k.spawn("a"), k.spawn("b")
    base = 64 * G
    for p in (a, b):
        p.mmap(base, G, RW, MAP_SHARED | MAP_NORESERVE | MAP_FIXED, fd=f)
    a.store(base, b"shared")
    b.load(base, 1)                              # b shares a's table
    old = folio_at(a, base)
    node = old.node
    assert migrate_mapped_page(b, base) == 0     # one sharer unshared, the page moved
    assert a.load(base, 6) == b"shared" == b.load(base, 6)
    assert folio_at(a, base) is not old and folio_at(a, base).node == 1 - node
    clean(k)


def test_exit_returns_every_huge_page():
    k = kern()
    f = k.create_file("f", 2 * HS, hugetlb=True)
    p = k.spawn("p")
    p.mmap(0, HS, RW, ANON_HUGE)
    a = p.mmap(0, 2 * HS, RW, MAP_PRIVATE, fd=f)
    b = p.mmap(0, 2 * HS, RW, MAP_SHARED, fd=f)
    p.store(b, b"s")
    p.store(a + HS, b"p")
    c = p.fork()
    c.store(a + HS, b"c")
    c.exit()
    p.exit()
    assert mi(k, "HugePages_Free", "HugePages_Rsvd") == (7, 1)    # the file: one page, one reservation
    f.ftruncate(0)
    assert mi(k, "HugePages_Free", "HugePages_Rsvd") == (8, 0)
    clean(k)


# -- the pool running out --------------------------------------------------------------------------

def test_no_huge_pages_left_enomem_for_reserved_mappings_sigbus_for_noreserve():
    k = kern(per_node=1, nodes=1)
    p = k.spawn("p")
    a = p.mmap(0, HS, RW, ANON_HUGE)
    before = (mi(k, "HugePages_Free", "HugePages_Rsvd"), len(p.mm.mm_mt))
    with pytest.raises(OSError) as e:
        p.mmap(0, HS, RW, ANON_HUGE)             # cannot reserve: fails at mmap
    assert e.value.errno == errno.ENOMEM
    assert (mi(k, "HugePages_Free", "HugePages_Rsvd"), len(p.mm.mm_mt)) == before
    n = p.mmap(0, HS, RW, ANON_HUGE | MAP_NORESERVE)   # no reservation: mmap succeeds...
    p.store(a, b"ok")                            # (the reserved one always faults in)
    with pytest.raises(pymm.BusError):
        p.load(n, 1)                             # ...and the fault finds no page: SIGBUS
    p.munmap(a, HS)
    assert p.load(n, 1) == b"\0"                 # a page is free again
    clean(k)


def test_owner_cow_with_an_empty_pool_takes_the_page_from_the_child():
    k = kern(per_node=2, nodes=1)
    f = k.create_file("f", HS, hugetlb=True)
    f.fallocate(0, 0, HS)
    o = k.spawn("owner")
    a = o.mmap(0, HS, RW, MAP_PRIVATE, fd=f)
    o.store(a, b"owner")
    c = o.fork()
    assert mi(k, "HugePages_Free") == 0 and c.load(a, 5) == b"owner"
    o.store(a, b"OWNER")                         # no page for the COW: the child loses its mapping
    assert o.load(a, 5) == b"OWNER"
    with pytest.raises(pymm.BusError):
        c.load(a, 1)                             # "killed due to inadequate hugepage pool"
    clean(k)


# -- the locking rules as checks ---------------------------------------------------------------------

def _shared_vma(k):
    f = k.create_file("rule", HS, hugetlb=True)
    p = k.spawn("p")
    a = p.mmap(0, HS, RW, MAP_SHARED, fd=f)
    p.store(a, b"x")
    mmap_read_lock(p.mm)
    vma = p.mm.mm_mt.vma_lookup(a)
    mmap_read_unlock(p.mm)
    return p, f, a, vma


def test_hugetlb_walk_rule_accepts_the_vma_lock_or_i_mmap_rwsem():
    k = kern()
    p, f, a, vma = _shared_vma(k)

    def walks():
        H.hugetlb_vma_lock_read(vma)
        assert H.hugetlb_walk(vma, a) is not None
        H.hugetlb_vma_unlock_read(vma)
        i_mmap_lock_read(f.mapping)
        assert H.hugetlb_walk(vma, a) is not None
        i_mmap_unlock_read(f.mapping)
    k.run_syscall(walks)
    clean(k)


@pytest.mark.parametrize("as_lockdep_off", [False, True])
def test_hugetlb_walk_without_either_lock_is_reported(as_lockdep_off):
    k = kern()
    p, f, a, vma = _shared_vma(k)
    if as_lockdep_off:
        lockdep.disable()
    try:
        assert k.run_syscall(H.hugetlb_walk, vma, a) is not None
    finally:
        if as_lockdep_off:
            lockdep.enable()
    found = [x for x in k.findings() if x.kind == "assertion"]
    if as_lockdep_off:                           # like the kernel: the check needs CONFIG_LOCKDEP
        assert found == []
    else:
        assert [x.title for x in found] == ["WARNING: hugetlb_walk without vma_lock or i_mmap_rwsem"]
        assert "0 locks held" in found[0].text


def test_huge_pmd_unshare_asserts_i_mmap_rwsem_and_the_vma_lock():
    k = kern(per_node=8)
    f = k.create_file("big", G, hugetlb=True)
    a, b = k.spawn("a"), k.spawn("b")
    base = 64 * G
    for p in (a, b):
        p.mmap(base, G, RW, MAP_SHARED | MAP_NORESERVE | MAP_FIXED, fd=f)
    a.store(base, b"a")
    b.load(base, 1)
    mmap_read_lock(b.mm)
    vma = b.mm.mm_mt.vma_lookup(base)
    mmap_read_unlock(b.mm)

    def unshare_with_imap_read_only():
        i_mmap_lock_read(f.mapping)
        ptep = H.hugetlb_walk(vma, base)
        ptep[0].ptl.lock()
        assert H.huge_pmd_unshare(vma, base, ptep)
        ptep[0].ptl.unlock()
        i_mmap_unlock_read(f.mapping)
    k.run_syscall(unshare_with_imap_read_only)
    titles = sorted(x.title for x in k.findings())
    assert titles == ["WARNING: hugetlb_vma_assert_locked(&vma_lock->rw_sema) failed",
                      "WARNING: lockdep_assert_held_write(&hugetlbfs_i_mmap_rwsem_key) failed"]


# -- bad input ------------------------------------------------------------------------------------------

def _no_change(k, p):
    return (mi(k, "HugePages_Free", "HugePages_Rsvd"),
            [(v.vm_start, v.vm_end, v.vm_flags) for v in p.mm.mm_mt.all_unchecked()])


@pytest.mark.parametrize("call, err", [
    (lambda p, f: p.mmap(0x7000_0010_0000, HS, RW, ANON_HUGE | MAP_FIXED), errno.EINVAL),   # 1 MiB aligned
    (lambda p, f: p.mmap(0, HS, RW, MAP_SHARED, fd=f, offset=P), errno.EINVAL),
    (lambda p, f: p.mmap(0, HS, RW, MAP_SHARED, fd=f, offset=HS // 2), errno.EINVAL),
    (lambda p, f: p.mmap(0, HS, RW, ANON_HUGE | (30 << MAP_HUGE_SHIFT)), errno.EINVAL),    # 1 GiB pages
    (lambda p, f: p.mmap(0, HS, RW, MAP_SHARED | MAP_HUGETLB,
                         fd=p.kernel.create_file("tmpfs", HS)), errno.EINVAL),
    (lambda p, f: p.mmap(0, 0, RW, ANON_HUGE), errno.EINVAL),
    (lambda p, f: f.ftruncate(HS + P), errno.EINVAL),
    (lambda p, f: p.kernel.create_file("odd", HS + P, hugetlb=True), errno.EINVAL),
    (lambda p, f: f.fallocate(pymm.FALLOC_FL_PUNCH_HOLE, 0, HS), errno.EOPNOTSUPP),
])
def test_bad_input_is_rejected_and_changes_nothing(call, err):
    k = kern()
    f = k.create_file("f", 2 * HS, hugetlb=True)
    p = k.spawn("p")
    p.mmap(0, 2 * HS, RW, MAP_SHARED, fd=f)
    before = _no_change(k, p)
    with pytest.raises(OSError) as e:
        call(p, f)
    assert e.value.errno == err
    assert _no_change(k, p) == before
    clean(k)


@pytest.mark.parametrize("op", ["munmap", "mprotect"])
@pytest.mark.parametrize("start, length", [(P, HS), (0, HS + P), (HS // 2, HS // 2), (0, P)])
def test_munmap_and_mprotect_off_a_huge_page_boundary_fail_with_einval(op, start, length):
    k = kern()
    p = k.spawn("p")
    a = p.mmap(0, 2 * HS, RW, ANON_HUGE)
    p.store(a, b"kept")
    before = _no_change(k, p)
    with pytest.raises(OSError) as e:
        if op == "munmap":
            p.munmap(a + start, length)
        else:
            p.mprotect(a + start, length, PROT_READ)
    assert e.value.errno == errno.EINVAL
    assert _no_change(k, p) == before and p.load(a, 4) == b"kept"
    p.munmap(a, 2 * HS + P)                      # covering the whole VMA is fine: no split
    assert mi(k, "HugePages_Free", "HugePages_Rsvd") == (8, 0)
    clean(k)


def test_map_fixed_over_part_of_a_hugetlb_mapping_off_a_boundary_fails():
    k = kern()
    p = k.spawn("p")
    a = p.mmap(0, 2 * HS, RW, ANON_HUGE)
    before = _no_change(k, p)
    with pytest.raises(OSError) as e:
        p.mmap(a + P, P, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    assert e.value.errno == errno.EINVAL and _no_change(k, p) == before
    b = p.mmap(a + HS, HS, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)   # on the boundary: fine
    p.store(b, b"small pages")
    assert mi(k, "HugePages_Rsvd") == 1
    clean(k)
