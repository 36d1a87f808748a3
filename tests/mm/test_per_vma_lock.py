"""Per-VMA locks (6.4+): faults under the VMA's own lock, mmap_write_unlock
releasing every VMA write lock, the fall-backs to mmap_lock, and lockless
finders that must revalidate what they found (SLAB_TYPESAFE_BY_RCU)."""
import threading

import pytest

import pymm
from pymm import MAP_ANONYMOUS, MAP_POPULATE, MAP_PRIVATE, PAGE_SIZE as P, PROT_READ, PROT_WRITE
from pymm.mm.memory import (FAULT_FLAG_VMA_LOCK, FAULT_FLAG_WRITE, VM_FAULT_RETRY, handle_mm_fault,
                            lock_vma_under_rcu)
from pymm.mm.mmap_lock import (mmap_read_lock, mmap_read_unlock, mmap_write_lock, mmap_write_unlock,
                               vma_end_read, vma_start_write)
from pymm.rcu import rcu_read_lock, rcu_read_unlock

RW = PROT_READ | PROT_WRITE


def _in_thread(fn):
    """Run fn in another thread, wait for it, return its result (or raise)."""
    out = {}

    def run():
        try:
            out["r"] = fn()
        except BaseException as e:          # noqa: BLE001 -- re-raised below
            out["e"] = e
    t = threading.Thread(target=run)
    t.start()
    t.join(30)
    assert not t.is_alive(), "the other thread is stuck"
    if "e" in out:
        raise out["e"]
    return out["r"]


