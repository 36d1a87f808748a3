"""mremap(2) (pymm/mm/mremap.py): moves with contents, shrink, growth in
place, MREMAP_FIXED, MREMAP_DONTUNMAP, the errnos of the man page and LTP
mremap01-06, COW isolation after fork, mlock, swap and file mappings, the
TLB flush of the old range, and mremap racing migration's and reclaim's rmap
walks under the controlled scheduler.  The ``kernel`` fixture fails a test
on any finding; the tests end with k.check() (rss, mapcounts, locked_vm,
page accounting)."""
import errno

import pytest

import pymm
from pymm import (MADV_DONTNEED, MAP_ANONYMOUS, MAP_FIXED, MAP_HUGETLB, MAP_LOCKED, MAP_POPULATE,
                  MAP_PRIVATE, MAP_SHARED, MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE,
                  PAGE_SIZE, PROT_NONE, PROT_READ, PROT_WRITE, RLIMIT_MEMLOCK, SegmentationFault)
from pymm.mm import mremap as mremap_mod
from pymm.mm.mmap_lock import mmap_read_lock, mmap_read_unlock
from pymm.mm.mm_types import VM_LOCKED
from pymm.mm.pgtable import pte_index, pte_offset
from pymm.mm.swap_state import SwapEntry
from pymm.sched import explore

P = PAGE_SIZE
HP = 2 << 20
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
MAYMOVE, FIXED, DONTUNMAP = MREMAP_MAYMOVE, MREMAP_FIXED, MREMAP_DONTUNMAP
A = 0x4000_0000
B = 0x5000_0000


def pattern(i):
    return bytes((i * 13 + j) & 0xFF or 1 for j in range(100)) + b"page%02d" % i


def fill(p, addr, n, base=0):
    for i in range(n):
        p.store(addr + i * P, pattern(base + i))


def assert_contents(p, addr, n, base=0):
    for i in range(n):
        assert p.load(addr + i * P, 106) == pattern(base + i), f"page {i}"


def unmapped(p, addr):
    with pytest.raises(SegmentationFault):
        p.load(addr, 1)
    return True


def vmas(p):
    mmap_read_lock(p.mm)
    try:
        return [(v.vm_start, v.vm_end, v.vm_flags, v.vm_pgoff) for v in p.mm.mm_mt.all()]
    finally:
        mmap_read_unlock(p.mm)


def pte(p, addr):
    pt = pte_offset(p.mm, addr)
    return None if pt is None else pt.ptes[pte_index(addr)]


def _errno(fn, *a):
    with pytest.raises(OSError) as e:
        fn(*a)
    return e.value.errno


# -- moves, shrink, growth ---------------------------------------------------------------

def test_grow_with_move_carries_contents(kernel):
    p = kernel.spawn("a")
    p.mmap(A, 4 * P, RW, ANON | MAP_FIXED)
    p.mmap(A + 4 * P, P, PROT_READ, ANON | MAP_FIXED)   # blocks growth in place
    fill(p, A, 4)
    before = kernel.meminfo()["AnonPages"]
    new = p.mremap(A, 4 * P, 8 * P, MAYMOVE)
    assert new != A
    assert_contents(p, new, 4)
    assert p.load(new + 4 * P, 4 * P) == bytes(4 * P)   # the grown part is new, zero memory
    assert unmapped(p, A) and unmapped(p, A + 3 * P)
    assert kernel.meminfo()["AnonPages"] == before      # the same pages, moved (none copied)
    sh = p.mm.user_shadow                               # the integrity shadow moved with them
    assert all(new + i * P in sh and A + i * P not in sh for i in range(4))
    p.store(new + 6 * P, b"tail")
    assert p.load(new + 6 * P, 4) == b"tail"
    assert kernel.check() == []
    p.exit()
    assert kernel.meminfo()["AnonPages"] == 0 and kernel.meminfo()["PageTables"] == 0


