"""include/linux/mmap_lock.h: the mmap_lock wrapper API and its asserts.
mm code never touches ``mm.mmap_lock`` directly.  Also the per-VMA locks
(below)."""
import threading

from ..debug.report import report
from ..locking import RwSemaphore, lockdep
from .mm_types import FAULT_FLAG_VMA_LOCK


def mmap_read_lock(mm):
    mm.mmap_lock.down_read()


def mmap_read_trylock(mm):
    """Context: never blocks; returns True when the read lock was taken."""
    return mm.mmap_lock.down_read_trylock()


def mmap_read_unlock(mm):
    mm.mmap_lock.up_read()


def mmap_write_lock(mm):
    mm.mmap_lock.down_write()


def mmap_write_lock_nested(mm, subclass):
    mm.mmap_lock.down_write_nested(subclass)


def mmap_write_lock_killable(mm):
    """Returns 0 (pymm tasks are never killed while waiting)."""
    mm.mmap_lock.down_write()
    return 0


def mmap_write_trylock(mm):
    return mm.mmap_lock.down_write_trylock()


def mmap_write_unlock(mm):
    vma_end_write_all(mm)
    mm.mmap_lock.up_write()


def mmap_write_downgrade(mm):
    """Write -> read atomically (there is no upgrade).  The VMA write locks
    go with the write lock."""
    vma_end_write_all(mm)
    mm.mmap_lock.downgrade_write()


def mmap_assert_locked(mm):
    lockdep.lockdep_assert_held(mm.mmap_lock)


def mmap_assert_write_locked(mm):
    lockdep.lockdep_assert_held_write(mm.mmap_lock)


def mmap_lock_is_held(mm):
    """lockdep_is_held(&mm->mmap_lock); True when the validator is off (the
    holder bookkeeping it relies on is kept only while locks are watched)."""
    if not lockdep.is_enabled():
        return True
    return mm.mmap_lock.held_by_current()


# -- per-VMA locks (include/linux/mmap_lock.h, mm/mmap_lock.c; 6.4+) ----------------
#
# The problem: every page fault took mmap_lock for read, so one mmap/munmap
# (a writer) stalled every fault in the process, in every VMA.  The solution
# (Suren Baghdasaryan, 6.4): each VMA has its own lock; a fault looks its
# VMA up under RCU and read-locks just that VMA (lock_vma_under_rcu), and a
# writer that changes a VMA write-locks it (vma_start_write) under
# mmap_lock held for write.  The write lock is *not* released by a
# vma_end_write: vma_start_write records the mm's sequence number in the VMA
# (vm_lock_seq = mm->mm_lock_seq), and a reader that sees the two equal
# knows a writer owns the VMA.  mmap_write_unlock (and
# mmap_write_downgrade) increment mm_lock_seq, which releases the write
# locks of every VMA at once (vma_end_write_all).
#
# pymm follows the 6.4 .. 6.14 scheme: a per-VMA rw_semaphore that readers
# only ever *try* to take, plus the sequence numbers.  Since 6.15 mainline
# replaced the rwsem with a reference count (vm_refcnt) whose reader side is
# also a try-acquire and whose writer waits for readers to drain: the same
# behaviour, which is what pymm models.  The lock class carries the name
# lockdep gives today's lock ("vm_lock").
#
# CONFIG_PER_VMA_LOCK is the variant key ``per-vma-lock`` (on/off): with it
# off every function below is the kernel's !CONFIG_PER_VMA_LOCK stub.

_vm_lock_create = threading.Lock()      # pymm's own: creating a VMA's lock on first use


def _vma_lock(vma):
    """The VMA's lock, created on first use (pymm's own: 100,000-VMA address
    spaces must not pay for a lock object per VMA that nobody ever locks)."""
    lk = vma.vm_lock
    if lk is None:
        with _vm_lock_create:
            lk = vma.vm_lock
            if lk is None:
                vma.vm_lock = lk = RwSemaphore("vm_lock")
    return lk


def per_vma_lock_enabled(mm):
    return mm.kernel.variants["per-vma-lock"] == "on"