def test_fault_does_not_wait_for_a_writer_of_the_mm(kernel):
    """While mmap_lock is held for write (and no VMA is write-locked), a page
    fault in another thread goes through under the VMA's lock alone."""
    p = kernel.spawn("a")
    a = p.mmap(0, 4 * P, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    p.store(a, b"first")                        # the VMA gets its anon_vma
    mmap_write_lock(p.mm)
    try:
        _in_thread(lambda: p.store(a + P, b"second"))     # a fault, not waiting for us
        assert _in_thread(lambda: p.load(a + P, 6)) == b"second"
    finally:
        mmap_write_unlock(p.mm)


def test_write_locked_vma_refuses_readers_until_mmap_write_unlock(kernel):
    p = kernel.spawn("a")
    a = p.mmap(0, 2 * P, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE)
    b = p.mmap(0, 2 * P, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE)   # not merged
    mm = p.mm
    mmap_write_lock(mm)
    va = mm.mm_mt.vma_lookup(a)
    vma_start_write(va)
    assert _in_thread(lambda: lock_vma_under_rcu(mm, a)) is None      # owned by the writer

    def other_vma():
        vb = lock_vma_under_rcu(mm, b)
        if vb is not None:
            vma_end_read(vb)
        return vb
    vb = _in_thread(other_vma)                                        # another VMA: fine
    assert vb is not None and vb.vm_start <= b < vb.vm_end
    mmap_write_unlock(mm)                        # every VMA write lock goes at once
    v = lock_vma_under_rcu(mm, a)
    assert v is va
    vma_end_read(v)


def test_no_anon_vma_and_busy_mmap_lock_retries_under_mmap_lock(kernel):
    """vmf_anon_prepare: the first anonymous page of a VMA needs mmap_lock;
    if it cannot be had at once, the VMA lock is dropped and VM_FAULT_RETRY
    sends the fault to the mmap_lock path."""
    p = kernel.spawn("a")
    a = p.mmap(0, P, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    mm = p.mm

    def fault():
        v = lock_vma_under_rcu(mm, a)
        assert v is not None and v.anon_vma is None
        ret = handle_mm_fault(v, a, FAULT_FLAG_WRITE | FAULT_FLAG_VMA_LOCK)
        return v, ret
    mmap_write_lock(mm)
    try:
        v, ret = _in_thread(fault)
    finally:
        mmap_write_unlock(mm)
    assert ret & VM_FAULT_RETRY
    assert not v.vm_lock.is_locked()             # the fault released the VMA lock
    p.store(a, b"x")                             # and the retry under mmap_lock works
    assert p.mm.mm_mt.lookup_unchecked(a).anon_vma is not None


def test_lockless_finder_must_revalidate(kernel):
    """A VMA found under RCU may be freed before it is used: inside the RCU
    section it may still be read (SLAB_TYPESAFE_BY_RCU), lock_vma_under_rcu
    turns it down (detached), and a finder that kept it past
    rcu_read_unlock without locking it is reported."""
    p = kernel.spawn("a")
    a = p.mmap(0, P, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE)
    mm = p.mm
    rcu_read_lock()
    v = mm.mm_mt.lookup_rcu(a)
    p.munmap(a, P)                               # freed under the finder
    assert v.vm_start == a                       # still readable inside the RCU section
    rcu_read_unlock()
    assert lock_vma_under_rcu(mm, a) is None     # the proper finder gives up
    assert kernel.findings() == []
    v.vm_start                                   # noqa: B018 -- the unrevalidated use
    f = kernel.findings()
    assert [x.kind for x in f] == ["use-after-free"]
    assert "vm_area_struct" in f[0].text
    kernel.clear_findings()


def test_lockdep_class_is_vm_lock(kernel):
    p = kernel.spawn("a")
    a = p.mmap(0, P, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE)
    v = lock_vma_under_rcu(p.mm, a)
    assert v.vm_lock.name == "vm_lock"
    vma_end_read(v)


def test_per_vma_lock_off_faults_under_mmap_lock():
    k = pymm.Kernel(variants={"per-vma-lock": "off"})
    p = k.spawn("a")
    a = p.mmap(0, P, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    p.store(a, b"x")
    v = p.mm.mm_mt.lookup_unchecked(a)
    assert v.vm_lock is None                     # never created: no per-VMA locking at all
    mmap_read_lock(p.mm)
    mmap_read_unlock(p.mm)
    assert k.findings() == []


@pytest.mark.parametrize("value", ["off", "on"])
def test_both_values_run_the_smoke_workload(value):
    k = pymm.Kernel(variants={"per-vma-lock": value})
    p = k.spawn("a")
    a = p.mmap(0, 8 * P, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    for i in range(8):
        p.store(a + i * P, b"%d" % i)
    c = p.fork()
    c.store(a, b"child")
    assert p.load(a, 1) == b"0" and c.load(a, 5) == b"child"
    p.mprotect(a, 4 * P, PROT_READ)
    p.munmap(a + 2 * P, 2 * P)
    c.exit()
    p.exit()
    assert k.check() == [] and k.findings() == []


def test_fault_under_the_vma_lock_with_the_validator_off():
    """Readers are tracked only while locks are watched: vma_assert_locked
    must not report a fault under the VMA lock when the validator is off
    (pymm bench's validator-off fault row did)."""
    from pymm.locking import lockdep
    k = pymm.Kernel()
    p = k.spawn("a")
    a = p.mmap(0, 4 * P, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    p.store(a, b"x")
    lockdep.disable()
    try:
        for i in range(1, 4):
            p.store(a + i * P, b"y")
    finally:
        lockdep.enable()
    assert k.findings() == []


def test_shmem_fault_that_waits_for_the_folio_releases_the_vma_lock():
    """shmem_fault finding its folio locked drops the lock the fault runs
    under before it waits (release_fault_lock): the VMA's read lock for a
    per-VMA-lock fault, not mmap_lock (which it does not hold: unlocking it
    was a 'bad unlock balance', found by the fuzz scenario)."""
    from pymm import MAP_SHARED, MADV_DONTNEED
    from pymm.mm.filemap import filemap_get_folio, folio_lock, folio_unlock
    from pymm.sched import explore, point

    def setup():
        k = pymm.Kernel(variants={"per-vma-lock": "on"})
        p = k.spawn("a")
        a = p.mmap(0, P, RW, MAP_SHARED | MAP_ANONYMOUS)
        p.store(a, b"shared")
        p.madvise(a, P, MADV_DONTNEED)           # still in the page cache, no longer mapped
        mmap_read_lock(p.mm)
        mapping = p.mm.mm_mt.vma_lookup(a).vm_file.mapping
        mmap_read_unlock(p.mm)
        return k, p, a, filemap_get_folio(mapping, 0)

    def locker(st):
        folio = st[3]
        folio_lock(folio)
        point("folio locked")
        folio_unlock(folio)

    def reader(st):
        k, p, a, _ = st
        assert p.load(a, 6) == b"shared"

    def check(st):
        assert st[0].findings() == []

    res = explore(setup, [locker, reader], check, strategy="random", seed=0, max_schedules=60)
    assert res.failure is None, res.failure.message


def test_swap_in_that_waits_for_the_folio_releases_the_vma_lock():
    """do_swap_page finding the swap-cache folio locked releases the fault's
    lock before it waits (folio_lock_or_retry): a fault that slept on the
    folio lock holding the VMA's read lock would deadlock against a writer
    that holds the folio lock and write-locks the VMA (vma_start_write
    waits for its readers)."""
    from pymm.mm.filemap import folio_lock, folio_unlock
    from pymm.mm.pgtable import pte_index, pte_offset
    from pymm.sched import explore, point

    def setup():
        k = pymm.Kernel(variants={"per-vma-lock": "on"})
        p = k.spawn("a")
        a = p.mmap(0, P, RW, MAP_PRIVATE | MAP_ANONYMOUS)
        p.store(a, b"swapped")
        c = p.fork()
        k.reclaim(64)                            # out to swap, from both
        assert c.load(a, 7) == b"swapped"        # back in the swap cache; p's PTE still a swap entry
        folio = pte_offset(c.mm, a).ptes[pte_index(a)]
        return k, p, c, a, folio

    def locker(st):
        k, p, c, a, folio = st
        folio_lock(folio)
        point("folio locked")
        mmap_write_lock(p.mm)
        vma_start_write(p.mm.mm_mt.vma_lookup(a))
        mmap_write_unlock(p.mm)
        folio_unlock(folio)

    def reader(st):
        k, p, c, a, _ = st
        assert p.load(a, 7) == b"swapped"

    def check(st):
        st[2].exit()
        st[1].exit()
        assert st[0].findings() == []

    res = explore(setup, [locker, reader], check, strategy="random", seed=0, max_schedules=60)
    assert res.failure is None, res.failure.message
