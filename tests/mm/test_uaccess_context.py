"""A fault taken by kernel code (copy_to_user with a kernel lock held)
returns to that code, not to user space: no 'lock held when returning to
user space' report for the caller's own lock."""
import pymm
from pymm.locking import Mutex, lockdep


def test_copy_to_user_under_a_lock_is_not_a_return_to_user_space():
    lockdep.reset()
    k = pymm.Kernel(nodes=1, pages_per_node=64)
    p = k.spawn("drv")
    buf = p.mmap(0, pymm.PAGE_SIZE, pymm.PROT_READ | pymm.PROT_WRITE,
                 pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS)
    lock = Mutex("&drv->lock")
    lock.lock()
    p.store(buf, b"result")              # faults: the page is not there yet
    lock.unlock()
    assert p.load(buf, 6) == b"result"
    assert [r.title for r in lockdep.reports()] == []
    assert k.findings() == []


def test_copy_to_user_under_a_lock_is_checked_against_mmap_lock_without_faulting():
    """might_fault: a copy_to_user under a driver lock tells lockdep it may
    take mmap_lock, also when the page is present (no fault) or a per-VMA
    lock would serve the fault.  The mmap side (mmap_lock, then the driver
    lock) then closes the cycle -- the tutorial's frob bug, which free mode
    stopped seeing once faults went under per-VMA locks."""
    from pymm.mm.mmap_lock import mmap_write_lock, mmap_write_unlock
    lockdep.reset()
    k = pymm.Kernel(nodes=1, pages_per_node=64)
    p = k.spawn("drv")
    buf = p.mmap(0, pymm.PAGE_SIZE, pymm.PROT_READ | pymm.PROT_WRITE,
                 pymm.MAP_PRIVATE | pymm.MAP_ANONYMOUS)
    p.store(buf, b"x")                   # present and dirty: the next store takes no lock
    lock = Mutex("&drv2->lock")
    lock.lock()
    p.store(buf, b"result")              # copy_to_user under the driver lock, no fault
    lock.unlock()
    assert lockdep.reports() == []
    mmap_write_lock(p.mm)                # the driver's mmap handler
    lock.lock()
    lock.unlock()
    mmap_write_unlock(p.mm)
    assert [r.title for r in lockdep.reports()] == \
        ["WARNING: possible circular locking dependency detected"]
    # a user-mode store (no kernel lock held) says nothing to lockdep
    lockdep.reset()
    p.store(buf, b"user")
    assert lockdep.dependencies() == [] or all("mmap_lock" not in d[1] for d in lockdep.dependencies())
