"""lockdep's reclaim context (mm/gfp.py): the fs_reclaim map, might_alloc
at allocation sites, reclaim holding it, and the memalloc scopes."""
import pytest

from pymm import Kernel
from pymm.locking import Mutex, SpinLock, lockdep
from pymm.mm import gfp
from pymm.mm.gfp import (GFP_KERNEL, GFP_NOFS, GFP_NOWAIT, fs_reclaim_acquire, fs_reclaim_release,
                         memalloc_nofs_restore, memalloc_nofs_save, memalloc_noreclaim_restore,
                         memalloc_noreclaim_save, might_alloc)


@pytest.fixture(autouse=True)
def validator():
    Kernel(nodes=1, pages_per_node=8)        # a kernel switches the validator on
    lockdep.reset()
    lockdep.configure(raise_on_report=False)
    yield
    lockdep.reset()


def deps():
    return {(a, b) for a, b, _ in lockdep.dependencies()}


def kinds():
    return [r.kind for r in lockdep.reports()]


def test_an_allocation_under_a_lock_depends_on_fs_reclaim():
    m = Mutex("test_fsr_outer")
    m.lock()
    might_alloc(GFP_KERNEL)
    m.unlock()
    assert ("test_fsr_outer", "fs_reclaim") in deps()
    assert lockdep.held_locks() == []


def test_allocations_that_cannot_reclaim_record_nothing():
    m = Mutex("test_fsr_nowait")
    m.lock()
    might_alloc(GFP_NOWAIT)                  # no __GFP_DIRECT_RECLAIM
    might_alloc(GFP_NOFS)                    # no __GFP_FS: not the fs_reclaim map
    s = memalloc_nofs_save()
    might_alloc(GFP_KERNEL)                  # the NOFS scope strips __GFP_FS
    memalloc_nofs_restore(s)
    s = memalloc_noreclaim_save()
    might_alloc(GFP_KERNEL)                  # PF_MEMALLOC: reclaim itself
    memalloc_noreclaim_restore(s)
    m.unlock()
    assert not [d for d in deps() if d[0] == "test_fsr_nowait"]


def test_reclaim_taking_a_lock_held_across_an_allocation_is_a_cycle():
    m = Mutex("test_fsr_io")
    m.lock()
    might_alloc(GFP_KERNEL)                  # m -> fs_reclaim
    m.unlock()
    fs_reclaim_acquire(GFP_KERNEL)           # reclaim ...
    m.lock()                                 # ... waits for m: fs_reclaim -> m
    m.unlock()
    fs_reclaim_release(GFP_KERNEL)
    assert "lockdep" in kinds() or "circular" in " ".join(r.title for r in lockdep.reports())
    rep = lockdep.reports()[0]
    assert "fs_reclaim" in rep.text and "test_fsr_io" in rep.text


def test_a_blocking_allocation_under_a_spinlock_is_invalid_context():
    s = SpinLock("test_fsr_spin")
    s.lock()
    might_alloc(GFP_KERNEL)
    s.unlock()
    assert any("invalid context" in r.title for r in lockdep.reports()), lockdep.reports()


def test_scopes_nest_and_restore():
    a = memalloc_nofs_save()
    b = memalloc_nofs_save()
    assert gfp.current_gfp_context(GFP_KERNEL) == GFP_NOFS
    memalloc_nofs_restore(b)
    assert gfp.current_gfp_context(GFP_KERNEL) == GFP_NOFS
    memalloc_nofs_restore(a)
    assert gfp.current_gfp_context(GFP_KERNEL) == GFP_KERNEL


def test_direct_reclaim_holds_fs_reclaim_and_faults_record_it():
    from pymm import MAP_ANONYMOUS, MAP_PRIVATE, PAGE_SIZE, PROT_READ, PROT_WRITE
    k = Kernel(nodes=1, pages_per_node=64)
    lockdep.reset()
    p = k.spawn("a")
    a = p.mmap(0, 8 * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    for i in range(8):
        p.store(a + i * PAGE_SIZE, b"x")
    assert ("&mm->mmap_lock", "fs_reclaim") in deps()          # faults allocate under it
    assert k.reclaim(4) > 0
    assert ("fs_reclaim", "ptlock_ptr(ptdesc)") in deps()      # reclaim's unmap, under it
    assert ("fs_reclaim", "&lruvec->lru_lock") in deps()
    assert p.load(a, 1) == b"x"
    p.exit()
    assert lockdep.reports() == []