def test_move_keeps_the_folios_and_their_rmap(kernel):
    """The pages move (same folios), keep their index, and the new VMA's
    pgoff is the old one's (copy_vma): rmap finds them at the new address."""
    p = kernel.spawn("a")
    p.mmap(A, 2 * P, RW, ANON | MAP_FIXED)
    fill(p, A, 2)
    f0, f1 = pte(p, A), pte(p, A + P)
    new = p.mremap(A + P, P, P, MAYMOVE | FIXED, B)     # the second page alone
    assert new == B and pte(p, B) is f1 and pte(p, A) is f0 and pte(p, A + P) is None
    got = {(s, e): pg for s, e, _, pg in vmas(p)}
    assert got[(A, A + P)] == A >> 12 and got[(B, B + P)] == (A >> 12) + 1
    assert p.move_pages([B, A], [1, 1]) == [1, 1]       # migration walks the rmap to the new PTE
    assert_contents(p, A, 1)
    assert_contents(p, B, 1, base=1)
    assert kernel.check() == []


def test_shrink_frees_the_tail(kernel):
    p = kernel.spawn("a")
    p.mmap(A, 8 * P, RW, ANON | MAP_FIXED | MAP_POPULATE)
    fill(p, A, 8)
    assert kernel.meminfo()["AnonPages"] == 32
    assert p.mremap(A, 8 * P, 3 * P, 0) == A
    assert kernel.meminfo()["AnonPages"] == 12
    assert_contents(p, A, 3)
    assert unmapped(p, A + 3 * P) and unmapped(p, A + 7 * P)
    assert vmas(p) == [(A, A + 3 * P, vmas(p)[0][2], A >> 12)]
    assert kernel.check() == []


@pytest.mark.parametrize("how", ["downgrade-always", "write-locked", "unless-growsdown",
                                 "stack-write-locked"])
def test_shrink_unmaps_like_munmap(how):
    """The shrink's unmap is munmap's (do_vmi_munmap with unlock): it
    downgrades mmap_lock as the munmap-downgrade variant says."""
    from pymm.locking import events
    k = pymm.Kernel(variants={"munmap-downgrade": how})
    p = k.spawn("a")
    p.mmap(A, 4 * P, RW, ANON | MAP_FIXED | MAP_POPULATE)
    seen = []

    class L:
        def downgrade(self, lock):
            seen.append(lock.name)

    listener = L()
    events.register(listener)
    try:
        assert p.mremap(A, 4 * P, P) == A
    finally:
        events.unregister(listener)
    assert ("&mm->mmap_lock" in seen) == (how != "write-locked")
    assert k.check() == [] and k.findings() == []


def test_grow_in_place(kernel):
    p = kernel.spawn("a")
    p.mmap(A, 2 * P, RW, ANON | MAP_FIXED)
    fill(p, A, 2)
    assert p.mremap(A, 2 * P, 5 * P, 0) == A            # no MAYMOVE needed: room above
    assert_contents(p, A, 2)
    assert p.load(A + 4 * P, 8) == bytes(8)
    p.store(A + 4 * P, b"grown")
    assert [v[:2] for v in vmas(p)] == [(A, A + 5 * P)]
    # and it merges with a matching mapping it now touches
    p.mmap(A + 6 * P, P, RW, ANON | MAP_FIXED)
    assert p.mremap(A, 5 * P, 6 * P, 0) == A
    assert [v[:2] for v in vmas(p)] == [(A, A + 7 * P)]
    assert kernel.check() == []


def test_fixed_replaces_the_destination(kernel):
    p = kernel.spawn("a")
    p.mmap(A, 2 * P, RW, ANON | MAP_FIXED)
    fill(p, A, 2)
    p.mmap(B, 4 * P, RW, ANON | MAP_FIXED)
    fill(p, B, 4, base=10)
    assert p.mremap(A, 2 * P, 2 * P, MAYMOVE | FIXED, B + P) == B + P
    assert_contents(p, B, 1, base=10)
    assert_contents(p, B + P, 2)
    assert_contents(p, B + 3 * P, 1, base=13)
    assert unmapped(p, A)
    assert kernel.meminfo()["AnonPages"] == 16
    assert kernel.check() == []


def test_no_resize_without_move_is_a_noop(kernel):
    p = kernel.spawn("a")
    p.mmap(A, 2 * P, RW, ANON | MAP_FIXED)
    before = vmas(p)
    assert p.mremap(A, 2 * P, 2 * P, 0) == A
    assert p.mremap(A, P + 1, P + 7, MAYMOVE) == A      # lengths are page aligned
    assert vmas(p) == before


