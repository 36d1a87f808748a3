"""Bugs the fuzz scenario found (pymm/scenarios/fuzz.py), each minimised by
its shrinker, as regression tests."""
import pytest

import pymm
from pymm import MAP_ANONYMOUS, MAP_POPULATE, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE


def test_write_fault_reuses_a_swapped_in_page_instead_of_orphaning_its_swap_cache(kernel):
    """Shrunk from fuzz seed 35: a page swapped out, shared by fork, swapped
    back in by the parent, unmapped by the child, then written by the parent.
    The write fault copied it (the swap cache held a reference) and left the
    old page in the swap cache for good: SwapCached 4 kB, one swap slot and
    one page gone after every process exited.  Linux's
    wp_can_reuse_anon_folio frees the swap cache and reuses the page."""
    base = kernel.meminfo()
    p = kernel.spawn("a")
    a = p.mmap(0, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE)
    assert kernel.reclaim(1) == 1
    c = p.fork()
    p.load(a, 1)                 # swap-in: in the swap cache, mapped read-only
    c.munmap(a, PAGE_SIZE)       # the child's swap entry goes
    p.store(a, b"\x01")
    assert kernel.meminfo()["SwapCached"] == 0
    assert p.load(a, 1) == b"\x01"
    p.exit()
    c.exit()
    assert kernel.check() == []
    assert kernel.meminfo() == base


