"""Lock-free user accesses through per-CPU TLBs, TLB shootdown, the mmu_gather,
RCU-freed page tables, reclaim's batched flush and the stale-TLB detector."""
import threading

import pytest

import pymm
from pymm import MADV_DONTNEED, MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PAGE_SIZE, PROT_NONE, PROT_READ, PROT_WRITE
from pymm.locking import events
from pymm.mm import mmu_gather, vmscan
from pymm.mm.filemap import folio_trylock, folio_unlock
from pymm.mm.pgtable import pte_index, pte_offset
from pymm.mm.rmap import TTU_BATCH_FLUSH, try_to_unmap, try_to_unmap_flush
from pymm.mm.swap_state import add_to_swap
from pymm.rcu import call_rcu, rcu_read

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS
A = 0x4000_0000


class LockCounter:
    """An event listener counting lock acquisitions by one thread."""

    def __init__(self, tid):
        self.tid = tid
        self.n = 0

    def acquire(self, lock, read, trylock, subclass, nest_lock):
        if threading.get_ident() == self.tid:
            self.n += 1


def test_load_of_a_present_page_takes_no_lock(kernel):
    p = kernel.spawn()
    p.mmap(A, 2 * P, RW, ANON | MAP_FIXED)
    p.store(A, b"hello")
    p.load(A, 5)                                # fills this CPU's TLB
    c = LockCounter(threading.get_ident())
    events.register(c)
    try:
        assert p.load(A, 5) == b"hello"
        p.store(A, b"HELLO")
        assert p.load(A, 5) == b"HELLO"
        assert c.n == 0
        assert p.load(A + P, 4) == bytes(4)      # not present: a fault, mmap_lock for read
        assert c.n > 0
    finally:
        events.unregister(c)


def test_munmap_flushes_other_cpus(kernel, cpu1):
    p = kernel.spawn()
    p.mmap(A, P, RW, ANON | MAP_FIXED)
    p.store(A, b"x")
    assert cpu1(lambda: p.load(A, 1)) == b"x"          # cached in cpu1's TLB
    p.munmap(A, P)
    with pytest.raises(pymm.SegmentationFault):
        cpu1(lambda: p.load(A, 1))


def test_mprotect_flushes_other_cpus(kernel, cpu1):
    p = kernel.spawn()
    p.mmap(A, P, RW, ANON | MAP_FIXED)
    cpu1(lambda: p.store(A, b"x"))                     # a writable entry in cpu1's TLB
    p.mprotect(A, P, PROT_READ)
    with pytest.raises(pymm.SegmentationFault):
        cpu1(lambda: p.store(A, b"y"))
    p.mprotect(A, P, PROT_NONE)
    with pytest.raises(pymm.SegmentationFault):
        cpu1(lambda: p.load(A, 1))
    p.mprotect(A, P, PROT_READ)
    assert cpu1(lambda: p.load(A, 1)) == b"x"


def test_fork_write_protects_the_parents_tlb(kernel, cpu1):
    p = kernel.spawn()
    p.mmap(A, P, RW, ANON | MAP_FIXED)
    cpu1(lambda: p.store(A, b"before"))
    child = p.fork()
    cpu1(lambda: p.store(A, b"parent"))                # must break COW, not write the shared page
    assert child.load(A, 6) == b"before"
    assert p.load(A, 6) == b"parent"


def test_page_tables_are_freed_after_a_grace_period():
    freed = []
    with rcu_read():
        call_rcu(lambda: freed.append(1))
        assert freed == []                              # a reader is inside
    assert freed == [1]
    call_rcu(lambda: freed.append(2))                   # no reader: at once
    assert freed == [1, 2]


def test_munmap_frees_the_page_table_through_the_gather(kernel):
    from pymm.debug.kasan import is_poisoned
    p = kernel.spawn()
    p.mmap(A, P, RW, ANON | MAP_FIXED)
    p.store(A, b"x")
    pt = pte_offset(p.mm, A)
    with rcu_read():                                    # a lockless walker is inside
        p.munmap(A, P)
        assert not is_poisoned(pt)
    assert is_poisoned(pt)


def _reclaim_racing(k, folio, meanwhile):
    """Reclaim's unmap of one folio with TTU_BATCH_FLUSH; ``meanwhile()``
    runs while the flush is pending; then the flush."""
    assert folio_trylock(folio)
    assert add_to_swap(k, folio)
    try_to_unmap(folio, TTU_BATCH_FLUSH)
    assert not folio.folio_mapped()
    meanwhile()
    try_to_unmap_flush()
    folio_unlock(folio)


