"""RCU read-side sections, as far as pymm needs them: a per-thread nesting
depth that lookups check (``rcu_read_lock_held``) so that a VMA-tree walk with
neither mmap_lock nor an RCU read section is reported as "suspicious RCU
usage".  Grace periods are not modelled: pymm frees objects immediately and
lets KASAN catch readers that relied on a grace period they did not have."""
import threading
from .errors import LockUsageError

class _Tls(threading.local):
    depth = 0           # the class default: no exception raised for a thread's first look


_tls = _Tls()


def rcu_read_lock():
    _tls.depth += 1


def rcu_read_unlock():
    d = _tls.depth
    if d <= 0:
        raise LockUsageError("rcu_read_unlock() without rcu_read_lock()")
    _tls.depth = d - 1


def rcu_read_lock_held():
    return _tls.depth > 0


class rcu_read:
    """``with rcu_read():`` -- a read-side critical section."""

    def __enter__(self):
        rcu_read_lock()

    def __exit__(self, *exc):
        rcu_read_unlock()