def vma_start_read(mm, vma):
    """Try to read-lock ``vma``; never blocks.  False when a writer owns it
    (its vm_lock_seq equals the mm's), when the trylock fails, or when the
    VMA now belongs to another mm (SLAB_TYPESAFE_BY_RCU: the object may have
    been freed and reused since the caller found it).
    Context: rcu_read_lock held (the caller found vma locklessly)."""
    if vma.vm_lock_seq == mm.mm_lock_seq:
        return False
    lk = _vma_lock(vma)
    if not lk.down_read_trylock():
        return False
    # Recheck under the lock: a writer may have locked it between our first
    # look and the trylock (it then waited for no one and left).
    if vma.vm_lock_seq == mm.mm_lock_seq or vma.vm_mm is not mm:
        lk.up_read()
        return False
    return True


def vma_end_read(vma):
    vma.vm_lock.up_read()


def __is_vma_write_locked(vma):
    mmap_assert_write_locked(vma.vm_mm)
    return vma.vm_lock_seq == vma.vm_mm.mm_lock_seq


def vma_start_write(vma):
    """Write-lock ``vma`` until mmap_write_unlock: wait for its readers to
    leave, then mark it ours.  Context: mmap_lock held for write."""
    mm = vma.vm_mm
    if mm.kernel.variants["per-vma-lock"] != "on":
        return
    if __is_vma_write_locked(vma):
        return
    # pymm's own shortcut: a VMA whose lock was never created has never had
    # a reader, and a reader creating it from now on rechecks vm_lock_seq
    # after its trylock -- so setting the sequence number is the whole write
    # lock.  (It spares the scheduler two lock events per VMA that nobody
    # ever faults under the per-VMA lock: hugetlb VMAs, fresh VMAs.)
    with _vm_lock_create:
        if vma.vm_lock is None:
            vma.vm_lock_seq = mm.mm_lock_seq
            return
    lk = vma.vm_lock
    lk.down_write()
    vma.vm_lock_seq = mm.mm_lock_seq
    lk.up_write()


def vma_assert_write_locked(vma):
    """VM_BUG_ON_VMA(!__is_vma_write_locked(vma)): a VMA changed without
    vma_start_write, so a per-VMA-lock fault could see it half-changed."""
    mm = vma.vm_mm
    if mm.kernel.variants["per-vma-lock"] != "on":
        return
    if vma.vm_lock_seq != mm.mm_lock_seq:
        report("assertion", "BUG: VMA not write-locked (vma_assert_write_locked)",
               f"vma_assert_write_locked({vma!r}): the VMA is modified without vma_start_write(); "
               f"a page fault under the per-VMA lock may run concurrently.")


def vma_assert_locked(vma):
    """The caller holds the VMA's read lock or owns it for write.  Not
    checkable with the validator off (readers are tracked only while locks
    are watched, as mmap_lock_is_held says)."""
    if not lockdep.is_enabled():
        return
    lk = vma.vm_lock
    if lk is not None and lk.held_by_current():
        return
    vma_assert_write_locked(vma)


def vma_mark_detached(vma, detached):
    """The VMA leaves (True) or enters (False) the VMA tree.  Leaving needs
    the write lock: a reader that locked it before must not find it gone."""
    if detached:
        vma_assert_write_locked(vma)
    vma.detached = detached


def vma_end_write_all(mm):
    """Release every VMA write lock of the mm at once.  Context: mmap_lock
    held for write (called as it is released or downgraded)."""
    mm.mm_lock_seq += 1


def release_fault_lock(vmf):
    """Drop the lock the fault runs under (include/linux/mm.h
    release_fault_lock; here, below filemap and shmem, which drop it too): the VMA's read lock for a per-VMA-lock fault,
    otherwise mmap_lock for read.  For a fault that waits and retries."""
    if vmf.flags & FAULT_FLAG_VMA_LOCK:
        vma_end_read(vmf.vma)
    else:
        mmap_read_unlock(vmf.vma.vm_mm)