def test_dontunmap_leaves_an_empty_mapping(kernel):
    p = kernel.spawn("a")
    p.mmap(A, 2 * P, RW, ANON | MAP_FIXED)
    fill(p, A, 2)
    new = p.mremap(A, 2 * P, 2 * P, MAYMOVE | DONTUNMAP)
    assert new != A
    assert_contents(p, new, 2)
    assert p.load(A, 2 * P) == bytes(2 * P)             # still mapped, its pages gone
    p.store(A, b"fresh")
    assert p.load(A, 5) == b"fresh" and p.load(new, 106) == pattern(0)
    assert kernel.meminfo()["AnonPages"] == 12
    assert kernel.check() == []


def test_dontunmap_of_a_locked_mapping_unlocks_the_old_one(kernel):
    p = kernel.spawn("a")
    p.mmap(A, 2 * P, RW, ANON | MAP_FIXED | MAP_LOCKED)
    assert kernel.meminfo()["Mlocked"] == 8
    new = p.mremap(A, 2 * P, 2 * P, MAYMOVE | DONTUNMAP, B)
    assert new == B                                     # the hint was free
    flags = {s: f for s, e, f, _ in vmas(p)}
    assert flags[B] & VM_LOCKED and not flags[A] & VM_LOCKED
    assert p.mm.locked_vm == 2 and kernel.meminfo()["Mlocked"] == 8
    assert kernel.check() == []


def test_move_of_a_locked_mapping_populates_what_grew(kernel):
    p = kernel.spawn("a")
    p.mmap(A, 2 * P, RW, ANON | MAP_FIXED | MAP_LOCKED)
    p.mmap(A + 2 * P, P, PROT_READ, ANON | MAP_FIXED)
    fill(p, A, 2)
    new = p.mremap(A, 2 * P, 5 * P, MAYMOVE)
    assert p.mm.locked_vm == 5
    assert kernel.meminfo()["Mlocked"] == 20           # the grown part is mlocked and populated
    assert_contents(p, new, 2)
    assert p.mremap(new, 5 * P, 7 * P, 0) == new       # in place: populated too
    assert kernel.meminfo()["Mlocked"] == 28 and p.mm.locked_vm == 7
    assert p.mremap(new, 7 * P, 3 * P) == new
    assert kernel.meminfo()["Mlocked"] == 12 and p.mm.locked_vm == 3
    assert kernel.check() == []


def test_swapped_out_pages_move_as_swap_entries(kernel):
    p = kernel.spawn("a")
    p.mmap(A, 4 * P, RW, ANON | MAP_FIXED)
    fill(p, A, 4)
    assert kernel.reclaim(64) >= 4
    assert isinstance(pte(p, A), SwapEntry)
    new = p.mremap(A, 4 * P, 4 * P, MAYMOVE | FIXED, B)
    assert isinstance(pte(p, new), SwapEntry)
    assert_contents(p, new, 4)                          # swapped in at the new address
    assert kernel.check() == []
    p.exit()
    assert kernel.meminfo()["SwapFree"] == kernel.meminfo()["SwapTotal"]


def test_shared_file_mapping_moves_in_the_file(kernel):
    """The moved VMA keeps its file offset (i_mmap interval tree): a
    truncation through the file unmaps the page at its new address."""
    f = kernel.create_file("f", 4 * P)
    p = kernel.spawn("a")
    a = p.mmap(A, 4 * P, RW, MAP_SHARED, fd=f)
    q = kernel.spawn("b")
    b = q.mmap(0, 4 * P, RW, MAP_SHARED, fd=f)
    p.store(a + 2 * P, b"shared page 2")
    new = p.mremap(a + 2 * P, 2 * P, 3 * P, MAYMOVE | FIXED, B)
    assert p.load(new, 13) == b"shared page 2" == q.load(b + 2 * P, 13)
    q.store(b + 3 * P, b"from q")
    assert p.load(new + P, 6) == b"from q"
    f.ftruncate(2 * P)
    assert pte(p, new) is None                          # zapped through i_mmap at the new address
    with pytest.raises(pymm.BusError):
        p.load(new, 1)
    assert kernel.check() == []


