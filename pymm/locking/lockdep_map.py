"""``struct lockdep_map`` without a lock: a lockdep class that code
"acquires" to tell the validator about a dependency that is not a lock
wait (``lock_map_acquire``/``lock_map_release``, ``STATIC_LOCKDEP_MAP_INIT``).
The kernel uses them for fs_reclaim, workqueue flushes, mmu notifiers.

Acquiring a map never blocks and never reaches the scheduler, lock_stat or
the hung-task watchdog: only lockdep sees it, through the same entry points
a lock's events use, so its dependencies, chains and reports are the same
as a lock's.  Any number of threads may hold one at once."""
import threading

from ._base import class_key
from . import lockdep


class _Depth(threading.local):
    n = 0                   # the calling thread's nesting (a class default: no AttributeError)


class LockdepMap:
    KIND = "lockdep_map"
    SLEEPING = True
    readers = None          # no read side (lockdep_report's kind printing)

    __slots__ = ("name", "key", "_depth", "__weakref__")

    def __init__(self, name):
        self.name = name
        self.key = class_key(name, self.KIND, self.SLEEPING)
        self._depth = _Depth()

    @property
    def owner(self):
        return threading.get_ident() if self.held_by_current() else None

    def held_by_current(self, read=None):
        return self._depth.n > 0

    def is_locked(self):
        return self.held_by_current()

    def holders(self):
        return [threading.get_ident()] if self.held_by_current() else []

    def __repr__(self):
        return f"<LockdepMap {self.name!r}>"


def lock_map_acquire(m):
    """``lock_map_acquire`` (exclusive): validated and pushed on the held
    stack like a lock; may raise a lockdep report like a lock acquire."""
    if lockdep.is_enabled():
        lockdep._acquire(m, 0, False, 0, None)
        lockdep._acquired(m, 0, False, 0, None)
    m._depth.n += 1


def lock_map_release(m):
    if lockdep.is_enabled():
        lockdep._release(m, 0)
    m._depth.n -= 1


def might_lock_read(lock):
    """``might_lock_read`` (CONFIG_PROVE_LOCKING): "this code may take
    ``lock`` for read here" -- validated as an acquire (dependencies, chains,
    reports) and released at once, without taking the lock.  ``might_fault``
    says it for mmap_lock, so that a copy_to_user under a lock is checked
    whether or not it faults this time."""
    if lockdep.is_enabled():
        lockdep._acquire(lock, 1, False, 0, None)
        lockdep._acquired(lock, 1, False, 0, None)
        lockdep._release(lock, 1)