@pytest.mark.parametrize("variant", ["no-pending-flush", "flush-pending"])
def test_madvise_after_a_batched_unmap(variant, cpu1):
    """3ea277194daa: reclaim cleared the PTE and has not flushed; madvise
    finds no present PTE.  Without flush_tlb_batched_pending cpu1 still
    writes the old page after madvise returned, and the store is lost."""
    k = pymm.Kernel(nodes=1, pages_per_node=64, variants={"tlb-batched-pending": variant})
    p = k.spawn()
    p.mmap(A, P, RW, ANON | MAP_FIXED)
    p.store(A, b"one")
    assert cpu1(lambda: p.load(A, 3)) == b"one"         # cpu1 caches the writable PTE
    pt = pte_offset(p.mm, A)
    folio = pt.ptes[pte_index(A)]

    def meanwhile():
        p.madvise(A, P, MADV_DONTNEED)
        cpu1(lambda: p.store(A, b"two"))
    k.run_syscall(_reclaim_racing, k, folio, meanwhile)
    assert cpu1(lambda: p.load(A, 3)) == (bytes(3) if variant == "no-pending-flush" else b"two")
    kinds = [f.kind for f in k.findings()]
    if variant == "no-pending-flush":
        assert kinds == ["data-corruption"], k.findings()
    else:
        assert kinds == [], k.findings()[0].text


def _stale_translation_during_reclaim(k, p, cpu1, monkeypatch, before_the_flush):
    """A clean page, cached by cpu1; reclaim unmaps it with its flush batched
    and takes it out of the swap cache; ``before_the_flush()`` runs before
    try_to_unmap_flush."""
    p.mmap(A, P, RW, ANON | MAP_FIXED)
    p.store(A, b"old")
    k.reclaim(1)                                        # written to swap
    assert p.load(A, 3) == b"old"                       # back: clean, in the swap cache
    assert cpu1(lambda: p.load(A, 3)) == b"old"         # cpu1 caches the translation
    real = vmscan.try_to_unmap_flush

    def flush():
        before_the_flush()
        real()
    monkeypatch.setattr(vmscan, "try_to_unmap_flush", flush)
    assert k.reclaim(1) == 1


@pytest.mark.parametrize("variant", ["no-pending-flush", "flush-pending"])
def test_stale_read_of_a_page_swapped_back_in(variant, cpu1, cpus, monkeypatch):
    """A false data corruption on the fixed variant (tlb-batch-flush, free
    mode under load): before reclaim's batched flush, another thread faults
    the page back in (a new folio from swap) and writes it, and cpu1 still
    reads the old folio through its TLB.  The kernel allows that until
    try_to_unmap_flush (72b252aed506 asks only that a write through a clean
    entry fault): not corruption, whatever the variant."""
    cpu2 = cpus("cpu2")
    k = pymm.Kernel(nodes=1, pages_per_node=64, variants={"tlb-batched-pending": variant})
    p = k.spawn()
    reads = []

    def before_the_flush():
        cpu2(lambda: p.store(A, b"new"))                # swap-in into a new folio, written
        reads.append(cpu1(lambda: p.load(A, 3)))        # the old folio, through cpu1's TLB
        reads.append(cpu2(lambda: p.load(A, 3)))         # the new one
    _stale_translation_during_reclaim(k, p, cpu1, monkeypatch, before_the_flush)
    assert reads == [b"old", b"new"]
    assert cpu1(lambda: p.load(A, 3)) == b"new"         # flushed
    assert k.findings() == [], k.findings()[0].text


@pytest.mark.parametrize("variant", ["no-pending-flush", "flush-pending"])
def test_stale_read_after_dontneed_is_still_caught(variant, cpu1, cpus, monkeypatch):
    """...but once MADV_DONTNEED has returned no CPU may read the old folio
    (3ea277194daa): on no-pending-flush cpu1 still does and it is reported;
    on flush-pending it reads zeros."""
    cpu2 = cpus("cpu2")
    k = pymm.Kernel(nodes=1, pages_per_node=64, variants={"tlb-batched-pending": variant})
    p = k.spawn()
    reads = []

    def before_the_flush():
        cpu2(lambda: p.madvise(A, P, MADV_DONTNEED))    # finds the swap entry: nothing to flush
        reads.append(cpu1(lambda: p.load(A, 3)))
    _stale_translation_during_reclaim(k, p, cpu1, monkeypatch, before_the_flush)
    if variant == "flush-pending":
        assert reads == [bytes(3)] and k.findings() == [], k.findings()[0].text
    else:
        assert reads == [b"old"]
        assert [f.kind for f in k.findings()] == ["data-corruption"]
        assert "expected 000000, found 6f6c64" in k.findings()[0].text