def test_shared_anonymous_duplicate_with_zero_old_size(kernel):
    """old_size 0 of a shared mapping maps it a second time (mremap(2))."""
    p = kernel.spawn("a")
    a = p.mmap(A, 2 * P, RW, MAP_SHARED | MAP_ANONYMOUS)
    p.store(a, b"both")
    dup = p.mremap(a, 0, 2 * P, MAYMOVE)
    assert dup != a and p.load(dup, 4) == b"both"
    p.store(dup + P, b"via dup")
    assert p.load(a + P, 7) == b"via dup"
    b = p.mmap(B, P, RW, ANON | MAP_FIXED)
    assert _errno(p.mremap, b, 0, P, MAYMOVE) == errno.EINVAL      # not a private one
    assert kernel.check() == []


def test_hugetlb_shrinks_but_does_not_move():
    k = pymm.Kernel(hugepages_per_node=4)
    p = k.spawn("a")
    h = p.mmap(0, 2 * HP, RW, ANON | MAP_HUGETLB)
    p.store(h, b"huge")
    assert _errno(p.mremap, h, 2 * HP, 3 * HP, MAYMOVE) == errno.EINVAL    # growth: as mainline
    assert _errno(p.mremap, h, HP, HP, MAYMOVE | FIXED, B) == errno.EINVAL  # pymm: no move
    assert _errno(p.mremap, h + P, HP, HP) == errno.EINVAL
    assert p.mremap(h, 2 * HP, HP - 100) == h            # rounded up to 2 MiB: shrink by one
    assert p.load(h, 4) == b"huge" and unmapped(p, h + HP)
    assert k.check() == [] and k.findings() == []


# -- errnos (man page, LTP mremap01-06) ------------------------------------------------------

def test_errnos_and_nothing_changes(kernel):
    p = kernel.spawn("a")
    p.mmap(A, 4 * P, RW, ANON | MAP_FIXED)
    p.mmap(A + 4 * P, P, PROT_READ, ANON | MAP_FIXED)
    p.mmap(B, 2 * P, RW, ANON | MAP_FIXED)
    fill(p, A, 4)
    fill(p, B, 2, base=20)
    before, mi = vmas(p), kernel.meminfo()
    cases = [
        ((A + 1, P, 2 * P, MAYMOVE), errno.EINVAL),            # mremap04: unaligned old address
        ((A, P, 2 * P, 0x10), errno.EINVAL),                    # unknown flag
        ((A, P, 0, MAYMOVE), errno.EINVAL),                     # zero new size
        ((A, P, P, FIXED, B), errno.EINVAL),                    # FIXED without MAYMOVE
        ((A, P, P, DONTUNMAP, B), errno.EINVAL),                # DONTUNMAP without MAYMOVE
        ((A, P, 2 * P, MAYMOVE | DONTUNMAP), errno.EINVAL),     # DONTUNMAP resizing
        ((A, P, P, MAYMOVE | FIXED, B + 1), errno.EINVAL),      # unaligned new address
        ((A, 2 * P, 2 * P, MAYMOVE | FIXED, A + P), errno.EINVAL),   # overlapping ranges
        ((A, 2 * P, 2 * P, MAYMOVE | FIXED, pymm.constants.TASK_SIZE - P), errno.EINVAL),
        ((A, P, P, MAYMOVE | FIXED, 0x1000), errno.EPERM),      # below mmap_min_addr
        ((0x6000_0000, P, 2 * P, MAYMOVE), errno.EFAULT),      # mremap03: nothing mapped
        ((A, 6 * P, 8 * P, MAYMOVE), errno.EFAULT),             # crosses the end of the VMA
        ((A + 2 * P, 6 * P, 6 * P, MAYMOVE | FIXED, B), errno.EFAULT),
        ((A, 4 * P, 8 * P, 0), errno.ENOMEM),                   # mremap02/05: no room in place
        ((A, 4 * P, 1 << 47, MAYMOVE), errno.ENOMEM),           # no room anywhere
    ]
    for args, want in cases:
        assert _errno(p.mremap, *args) == want, args
        assert vmas(p) == before and kernel.meminfo() == mi, args
    for bad in ((-P, P, P), (A, -1, P), (A, P, P, 0, -P)):
        assert _errno(p.mremap, *bad) == errno.EINVAL
    with pytest.raises(OSError):
        p.mremap(A, P, "x")
    assert_contents(p, A, 4)
    assert_contents(p, B, 2, base=20)
    assert kernel.check() == []


