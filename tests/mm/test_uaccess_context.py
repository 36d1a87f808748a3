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