def test_dontfork_range_leaves_no_integrity_shadow_in_the_child(kernel):
    """Found by a free-mode fuzz run: fork copied the parent's whole integrity
    shadow, MADV_DONTFORK ranges included, so a child that later mapped fresh
    memory there read zeros where the shadow remembered the parent's store,
    and the detector reported a false "data corruption"."""
    from pymm import MADV_DONTFORK, MAP_FIXED
    p = kernel.spawn("a")
    a = p.mmap(0, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    p.store(a, b"\xe9" * 8)
    p.madvise(a, PAGE_SIZE, MADV_DONTFORK)
    c = p.fork()
    c.mmap(a, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    assert c.load(a, 8) == bytes(8)
    assert p.load(a, 8) == b"\xe9" * 8
    assert kernel.findings() == []
    kernel.check()


def test_store_after_madv_free_is_no_false_data_corruption(kernel):
    """Shrunk from fuzz seed 47 (sequential, 2 families, 300 steps): store,
    MADV_FREE, a store that covers only part of what was there, then a
    load.  The page was not reclaimed, so it keeps its old bytes and the
    store cancels the lazy free: Linux reads 01 01 ... at offset 0.  The
    integrity shadow forgot the page at MADV_FREE and restarted it at the
    next store as a zero page: a false 'data corruption' at offset 0."""
    from pymm import MADV_FREE
    p = kernel.spawn("a")
    a = p.mmap(0, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    p.store(a, b"\x01" * 8)
    p.madvise(a, PAGE_SIZE, MADV_FREE)
    p.store(a + 1, b"\x02" * 8)
    assert p.load(a, 10) == b"\x01" + b"\x02" * 8 + b"\x00"
    assert [f.title for f in kernel.findings()] == []
    # reclaimed in between: zeros, and the shadow follows that too
    p.madvise(a, PAGE_SIZE, MADV_FREE)
    assert kernel.reclaim(8) >= 1
    p.store(a + 2, b"\x03")
    assert p.load(a, 4) == b"\x00\x00\x03\x00"
    p.store(a, b"\x04")
    assert p.load(a, 4) == b"\x04\x00\x03\x00"
    assert [f.title for f in kernel.findings()] == []
    p.exit()
    assert kernel.check() == []


def test_swap_cache_held_locked_at_the_last_unmap_stays_until_reclaimed(kernel):
    """Item 1 of the fuzz campaign: SwapCached 4 kB and one swap slot left
    after every process exited.  Linux's free_swap_and_cache only *tries*
    the folio lock (__try_to_reclaim_swap): if somebody holds it when the
    last swap PTE goes, the folio stays in the swap cache (lazy freeing)
    until reclaim or the swap allocator takes it.  pymm does the same, and
    swap_reclaim_cache is what the fuzz scenario's quiescence check runs
    before it compares meminfo."""
    import threading
    from pymm.mm.filemap import folio_lock, folio_unlock
    from pymm.mm.page_alloc import folio_put
    from pymm.mm.swap_state import swap_cache_get_folio, swap_reclaim_cache
    base = kernel.meminfo()
    p = kernel.spawn("a")
    a = p.mmap(0, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE)
    p.store(a, b"\x05")
    assert kernel.reclaim(1) == 1
    c = p.fork()
    p.load(a, 1)                 # swap-in: in the swap cache, mapped; the child's PTE holds the slot
    si = kernel.swap_info
    [entry] = [si.entries[off] for off in si.swap_map]
    locked, done = threading.Event(), threading.Event()

    def holder():                # somebody (reclaim, a swap-in) holds the folio lock ...
        folio = swap_cache_get_folio(si, entry)
        folio_lock(folio)
        locked.set()
        done.wait()
        folio_unlock(folio)
        folio_put(folio, kernel)

    t = threading.Thread(target=kernel.run_syscall, args=(holder,))
    t.start()
    locked.wait()
    p.exit()
    c.exit()                     # ... when the last swap PTE goes
    done.set()
    t.join()
    assert kernel.meminfo()["SwapCached"] == 4
    assert kernel.check() == []  # a cache-only slot is a consistent state
    assert kernel.run_syscall(swap_reclaim_cache, si) == 1
    assert kernel.meminfo() == base
    assert kernel.check() == []


def test_hugetlb_fault_racing_a_shared_reservation_does_not_leak_it():
    """Found by the fuzz scenario in free mode (HugePages_Rsvd 0 -> 1 after
    every process exited): a fault on a shared hugetlb mapping that has no
    reservation (MAP_NORESERVE here) finds no entry in the file's reserve
    map and allocates without one; before it commits the entry, another
    process's mmap of the same range (hugetlb_reserve_pages) reserves the
    page and adds the entry.  The fault's commit then adds nothing, and the
    mmap's reservation is for a page that already exists: Linux's
    alloc_hugetlb_folio sees map_chg > map_commit and gives that
    reservation back.  pymm did not: one reservation leaked."""
    import errno
    from pymm import MAP_NORESERVE, MAP_SHARED
    from pymm.constants import HPAGE_SIZE as HS
    from pymm.sched import explore

    def setup():
        k = pymm.Kernel(nodes=1, pages_per_node=64, hugepages_per_node=2)
        f = k.create_file("h", HS, hugetlb=True)
        a, b = k.spawn("a"), k.spawn("b")
        addr = a.mmap(0, HS, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd=f)
        return k, f, a, b, addr

    def faulter(s):
        k, f, a, b, addr = s
        a.store(addr, b"x")

    def mapper(s):
        k, f, a, b, addr = s
        s_addr = b.mmap(0, HS, PROT_READ, MAP_SHARED, fd=f)
        b.munmap(s_addr, HS)

    def check(s):
        k, f, a, b, addr = s
        a.exit()
        b.exit()
        f.ftruncate(0)
        assert k.meminfo()["HugePages_Rsvd"] == 0
        assert k.check() == [], [p for p in k.check()]
        assert [x.title for x in k.findings()] == []

    res = explore(setup, [faulter, mapper], check, strategy="random", seed=0, max_schedules=200)
    assert res.failure is None, res.failure.message


def test_split_links_the_new_vma_under_the_same_i_mmap_hold_as_the_shrink():
    """Found by free-mode fuzz campaigns (KASAN use-after-free in mm_counter
    at exit, or in folio_lock_class on a fault): split_vma shrank a file
    VMA under i_mmap_rwsem and linked the new upper VMA in a second hold.  A
    migration of a page there by another process could unmap it before the
    split (try_to_migrate) and restore the mappings in between
    (remove_migration_ptes): the walk found the range in neither VMA, the
    migration entry stayed and the old folio was freed under it.  Linux
    links the new VMA in vma_prepare, under the hold that shrinks the old."""
    from pymm import MAP_SHARED, MPOL_MF_MOVE_ALL
    from pymm.sched import explore
    P = PAGE_SIZE

    def setup():
        k = pymm.Kernel(nodes=2, pages_per_node=64, hugepages_per_node=0)
        f = k.create_file("shm", 2 * P)
        a, b = k.spawn("a"), k.spawn("b")
        pa = a.mmap(0, 2 * P, PROT_READ | PROT_WRITE, MAP_SHARED, fd=f, offset=0)
        a.load(pa + P, 8)                          # a maps page 1 of the file
        pb = b.mmap(0, P, PROT_READ | PROT_WRITE, MAP_SHARED, fd=f, offset=P)
        b.load(pb, 8)
        node = f.mapping.i_pages[1].node
        return dict(k=k, a=a, b=b, pa=pa, pb=pb, to=1 - node)

    def split(s):                                  # a's VMA splits at page 1
        s["a"].mprotect(s["pa"], P, PROT_READ)

    def migrate(s):                                # b moves page 1 to the other node
        assert s["b"].move_pages([s["pb"]], [s["to"]], MPOL_MF_MOVE_ALL) in ([s["to"]], [-16])

    def check(s):
        s["a"].exit()
        s["b"].exit()
        assert [f.title for f in s["k"].findings()] == []

    # about 1 schedule in 80 lands the walks on both sides of the split
    r = explore(setup, [split, migrate], check, strategy="random", seed=0, max_schedules=1000)
    assert r.failure is None, r.failure.message


def test_threads_in_no_process_run_kernel_code_as_tasks_of_their_own(kernel):
    """Found by a free-mode fuzz run (KASAN use-after-free through a stale
    TLB entry): every thread that called ``k.reclaim`` outside a process ran
    as the one init task, so concurrent reclaimers shared its batched TLB
    flush (``tlb_ubc``).  One's try_to_unmap_flush cleared the batch right
    after the other had added an mm's CPUs to it; the other then found
    nothing to flush and freed folios that a CPU still reached.  Each
    thread now runs as a task of its own (pid 0, as each CPU's idle task)."""
    import threading
    from pymm.context import current
    from pymm.mm.rmap import _tlb_ubc, set_tlb_ubc_flush_pending, try_to_unmap_flush
    p = kernel.spawn("a")
    mm = p.mm
    both_in = threading.Barrier(2)
    flushed = threading.Event()
    seen = {}

    def reclaimer_a():                   # unmaps a page of p, its flush batched
        seen["a"] = current()
        set_tlb_ubc_flush_pending(mm, False)
        both_in.wait()
        flushed.wait()
        seen["a_pending"] = _tlb_ubc().flush_required
        try_to_unmap_flush()

    def reclaimer_b():                   # flushes its own batch meanwhile
        seen["b"] = current()
        both_in.wait()
        try_to_unmap_flush()
        flushed.set()

    threads = [threading.Thread(target=kernel.run_syscall, args=(fn,))
               for fn in (reclaimer_a, reclaimer_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen["a"] is not seen["b"] and seen["a"].pid == seen["b"].pid == 0
    assert seen["a_pending"], "another thread's flush emptied this one's batch"
    p.exit()


def test_mprotect_makes_a_writable_migration_entry_readable():
    """Found by a free-mode fuzz run (hugetlb weighted): a store to a tmpfs
    page its process had mprotected read-only succeeded.  Another process was
    migrating the page: mprotect left its writable migration entry as it
    was, and remove_migration_pte then mapped the page writable in the
    read-only VMA.  Linux's change_pte_range makes such an entry readable."""
    from pymm import MAP_SHARED, MPOL_MF_MOVE_ALL
    from pymm.errors import SegmentationFault
    from pymm.sched import explore
    P = PAGE_SIZE

    def setup():
        k = pymm.Kernel(nodes=2, pages_per_node=64, hugepages_per_node=0)
        f = k.create_file("shm", P)
        a, b = k.spawn("a"), k.spawn("b")
        pa = a.mmap(0, P, PROT_READ | PROT_WRITE, MAP_SHARED, fd=f, offset=0)
        a.store(pa, b"\x01")                       # a's PTE: writable and dirty
        pb = b.mmap(0, P, PROT_READ | PROT_WRITE, MAP_SHARED, fd=f, offset=0)
        b.load(pb, 8)
        return dict(k=k, a=a, b=b, pa=pa, pb=pb, to=1 - f.mapping.i_pages[0].node)

    def protect(s):
        s["a"].mprotect(s["pa"], P, PROT_READ)

    def migrate(s):
        s["b"].move_pages([s["pb"]], [s["to"]], MPOL_MF_MOVE_ALL)

    def check(s):
        with pytest.raises(SegmentationFault):
            s["a"].store(s["pa"], b"\x02")
        s["a"].exit()
        s["b"].exit()
        assert [f.title for f in s["k"].findings()] == []

    r = explore(setup, [protect, migrate], check, strategy="random", seed=0, max_schedules=1000)
    assert r.failure is None, r.failure.message