def test_max_map_count_and_rlimit_memlock(kernel):
    p = kernel.spawn("a")
    p.mmap(A, 4 * P, RW, ANON | MAP_FIXED | MAP_LOCKED)
    p.mmap(B, P, RW, ANON | MAP_FIXED)
    kernel.sysctl("vm.max_map_count", p.mm.map_count + 4)
    assert _errno(p.mremap, B, P, P, MAYMOVE | FIXED, B + 8 * P) == errno.ENOMEM
    kernel.sysctl("vm.max_map_count", p.mm.map_count)
    assert _errno(p.mremap, A, 2 * P, P, 0) == errno.ENOMEM         # the shrink would split
    kernel.sysctl("vm.max_map_count", 65530)
    p.capabilities.discard("CAP_IPC_LOCK")
    p.setrlimit(RLIMIT_MEMLOCK, (5 * P, 5 * P))
    before = vmas(p)
    assert _errno(p.mremap, A, 4 * P, 6 * P, MAYMOVE) == errno.EAGAIN   # locked growth
    assert vmas(p) == before and p.mm.locked_vm == 4
    assert p.mremap(A, 4 * P, 5 * P, MAYMOVE) == A                       # within the limit
    assert kernel.check() == []


# -- fork: COW isolation ---------------------------------------------------------------------

def test_cow_shared_pages_moved_by_one_process(kernel):
    p = kernel.spawn("parent")
    p.mmap(A, 3 * P, RW, ANON | MAP_FIXED)
    fill(p, A, 3)
    c = p.fork()
    new = p.mremap(A, 3 * P, 3 * P, MAYMOVE | FIXED, B)
    p.store(new, b"parent's")                   # COW breaks at the new address
    c.store(A + P, b"child's")
    assert c.load(A, 106) == pattern(0) and p.load(new, 8) == b"parent's"
    assert p.load(new + P, 106) == pattern(1) and c.load(A + P, 7) == b"child's"
    assert_contents(c, A + 2 * P, 1, base=2)
    cnew = c.mremap(A, 3 * P, 4 * P, MAYMOVE | FIXED, B + 16 * P)   # and the child moves too
    assert c.load(cnew + 2 * P, 106) == pattern(2) and p.load(new + 2 * P, 106) == pattern(2)
    c.store(cnew + 2 * P, b"c2")
    assert p.load(new + 2 * P, 106) == pattern(2)
    assert kernel.check() == []
    c.exit()
    p.exit()
    assert kernel.meminfo()["AnonPages"] == 0


# -- the TLB ---------------------------------------------------------------------------------

def test_old_translation_is_flushed(kernel):
    """Another CPU that cached the old address's translation faults there
    after the move (move_ptes flushes the old range under the PTE lock) and
    reads the page at the new address."""
    import queue
    import threading
    q, r = queue.Queue(), queue.Queue()

    def cpu1():
        while True:
            fn = q.get()
            if fn is None:
                return
            try:
                r.put((True, fn()))
            except BaseException as e:
                r.put((False, e))

    t = threading.Thread(target=cpu1, daemon=True)
    t.start()

    def on_cpu1(fn):
        q.put(fn)
        ok, v = r.get(timeout=30)
        if not ok:
            raise v
        return v

    try:
        p = kernel.spawn("a")
        p.mmap(A, 2 * P, RW, ANON | MAP_FIXED)
        p.mmap(A + 2 * P, P, PROT_READ, ANON | MAP_FIXED)   # keeps the old PTE table (and no flush of its own)
        fill(p, A, 2)
        assert on_cpu1(lambda: p.load(A, 106)) == pattern(0)       # cached on cpu1
        flushes = [c.flushes for c in p.mm.cpumask]
        p.mremap(A, 2 * P, 2 * P, MAYMOVE | FIXED, B)
        assert [c.flushes for c in p.mm.cpumask][:len(flushes)] != flushes
        with pytest.raises(SegmentationFault):
            on_cpu1(lambda: p.load(A, 1))
        assert on_cpu1(lambda: p.load(B, 106)) == pattern(0)
        on_cpu1(lambda: p.store(B + P, b"cpu1"))
        assert p.load(B + P, 4) == b"cpu1"
    finally:
        q.put(None)
        t.join(10)
    assert kernel.check() == []