def test_stale_tlb_entry_to_a_freed_page_is_reported(cpu1, monkeypatch):
    """An injected bug: the gather frees the pages without flushing first."""
    k = pymm.Kernel(nodes=1, pages_per_node=64)
    p = k.spawn()
    p.mmap(A, 2 * P, RW, ANON | MAP_FIXED)
    p.store(A, b"x")
    cpu1(lambda: p.load(A, 1))
    monkeypatch.setattr(mmu_gather, "tlb_flush_mmu_tlbonly", lambda tlb: None)
    p.munmap(A, P)
    with pytest.raises(pymm.SegmentationFault):       # reported, then the access faults
        cpu1(lambda: p.load(A, 1))
    f = [f for f in k.findings() if f.kind == "use-after-free"]
    assert f and f[0].title == "BUG: KASAN: use-after-free through a stale TLB entry", k.findings()
    assert "Freed by task" in f[0].text and "tlb_batch_pages_flush" in f[0].text


def test_get_user_pages_fast(kernel):
    from pymm.mm.gup import get_user_pages_fast
    from pymm.mm.page_alloc import folio_put
    p = kernel.spawn()
    p.mmap(A, 4 * P, RW, ANON | MAP_FIXED)
    for i in range(2):
        p.store(A + i * P, b"page %d" % i)
    c = LockCounter(threading.get_ident())
    events.register(c)
    try:
        pages = get_user_pages_fast(p.mm, A, 2, True)          # present: lockless
        assert c.n == 0
    finally:
        events.unregister(c)
    pt = pte_offset(p.mm, A)
    assert pages == [pt.ptes[pte_index(A)], pt.ptes[pte_index(A + P)]]
    assert [f._refcount for f in pages] == [2, 2]
    for f in pages:
        folio_put(f, kernel)
    pages = get_user_pages_fast(p.mm, A, 4, True)              # two more fault in (slow path)
    assert len(pages) == 4 and all(f._refcount == 2 for f in pages)
    for f in pages:
        folio_put(f, kernel)
    p.munmap(A + 2 * P, 2 * P)
    assert len(get_user_pages_fast(p.mm, A + P, 3, False)) == 1  # stops at the hole
    with pytest.raises(OSError):
        get_user_pages_fast(p.mm, A + 2 * P, 1, False)


def test_gup_fast_holds_off_the_flush(kernel, cpu1):
    """Interrupts off: a zap's TLB flush (and so the freeing of the page)
    waits until gup_fast has its reference."""
    from pymm.mm.tlb import local_irq_disable, local_irq_enable, this_cpu
    p = kernel.spawn()
    p.mmap(A, P, RW, ANON | MAP_FIXED)
    p.store(A, b"x")
    cpu1(lambda: p.load(A, 1))                  # cpu1 in mm_cpumask
    cpu = cpu1(this_cpu)
    local_irq_disable(cpu)                      # as if cpu1 were inside gup_fast
    done = threading.Event()
    t = threading.Thread(target=lambda: (p.munmap(A, P), done.set()), daemon=True)
    t.start()
    assert not done.wait(0.5)                   # the flush IPI waits for cpu1
    local_irq_enable(cpu)
    assert done.wait(10)
    t.join(10)


def test_pvmw_lockless_peek_and_pvmw_sync(kernel):
    """page_vma_mapped_walk peeks without the ptl and skips a PTE that is
    transiently none under another thread's ptl; PVMW_SYNC (TTU_SYNC) waits
    for the ptl and finds the mapping."""
    from pymm.mm.rmap import PVMW_SYNC, page_vma_mapped_walk
    p = kernel.spawn()
    p.mmap(A, P, RW, ANON | MAP_FIXED)
    p.store(A, b"x")
    pt = pte_offset(p.mm, A)
    i = pte_index(A)
    folio = pt.ptes[i]
    with rcu_read():
        vma = p.mm.mm_mt.vma_lookup(A)
    held, release = threading.Event(), threading.Event()

    def replacing():                     # as a COW does: none for a moment, under the ptl
        pt.ptl.lock()
        pt.ptes[i] = None
        held.set()
        release.wait(10)
        pt.ptes[i] = folio
        pt.ptl.unlock()
    t = threading.Thread(target=replacing, daemon=True)
    t.start()
    assert held.wait(10)
    assert page_vma_mapped_walk(folio, vma, A) == (None, 0)          # the peek: no lock taken
    out = []

    def sync_walk():
        out.append(page_vma_mapped_walk(folio, vma, A, flags=PVMW_SYNC))
        if out[0][0] is not None:
            out[0][0].ptl.unlock()
    s = threading.Thread(target=sync_walk, daemon=True)
    s.start()
    release.set()
    s.join(10)
    t.join(10)
    assert out == [(pt, i)]