# -- racing rmap walks (controlled scheduler) --------------------------------------------------

N = 3


def _setup(variants=None):
    def setup():
        k = pymm.Kernel(nodes=2, pages_per_node=256, variants=variants or {})
        p = k.spawn("a")
        p.mmap(A, N * P, RW, ANON | MAP_FIXED)
        fill(p, A, N)
        return k, p
    return setup


def _mover(st):
    k, p = st
    p.mremap(A, N * P, (N + 1) * P, MAYMOVE | FIXED, B)


def _check(st):
    k, p = st
    assert k.findings() == [], k.findings()[0].text
    assert_contents(p, B, N)
    assert unmapped(p, A)
    assert k.check() == []
    p.exit()
    assert k.meminfo()["AnonPages"] == 0 and k.findings() == []


def test_mremap_races_migration_clean():
    """move_pages migrates the pages with no mmap_lock (try_to_migrate and
    remove_migration_ptes walk the anon_vma) while mremap moves their PTEs
    -- and migration entries -- without the rmap locks (a new VMA follows
    the old one in the interval tree): every entry is found, in the old or
    the new place."""
    def migrator(st):
        k, p = st
        addrs = [A + i * P for i in range(N)]
        try:
            where = p.move_pages(addrs, None)
            p.move_pages(addrs, [1 - n if n in (0, 1) else 0 for n in where], pymm.MPOL_MF_MOVE)
        except OSError:
            pass

    res = explore(_setup(), [_mover, migrator], _check, strategy="pct", seed=0, max_schedules=150)
    assert res.failure is None, res.failure.message
    res = explore(_setup(), [_mover, migrator], _check, strategy="random", seed=1, max_schedules=150)
    assert res.failure is None, res.failure.message


def test_mremap_races_reclaim_clean():
    """Reclaim's rmap walk (try_to_unmap, batched TLB flush) against the
    move; then the pages come back from swap at the new address."""
    def reclaimer(st):
        k, p = st
        k.reclaim(2 * N)

    res = explore(_setup(), [_mover, reclaimer], _check, strategy="pct", seed=0, max_schedules=150)
    assert res.failure is None, res.failure.message


def test_mremap_races_loads_and_stores_clean():
    """Another thread of the process loads and stores the range while it
    moves: it sees the old contents, its own stores, or SIGSEGV after the
    move -- never corruption (the integrity shadow moves with the pages)."""
    def user(st):
        k, p = st
        for i in range(N):
            try:
                p.store(A + i * P, pattern(i)[:8])
                assert p.load(A + i * P, 106) == pattern(i)
            except SegmentationFault:
                pass

    res = explore(_setup(), [_mover, user], _check, strategy="pct", seed=0, max_schedules=150)
    assert res.failure is None, res.failure.message


def test_need_rmap_locks_follows_copy_vma(kernel, monkeypatch):
    """copy_vma: a new VMA needs no rmap locks; merging into a VMA whose
    pgoff is not above the source's does."""
    seen = []
    orig = mremap_mod.move_page_tables

    def spy(vma, old_addr, new_vma, new_addr, length, need_rmap_locks):
        seen.append(need_rmap_locks)
        return orig(vma, old_addr, new_vma, new_addr, length, need_rmap_locks)

    monkeypatch.setattr(mremap_mod, "move_page_tables", spy)
    p = kernel.spawn("a")
    p.mmap(A, 4 * P, RW, ANON | MAP_FIXED)
    fill(p, A, 4)
    p.mremap(A + 2 * P, 2 * P, 2 * P, MAYMOVE | FIXED, B)      # a new VMA at B
    # page 1 (pgoff +1) just below B (pgoff +2): merged, at pgoff +1, above
    # the source VMA's pgoff (+0): no locks
    p.mremap(A + P, P, P, MAYMOVE | FIXED, B - P)
    # page 0 (pgoff +0) below that: merged at pgoff +0, not above the
    # source's: the rmap locks
    p.mremap(A, P, P, MAYMOVE | FIXED, B - 2 * P)
    assert seen == [False, False, True]
    assert [v[:2] for v in vmas(p)] == [(B - 2 * P, B + 2 * P)]
    assert_contents(p, B - 2 * P, 4)
    assert kernel.check() == []


# -- eb66ae030829: the old range's flush before the PTE locks go (LTP mremap06) ---------------

def _mremap06(variant):
    """LTP mremap06 (CVE-2018-18281): a tmpfs page mapped read-only (a clean
    PTE) at BASE, written through another process's mapping."""
    def setup():
        k = pymm.Kernel(nodes=1, pages_per_node=256, variants={"mremap-tlb-flush": variant})
        f = k.create_file("ltp_mremap06", P)
        w = k.spawn("writer")
        w.mmap(B, P, RW, MAP_SHARED | MAP_FIXED, fd=f)
        w.store(B, b"\x42" * 64)
        p = k.spawn("mremap06")
        p.mmap(A, P, PROT_READ, MAP_SHARED | MAP_FIXED, fd=f)
        p.load(A, 8)
        return k, f, p
    return setup


def _reader(st):
    for _ in range(2):
        try:
            st[2].load(A, 8)
        except OSError:
            pass


def _mover06(st):
    st[2].mremap(A, P, P, MAYMOVE | FIXED, A + 2 * P)


def _truncator(st):
    st[1].ftruncate(0)


def _clean(st):
    assert st[0].findings() == [], st[0].findings()[0].title


def test_deferred_flush_is_caught_as_a_stale_tlb_use_after_free():
    """The 4.9-4.18 move_ptes (``deferred-flush``): a clean PTE's flush waits
    for the end of move_page_tables, after the PTE locks are dropped; a
    truncation zaps the page at its new address, flushes that address only
    and frees it, and the reader's CPU reads it through its old
    translation.  Found by the controlled scheduler's preemption-bounded
    search (2 preemptions: the reader's first load, then the mover right
    after move_ptes)."""
    res = explore(_mremap06("deferred-flush"), [_reader, _mover06, _truncator], _clean,
                  strategy="dfs", preemption_bound=2, max_schedules=3000)
    assert res.failure is not None and res.failure.kind == "use-after-free"
    assert "stale TLB entry" in res.failure.message


@pytest.mark.parametrize("variant", ["deferred-flush", "flush-under-ptl"])
def test_no_cpu_keeps_the_old_translation_once_the_pte_locks_go(variant, monkeypatch):
    """What eb66ae030829 guarantees: when move_ptes drops the PTE locks --
    from then on a truncation can unmap and free the page through its new
    PTE -- no CPU holds the old translation any more.  A clean PTE under
    ``deferred-flush`` breaks it; a dirty one does not (it was flushed
    under the old PTE lock even then)."""
    import queue
    import threading
    k, f, p = _mremap06(variant)()
    q, r = queue.Queue(), queue.Queue()

    def cpu1():
        while (fn := q.get()) is not None:
            r.put(fn())

    t = threading.Thread(target=cpu1, daemon=True)
    t.start()
    try:
        q.put(lambda: p.load(A, 8))
        assert r.get(timeout=30) == b"\x42" * 8          # cpu1 caches A's translation
        cpus = list(p.mm.cpumask)
        stale = []
        orig = mremap_mod.move_ptes

        def spy(*a):
            ret = orig(*a)                                # the PTE locks are dropped now
            stale.append(any((p.mm, A >> 12) in c.tlb for c in cpus))
            return ret

        monkeypatch.setattr(mremap_mod, "move_ptes", spy)
        assert p.mremap(A, P, P, MAYMOVE | FIXED, A + 2 * P) == A + 2 * P
        assert stale == [variant == "deferred-flush"]
        # dirty: flushed under the old PTE lock by both
        g = k.create_file("dirty", P)
        p.mmap(B + 8 * P, P, RW, MAP_SHARED | MAP_FIXED, fd=g)
        q.put(lambda: p.store(B + 8 * P, b"dirty"))
        r.get(timeout=30)
        cpus = list(p.mm.cpumask)
        stale.clear()
        A_ = B + 8 * P
        monkeypatch.setattr(mremap_mod, "move_ptes", lambda *a: (orig(*a), stale.append(
            any((p.mm, A_ >> 12) in c.tlb for c in cpus)))[0])
        p.mremap(A_, P, P, MAYMOVE | FIXED, A_ + 2 * P)
        assert stale == [False]
    finally:
        q.put(None)
        t.join(10)
    assert k.check() == [] and k.findings() == []
